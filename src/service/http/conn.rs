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
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::HeadLimits;
use crate::engine::WaitDeadline;

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

/// The time a client gets to send a whole HTTP/1 request head, counted from the connection's
/// start and then from the end of each response (so it bounds an idle keep-alive connection
/// too, as hyper's own head timeout did): a slowloris sending a byte a second is closed at
/// it. Kept on the engine's idle timer ([`WaitDeadline`]), checked only while the
/// connection waits: per request, two stores and a clock read.
#[derive(Debug, Clone)]
pub(super) struct HeadDeadline {
    deadline: WaitDeadline,
    limit: Duration,
}

impl HeadDeadline {
    /// Starts the first head's deadline on `deadline`, now.
    pub(super) fn start(deadline: WaitDeadline, limit: Duration) -> HeadDeadline {
        let head = HeadDeadline { deadline, limit };
        head.restart();
        head
    }

    /// A request head is in: its request and response are not under this deadline.
    pub(super) fn head_read(&self) {
        self.deadline.clear();
    }

    /// A response is done with: the next head's time starts.
    pub(super) fn restart(&self) {
        self.deadline.set(Instant::now() + self.limit);
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
        Rewound {
            opening: self,
            taken: 0,
            io,
        }
    }
}

/// A stream whose first bytes, already read, are read again.
#[derive(Debug)]
pub(super) struct Rewound<I> {
    opening: Opening,
    /// Bytes of the opening read again so far.
    taken: usize,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewound<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let left = &this.opening.bytes[this.taken..this.opening.len];
        if left.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = left.len().min(buf.remaining());
        buf.put_slice(&left[..n]);
        this.taken += n;
        // The rest of what the client sent in the same read: hyper handed with the opening
        // alone reads again with less than its 8 KiB free, which doubles its read buffer to
        // 16 KiB for the connection's life (heaptrack). Nothing more yet is fine; an error
        // is left for the next read to meet (the stream is then closed or at its end).
        if buf.remaining() > 0 {
            let _ = Pin::new(&mut this.io).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
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
