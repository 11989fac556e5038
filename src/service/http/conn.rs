//! One connection: HTTP/2 when it opens with the h2 preface (h2c by prior knowledge, or h2
//! chosen by ALPN under TLS), else HTTP/1.1, each served by its own hyper builder; and the
//! deadline each HTTP/1 request head is read under.
//!
//! hyper-util's auto builder does the same detection, but its connection future holds the
//! HTTP/1 and the HTTP/2 connection state side by side, inline in every connection's task
//! (10.5 KB a task, measured with heaptrack over 3,000 idle connections). Here the task holds
//! the preface's 24 bytes until the client speaks, then one boxed connection of the protocol
//! it spoke.

use std::future::Future;
use std::io;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{mapped, HeadLimits};
use crate::engine::WaitDeadline;
use crate::net::splice::SpliceWrite;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The two hyper builders a server's connections are served with, made once.
#[derive(Debug, Clone)]
pub(super) struct Builders {
    pub(super) h1: http1::Builder,
    pub(super) h2: http2::Builder<TokioExecutor>,
}

impl Builders {
    /// Builders with `limits`, as hyper-util's auto builder gets them in
    /// [`super::connection_builder`].
    pub(super) fn new(limits: HeadLimits) -> Builders {
        let mut h1 = http1::Builder::new();
        // A client may shut its sending side once its request is out (`nc -N`, `curl
        // --http1.1` over a half-closed pipe) and still get the answer, as from nginx. It
        // also spares hyper a read for the end of the stream while each request is in
        // flight, which, with the request still holding its head's bytes, copied hyper's
        // 8 KiB read buffer into a new one every time (profiled: 3% of a small file's CPU).
        // The head deadline is ours ([`HeadDeadline`]): hyper's made, registered and dropped a
        // boxed timer for every request (profiled at 1.4% of a small file's CPU).
        h1.half_close(true)
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(limits.max_headers);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Builders { h1, h2 }
    }
}

/// How long an HTTP/1 connection waits for its next request with hyper's state kept before
/// it parks: hyper's connection (its 8 KiB read buffer and 8 KiB head buffer among it) is
/// dropped, and the connection waits for the client's next bytes in a 24-byte buffer of its
/// own, as nginx frees a keep-alive connection's buffers between requests. A client whose
/// next request comes sooner (a page's assets, a load generator on small files) never parks;
/// one that comes later parks and is served again, a few system calls more per request (a
/// load generator taking 1 MiB responses on 64 connections, 16 ms apart each, parks on
/// every one, with no loss of requests per second measured: docs/benchmarks.md).
pub const PARK_AFTER: Duration = Duration::from_millis(10);

/// The time a client gets to send a whole HTTP/1 request head, counted from the connection's
/// start and, on a kept-alive connection, from the head's first bytes, and before those the
/// keep-alive time from the end of the last response: a slowloris sending a byte a second is
/// closed at it, an idle connection at the keep-alive time. Kept on the engine's idle timer ([`WaitDeadline`]), checked only while the
/// connection waits: per request, a few stores and a clock read.
///
/// It also tells when the connection may park ([`PARK_AFTER`]): once a response is done, the
/// wait deadline is first set [`PARK_AFTER`] ahead, and the [`Parkable`] stream below hyper
/// turns that deadline's `TimedOut` into a request to park, which [`drive_h1`] acts on.
#[derive(Debug, Clone)]
pub(super) struct HeadDeadline(Arc<Rest>);

#[derive(Debug)]
struct Rest {
    deadline: WaitDeadline,
    /// The time to send a head, from its first bytes (a connection's first: from its start).
    limit: Duration,
    /// The time to begin the next request after a response.
    keep_alive: Duration,
    /// What `head_at` counts from.
    base: Instant,
    /// The next head's deadline, in nanoseconds after `base`, while `state` is `RESTING`.
    head_at: AtomicU64,
    state: AtomicU8,
    /// Whether all hyper wrote has been flushed (nothing of a response is left in its
    /// buffer, which parking would drop).
    flushed: AtomicBool,
}

/// Waiting for a head under its deadline.
const HEAD: u8 = 0;
/// A request is being served: no deadline.
const BUSY: u8 = 1;
/// A response is done; the wait deadline is the time to park.
const RESTING: u8 = 2;
/// The time to park came: the driver is to park the connection (or, with a response still
/// unflushed, put the head deadline back).
const PARKING: u8 = 3;
/// The driver asked hyper to finish so as to park: its shutdown of the stream is a no-op.
const PARKED: u8 = 4;

impl HeadDeadline {
    /// Starts the first head's deadline on `deadline`: `limit` from now, or, on a parked
    /// connection served again, the keep-alive deadline already set there (its head then
    /// gets `limit` once it has [`begun`](HeadDeadline::begun)). `keep_alive` is the time a
    /// client gets after each response to begin its next request.
    pub(super) fn start(
        deadline: WaitDeadline,
        limit: Duration,
        keep_alive: Duration,
    ) -> HeadDeadline {
        let at = deadline.get().unwrap_or_else(|| Instant::now() + limit);
        let head = HeadDeadline(Arc::new(Rest {
            deadline,
            limit,
            keep_alive,
            base: Instant::now(),
            head_at: AtomicU64::new(0),
            state: AtomicU8::new(HEAD),
            flushed: AtomicBool::new(true),
        }));
        head.wait_for_head(at);
        head
    }

    /// A request head is in: its request and response are not under this deadline.
    pub(super) fn head_read(&self) {
        self.0.state.store(BUSY, Ordering::Relaxed);
        self.0.deadline.clear();
    }

    /// A response is done with: the keep-alive time for the next request starts, and the
    /// time to park.
    pub(super) fn restart(&self) {
        let now = Instant::now();
        let head_at = now + self.0.keep_alive;
        self.set_head_at(head_at);
        self.rest(now, head_at);
    }

    /// The next head's first bytes are in, after a keep-alive wait: the rest of it has the
    /// head's time from now.
    pub(super) fn begun(&self) {
        let head_at = Instant::now() + self.0.limit;
        self.set_head_at(head_at);
        self.wait_for_head(head_at);
    }

    fn set_head_at(&self, head_at: Instant) {
        let nanos = head_at.saturating_duration_since(self.0.base).as_nanos();
        self.0
            .head_at
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Resting from `now`: the time to park is [`PARK_AFTER`] ahead, unless the next head's
    /// deadline, `head_at`, comes first.
    fn rest(&self, now: Instant, head_at: Instant) {
        self.0.state.store(RESTING, Ordering::Relaxed);
        self.0.deadline.set((now + PARK_AFTER).min(head_at));
    }

    /// Waiting for a head whose deadline is `at`, not to park.
    fn wait_for_head(&self, at: Instant) {
        self.0.state.store(HEAD, Ordering::Relaxed);
        self.0.deadline.set(at);
    }

    /// The deadline [`HeadDeadline::restart`] set for the next head.
    pub(super) fn head_at(&self) -> Instant {
        let nanos = self.0.head_at.load(Ordering::Relaxed);
        self.0.base + Duration::from_nanos(nanos)
    }

    /// Whether the time to park has come (and this is the one call told so).
    fn take_parking(&self) -> bool {
        let state = &self.0.state;
        state.load(Ordering::Relaxed) == PARKING
            && state
                .compare_exchange(PARKING, HEAD, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn state(&self) -> u8 {
        self.0.state.load(Ordering::Relaxed)
    }
}

/// The stream hyper serves HTTP/1 on: the connection's own, plus what parking needs. A wait
/// that meets the time to park is told to the driver rather than failed, and once the driver
/// has asked hyper to finish for parking, hyper's shutdown leaves the stream open.
#[derive(Debug)]
pub(super) struct Parkable<I> {
    io: I,
    head: HeadDeadline,
    /// Whether the stream is corked for a kept file's body.
    corked: bool,
}

impl<I> Parkable<I> {
    pub(super) fn new(io: I, head: HeadDeadline) -> Parkable<I> {
        Parkable {
            io,
            head,
            corked: false,
        }
    }

    pub(super) fn into_inner(self) -> I {
        self.io
    }

    /// `res`, unless it is the time to park passing while the connection rests: then the
    /// driver is told (the task is woken to hear it) and the wait goes on. A read and a
    /// write may both meet it in one poll of hyper's.
    fn rested<T>(&self, cx: &mut Context<'_>, res: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &res {
            let state = &self.head.0.state;
            let resting = matches!(state.load(Ordering::Relaxed), RESTING | PARKING);
            if e.kind() == io::ErrorKind::TimedOut && resting {
                state.store(PARKING, Ordering::Relaxed);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        res
    }

    fn wrote<T>(&self, res: &Poll<io::Result<T>>) {
        if !matches!(res, Poll::Ready(Err(_))) {
            self.head.0.flushed.store(false, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Parkable<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        self.rested(cx, res)
    }
}

impl<I: AsyncWrite + SpliceWrite + Unpin> AsyncWrite for Parkable<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&res);
        self.rested(cx, res)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = match self.io.can_splice().then(|| mapped_at(bufs)).flatten() {
            // A kept file's bytes, first in line: sent from its memory file.
            Some((0, file, offset)) => {
                let len = bufs[0].len();
                self.io.poll_send_file(cx, file, offset, len)
            }
            // What comes before them (the response's head), held for them to carry: corked
            // until the response is flushed.
            Some((i, ..)) => {
                if !self.corked {
                    self.corked = self.io.set_cork(true).is_ok();
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &bufs[..i])
            }
            None => Pin::new(&mut self.io).poll_write_vectored(cx, bufs),
        };
        self.wrote(&res);
        self.rested(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes once a response is all written: what was held goes now.
        if std::mem::take(&mut self.corked) {
            let _ = self.io.set_cork(false);
        }
        let res = Pin::new(&mut self.io).poll_flush(cx);
        // hyper flushes the stream only once its own buffer is empty.
        if let Poll::Ready(Ok(())) = res {
            self.head.0.flushed.store(true, Ordering::Relaxed);
        }
        self.rested(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.head.state() == PARKED {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The first of `bufs` that is a large slice of a kept file's memory file
/// ([`mapped::find`]): its index, that file, and the slice's offset in it.
fn mapped_at<'a>(bufs: &'a [io::IoSlice<'a>]) -> Option<(usize, BorrowedFd<'a>, u64)> {
    bufs.iter().enumerate().find_map(|(i, buf)| {
        if buf.len() < mapped::MIN_MAPPED_BYTES {
            return None;
        }
        mapped::find(buf).map(|(file, offset)| (i, file, offset))
    })
}

/// An HTTP/1 connection of hyper's, plain or with upgrades.
pub(super) trait H1Conn: Future<Output = hyper::Result<()>> {
    type Io;
    /// Asks the connection to finish its in-flight request and end.
    fn graceful(self: Pin<&mut Self>);
    /// The stream and what hyper had read of it but not used, once the connection has
    /// ended (none after an upgrade).
    fn into_io(self) -> Option<(Self::Io, Bytes)>;
}

impl<I, S, B> H1Conn for http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Io = I;
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
    fn into_io(self) -> Option<(I, Bytes)> {
        let parts = self.into_parts();
        Some((parts.io, parts.read_buf))
    }
}

impl<I, S, B> H1Conn for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Io = I;
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
    fn into_io(self) -> Option<(I, Bytes)> {
        self.into_parts().map(|parts| (parts.io, parts.read_buf))
    }
}

/// How an HTTP/1 connection's run under [`drive_h1`] ended.
pub(super) enum Driven<Io> {
    /// The connection is done: closed by either side, failed, or upgraded.
    Done(io::Result<()>),
    /// hyper finished at the time to park: its stream, and the bytes it had read but not
    /// used (a pipelined request's start), to serve again.
    Parked(Io, Bytes),
}

/// Runs an HTTP/1 connection until it ends or parks; when `shutdown` fires first, asks it
/// to finish its in-flight request and waits for that.
pub(super) async fn drive_h1<C: H1Conn + Unpin>(
    mut conn: Pin<Box<C>>,
    shutdown: &CancellationToken,
    head: &HeadDeadline,
) -> Driven<C::Io> {
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut finishing = false;
    let res = std::future::poll_fn(|cx| {
        if !finishing && cancelled.as_mut().poll(cx).is_ready() {
            finishing = true;
            conn.as_mut().graceful();
        }
        loop {
            if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                return Poll::Ready(res);
            }
            if !head.take_parking() {
                return Poll::Pending;
            }
            let head_at = head.head_at();
            if finishing || Instant::now() >= head_at {
                // No parking when hyper is ending anyway (at shutdown), nor past the head
                // deadline: the waits go on under it (they fail once it has passed, and the
                // connection closes). Left at the time to park, they would meet it again at
                // once, and spin.
                head.wait_for_head(head_at);
                return Poll::Pending;
            }
            if head.0.flushed.load(Ordering::Relaxed) {
                // hyper is between requests (the deadline is set only once a response is
                // done, and cleared when a head is read): it ends at once, without a word,
                // and gives back the stream.
                head.0.state.store(PARKED, Ordering::Relaxed);
                finishing = true;
                conn.as_mut().graceful();
            } else {
                // The client is still taking the last response: parking would drop its
                // rest from hyper's buffer. Try again in a while.
                head.rest(Instant::now(), head_at);
                return Poll::Pending;
            }
        }
    })
    .await;
    if head.state() != PARKED || res.is_err() {
        return Driven::Done(res.map_err(io::Error::other));
    }
    // Parked, the wait for the next head goes on under its deadline.
    head.wait_for_head(head.head_at());
    match Pin::into_inner(conn).into_io() {
        Some((io, unread)) => Driven::Parked(io, unread),
        None => Driven::Done(Ok(())),
    }
}

/// The first bytes of a connection, read to tell HTTP/2 from HTTP/1.
#[derive(Debug, Default)]
pub(super) struct Opening {
    bytes: [u8; H2_PREFACE.len()],
    len: usize,
}

impl Opening {
    /// Reads until the bytes read differ from the h2 preface or complete it; fewer only at
    /// end of stream (none: the client left without a word).
    ///
    /// # Cancel safety
    /// Not cancel safe: bytes read before a cancel are lost with the future.
    pub(super) async fn read<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Opening> {
        let mut opening = Opening::default();
        while opening.len < H2_PREFACE.len() {
            let n = io.read(&mut opening.bytes[opening.len..]).await?;
            if n == 0 {
                break;
            }
            opening.len += n;
            if opening.bytes[..opening.len] != H2_PREFACE[..opening.len] {
                break;
            }
        }
        Ok(opening)
    }

    /// The opening of a connection or of a parked one's next request, read under the head
    /// deadline; none when the client leaves without a word, its deadline passes, or
    /// `shutdown` fires first.
    ///
    /// # Cancel safety
    /// Not cancel safe, as [`Opening::read`].
    pub(super) async fn next<I: AsyncRead + Unpin>(
        io: &mut I,
        shutdown: &CancellationToken,
    ) -> io::Result<Option<Opening>> {
        tokio::select! {
            opening = Opening::read(io) => match opening {
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(None),
                Ok(opening) if opening.is_empty() => Ok(None),
                opening => opening.map(Some),
            },
            () = shutdown.cancelled() => Ok(None),
        }
    }

    /// Whether the client said nothing at all.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the connection opened with the whole h2 preface.
    pub(super) fn is_h2(&self) -> bool {
        self.bytes[..self.len] == H2_PREFACE[..]
    }

    /// `io` with these bytes put back in front of it.
    pub(super) fn rewind<I>(self, io: I) -> Rewound<I> {
        Rewound::new(Bytes::copy_from_slice(&self.bytes[..self.len]), io)
    }
}

/// A stream whose first bytes, already read, are read again.
#[derive(Debug)]
pub(super) struct Rewound<I> {
    /// What is yet to be read again.
    prefix: Bytes,
    io: I,
}

impl<I> Rewound<I> {
    /// `io` with `prefix` read first.
    pub(super) fn new(prefix: Bytes, io: I) -> Rewound<I> {
        Rewound { prefix, io }
    }

    /// What was not read again, and the stream.
    pub(super) fn into_parts(self) -> (Bytes, I) {
        (self.prefix, self.io)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewound<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        // The rest of what the client sent in the same read: hyper handed with the opening
        // alone reads again with less than its 8 KiB free, which doubles its read buffer to
        // 16 KiB for the connection's life (heaptrack). Nothing more yet is fine; an error
        // is left for the next read to meet (the stream is then closed or at its end).
        if this.prefix.is_empty() && buf.remaining() > 0 {
            let _ = Pin::new(&mut this.io).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: SpliceWrite> SpliceWrite for Rewound<I> {
    fn can_splice(&self) -> bool {
        self.io.can_splice()
    }

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        self.io.poll_send_file(cx, file, offset, len)
    }

    fn set_cork(&mut self, on: bool) -> io::Result<()> {
        self.io.set_cork(on)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewound<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Runs a hyper connection until it ends; when `shutdown` fires first, asks it to finish
/// its in-flight requests (`graceful`) and waits for that.
pub(super) async fn drive<C>(
    mut conn: Pin<Box<C>>,
    shutdown: &CancellationToken,
    graceful: impl FnOnce(Pin<&mut C>),
) -> io::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::select! {
        res = conn.as_mut() => return res.map_err(io::Error::other),
        () = shutdown.cancelled() => graceful(conn.as_mut()),
    }
    conn.await.map_err(io::Error::other)
}

/// A parked connection's stream, and what had been read of it but not yet served: what
/// hyper had read, then anything the stream had not yet handed it. Copied, so hyper's read
/// buffer (an empty `unread` still holds all 8 KiB of it) goes with its connection.
pub(super) fn unpark<I>(parked: TokioIo<Parkable<Rewound<I>>>, unread: Bytes) -> (Bytes, I) {
    let (rest, stream) = parked.into_inner().into_inner().into_parts();
    let prefix = [&unread[..], &rest[..]].concat();
    (prefix.into(), stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Sends `sent` through a pipe that carries 5 bytes at a time; returns whether the
    /// opening was h2 and everything read after rewinding.
    async fn split_opening(sent: &[u8]) -> (bool, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(5);
        let sent = sent.to_vec();
        let writer = tokio::spawn(async move { client.write_all(&sent).await.unwrap() });
        let opening = Opening::read(&mut server).await.unwrap();
        let h2 = opening.is_h2();
        let mut again = Vec::new();
        opening
            .rewind(server)
            .read_to_end(&mut again)
            .await
            .unwrap();
        writer.await.unwrap();
        (h2, again)
    }

    #[tokio::test]
    async fn an_http1_request_is_read_again_whole() {
        let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(split_opening(request).await, (false, request.to_vec()));
    }

    #[tokio::test]
    async fn the_h2_preface_is_told_apart_when_split() {
        let mut sent = H2_PREFACE.to_vec();
        sent.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        assert_eq!(split_opening(&sent).await, (true, sent.clone()));
        // The preface's first bytes and then the end: not h2, and nothing lost.
        assert_eq!(
            split_opening(b"PRI * HT").await,
            (false, b"PRI * HT".to_vec())
        );
    }

    #[tokio::test]
    async fn the_first_read_after_rewinding_gets_the_rest_sent_so_far() {
        let request = b"GET /some/longer/path HTTP/1.1\r\nHost: a\r\n\r\n";
        let (mut client, mut server) = tokio::io::duplex(256);
        client.write_all(request).await.unwrap();
        let opening = Opening::read(&mut server).await.unwrap();
        let mut rewound = opening.rewind(server);
        let mut buf = [0u8; 256];
        let n = rewound.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], request);
    }

    #[tokio::test]
    async fn a_silent_client_gives_an_empty_opening() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert!(Opening::read(&mut server).await.unwrap().is_empty());
    }
}

#[cfg(test)]
mod park_tests {
    use super::*;
    use crate::engine::IdleTimeout;
    use crate::service::http::body::SentBody;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

    type Io = TokioIo<Parkable<Rewound<IdleTimeout<DuplexStream>>>>;

    /// Serves HTTP/1 on `server` (answering every request with `body`) until the connection
    /// parks or ends, as `serve_stream` does.
    async fn serve_until_parked(
        unread: Bytes,
        server: IdleTimeout<DuplexStream>,
        body: Bytes,
    ) -> Driven<Io> {
        serve_until(unread, server, body, CancellationToken::new()).await
    }

    /// As [`serve_until_parked`], with `shutdown`.
    async fn serve_until(
        unread: Bytes,
        mut server: IdleTimeout<DuplexStream>,
        body: Bytes,
        shutdown: CancellationToken,
    ) -> Driven<Io> {
        let head = HeadDeadline::start(
            server.wait_deadline(),
            Duration::from_secs(10),
            Duration::from_secs(10),
        );
        let service_head = head.clone();
        let service = hyper::service::service_fn(move |_req| {
            service_head.head_read();
            let body = Full::new(body.clone())
                .map_err(|e| match e {})
                .boxed_unsync();
            let sent = SentBody::plain(body, Some(service_head.clone()));
            async move { Ok::<_, std::convert::Infallible>(http::Response::new(sent)) }
        });
        let io = TokioIo::new(Parkable::new(Rewound::new(unread, server), head.clone()));
        let conn = http1::Builder::new().serve_connection(io, service);
        drive_h1(Box::pin(conn), &shutdown, &head).await
    }

    /// A body far larger than the test pipes hold, ending in "END".
    fn long_body() -> Bytes {
        let mut body = vec![b'x'; 64 * 1024];
        body.extend_from_slice(b"END");
        Bytes::from(body)
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_a_slow_reader_still_gets_its_response_and_the_connection_ends() {
        let (mut client, server) = tokio::io::duplex(1024);
        let server = IdleTimeout::new(server, Duration::from_secs(300));
        let body = long_body();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let mut driving = Box::pin(serve_until(Bytes::new(), server, body.clone(), shutdown));
        // A spinning server would keep the runtime from idling (so paused time from passing):
        // counted, it fails instead of hanging.
        let mut polls = 0u32;
        let serving = tokio::spawn(std::future::poll_fn(move |cx| {
            polls += 1;
            assert!(polls < 10_000, "the connection spins");
            driving.as_mut().poll(cx)
        }));
        client.write_all(REQUEST).await.unwrap();
        // The response is mostly in hyper's buffer when shutdown comes; time passes.
        tokio::time::sleep(PARK_AFTER).await;
        stop.cancel();
        tokio::time::sleep(PARK_AFTER * 10).await;
        assert!(!serving.is_finished(), "ended with a response unsent");
        let response = read_response(&mut client, b"END").await;
        let body_at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(
            response[body_at..] == body[..],
            "the body came back changed"
        );
        let Driven::Done(res) = serving.await.unwrap() else {
            panic!("parked at shutdown");
        };
        res.unwrap();
    }

    /// Reads one response whose body ends with `end`.
    async fn read_response(client: &mut DuplexStream, end: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !got.ends_with(end) {
            let mut buf = [0u8; 4096];
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_parks_after_its_response_and_keeps_a_pipelined_heads_start() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serving = tokio::spawn(serve_until_parked(
            Bytes::new(),
            IdleTimeout::new(server, Duration::from_secs(300)),
            Bytes::from_static(b"hello"),
        ));
        let mut sent = REQUEST.to_vec();
        sent.extend_from_slice(b"GET /next HT");
        client.write_all(&sent).await.unwrap();
        let started = Instant::now();
        let response = read_response(&mut client, b"hello").await;
        assert!(response.starts_with(b"HTTP/1.1 200"));
        let Driven::Parked(io, unread) = serving.await.unwrap() else {
            panic!("the idle connection did not park");
        };
        assert!(started.elapsed() >= PARK_AFTER);
        assert_eq!(
            &unread[..],
            b"GET /next HT",
            "the next head's start was lost"
        );
        // Served again with what was read, the stream is whole.
        let (unread, stream) = unpark(io, unread);
        let again = tokio::spawn(serve_until_parked(
            unread,
            stream,
            Bytes::from_static(b"again"),
        ));
        client
            .write_all(b"TP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let response = read_response(&mut client, b"again").await;
        assert!(response.starts_with(b"HTTP/1.1 200"));
        match again.await.unwrap() {
            Driven::Parked(..) => {}
            Driven::Done(res) => panic!("served again, the connection did not park: {res:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_slow_to_read_its_response_gets_all_of_it_before_the_connection_parks() {
        let (mut client, server) = tokio::io::duplex(1024);
        let body = long_body();
        let serving = tokio::spawn(serve_until_parked(
            Bytes::new(),
            IdleTimeout::new(server, Duration::from_secs(300)),
            body.clone(),
        ));
        client.write_all(REQUEST).await.unwrap();
        // Well past the time to park, the response is still mostly in hyper's buffer.
        tokio::time::sleep(PARK_AFTER * 10).await;
        assert!(
            !serving.is_finished(),
            "the connection ended with a response unsent"
        );
        let response = read_response(&mut client, b"END").await;
        let body_at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(
            response[body_at..] == body[..],
            "the body came back changed"
        );
        let Driven::Parked(_, unread) = serving.await.unwrap() else {
            panic!("the connection did not park once its response was taken");
        };
        assert!(unread.is_empty());
    }
}
