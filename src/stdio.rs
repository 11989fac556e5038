//! Local stdout/stderr for streaming clients: a blocking writer on its own thread behind an
//! `AsyncWrite`, so a stream of small writes costs a copy into a batch instead of a hand-off
//! to tokio's blocking pool (measured: that hand-off capped `exec run -- cat` near 0.3 GB/s).
//! The thread can also drain a pipe into its output, for bytes spliced from a socket.

mod piped;

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;

use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

pub(crate) use piped::SPLICE_PIPE_BYTES;

/// Batches queued for the writer thread; a writer that falls behind applies backpressure.
pub(crate) const WRITER_QUEUE_CHUNKS: usize = 16;

/// Writes are gathered into batches of about this size before they are handed to the thread
/// (or sooner, at a flush): one wake-up of the thread per batch, not per write (under TLS a
/// write is one record, 16 KiB). Queue and batch bound the memory to about
/// `(WRITER_QUEUE_CHUNKS + 1) * WRITER_BATCH_BYTES`.
pub const WRITER_BATCH_BYTES: usize = 1024 * 1024;

/// Written batches the thread hands back for reuse: a fresh megabyte per batch costs a page
/// fault per 4 KiB (measured at 5% of `exec run --tls -- cat`'s time); a few in circulation
/// avoid that without holding on to a slow output's whole queue.
pub(crate) const RECYCLED_BATCHES: usize = 2;

/// What the writer thread is handed, in order.
#[derive(Debug)]
enum Piece {
    /// Bytes to write.
    Bytes(Vec<u8>),
    /// Bytes waiting in the splice pipe, to move to the output.
    Piped(usize),
}

/// An `AsyncWrite` whose bytes are written, in order, by a dedicated thread.
///
/// Bytes are handed over in batches: once [`WRITER_BATCH_BYTES`] have gathered, and at every
/// `poll_flush` (which does not wait for the thread). [`ThreadWriter::finish`] waits until
/// the thread has written and flushed everything. The thread flushes whenever its queue runs
/// empty.
///
/// Made with [`spawn_splicing`](Self::spawn_splicing), it also takes bytes that were spliced
/// into its pipe (see [`SpliceOutput`]), in order with the written ones.
#[derive(Debug)]
pub struct ThreadWriter {
    tx: PollSender<Piece>,
    /// Bytes written and not yet handed over.
    batch: Vec<u8>,
    /// Emptied batches coming back from the thread.
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// The splice pipe's write end, with `spawn_splicing`.
    pipe: Option<pipe::Sender>,
}

impl ThreadWriter {
    /// Starts a thread writing to `out`.
    pub fn spawn<W: Write + Send + 'static>(out: W) -> Self {
        Self::start(out, None, None)
    }

    /// Like [`spawn`](Self::spawn), with a pipe the thread drains into `out` (by splice where
    /// `out` takes it: a pipe, a file, `/dev/null`), so bytes can reach `out` from a socket
    /// without passing through this process's memory. Without a pipe (it could not be made)
    /// this is [`spawn`](Self::spawn). Must be called within a tokio runtime.
    pub fn spawn_splicing<W: Write + AsFd + Send + 'static>(out: W) -> Self {
        match piped::splice_pipe(out.as_fd()) {
            Ok((pipe, drain)) => Self::start(out, Some(pipe), Some(drain)),
            Err(_) => Self::spawn(out),
        }
    }

    fn start<W: Write + Send + 'static>(
        mut out: W,
        pipe: Option<pipe::Sender>,
        mut drain: Option<piped::Drain>,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Piece>(WRITER_QUEUE_CHUNKS);
        let (give_back, recycled) = std::sync::mpsc::sync_channel(RECYCLED_BATCHES);
        let thread = std::thread::spawn(move || {
            while let Some(piece) = rx.blocking_recv() {
                match piece {
                    Piece::Bytes(mut chunk) => {
                        out.write_all(&chunk)?;
                        chunk.clear();
                        // Never waits: with enough batches in circulation, this one is freed.
                        let _ = give_back.try_send(chunk);
                    }
                    Piece::Piped(n) => match drain.as_mut() {
                        Some(drain) => drain.move_to(&mut out, n)?,
                        None => return Err(io::Error::other("no splice pipe to drain")),
                    },
                }
                if rx.is_empty() {
                    out.flush()?;
                }
            }
            out.flush()
        });
        ThreadWriter {
            tx: PollSender::new(tx),
            batch: Vec::new(),
            recycled,
            thread: Some(thread),
            pipe,
        }
    }

    /// Hands the batch to the thread, waiting for room in the queue.
    fn poll_hand_over(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.batch.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| gone())?;
        let batch = std::mem::take(&mut self.batch);
        self.tx.send_item(Piece::Bytes(batch)).map_err(|_| gone())?;
        Poll::Ready(Ok(()))
    }

    /// Hands over what is left, closes the queue and waits until every byte has been written
    /// and flushed.
    ///
    /// # Errors
    /// The writer thread's first write error.
    pub async fn finish(mut self) -> io::Result<()> {
        let handed = std::future::poll_fn(|cx| self.poll_hand_over(cx)).await;
        self.tx.close();
        // The thread's reads of the pipe must not wait for a writer that is done.
        self.pipe = None;
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let written = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(io::Error::other)?
            .map_err(|_| io::Error::other("the output thread panicked"))?;
        // The thread's own error says why a hand-over failed.
        written.and(handed)
    }
}

/// A hand-over to a thread that has stopped, which it only does early on a write error (e.g.
/// EPIPE from a closed pipe); [`ThreadWriter::finish`] reports that error itself.
fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "local output closed")
}

/// Local output that can also take bytes moved straight from a socket into a pipe it drains
/// (see [`ThreadWriter::spawn_splicing`]). Outputs without such a pipe keep the defaults.
pub trait SpliceOutput {
    /// The pipe to splice into, if any: written by nobody else.
    fn splice_pipe(&self) -> Option<&pipe::Sender> {
        None
    }

    /// Hands over `n` bytes just moved into [`splice_pipe`](Self::splice_pipe): they reach the
    /// output after everything written before them.
    ///
    /// # Errors
    ///
    /// `Unsupported` without a pipe; `BrokenPipe` once the output has failed.
    fn poll_hand_over_piped(&mut self, _cx: &mut Context<'_>, _n: usize) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

impl SpliceOutput for ThreadWriter {
    fn splice_pipe(&self) -> Option<&pipe::Sender> {
        self.pipe.as_ref()
    }

    fn poll_hand_over_piped(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<io::Result<()>> {
        if self.pipe.is_none() {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        }
        // What was written before goes first; an empty batch makes this a no-op.
        ready!(self.poll_hand_over(cx))?;
        ready!(self.tx.poll_reserve(cx)).map_err(|_| gone())?;
        self.tx.send_item(Piece::Piped(n)).map_err(|_| gone())?;
        Poll::Ready(Ok(()))
    }
}

impl<T: SpliceOutput + ?Sized> SpliceOutput for &mut T {
    fn splice_pipe(&self) -> Option<&pipe::Sender> {
        (**self).splice_pipe()
    }

    fn poll_hand_over_piped(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<io::Result<()>> {
        (**self).poll_hand_over_piped(cx, n)
    }
}

/// Where a streaming client's output goes: any writer ([`Output::new`]), or a
/// [`ThreadWriter`] with a splice pipe ([`Output::splicing`]), which a plaintext stream's bytes
/// can reach without a copy through this process.
#[derive(Debug)]
pub struct Output<'a, W = tokio::io::Sink> {
    inner: OutputInner<'a, W>,
}

#[derive(Debug)]
enum OutputInner<'a, W> {
    Writer(W),
    Splicing(&'a mut ThreadWriter),
}

impl<W> Output<'_, W> {
    /// Output written to `writer` (a `Vec<u8>`, a file, a socket, stdout, …).
    pub fn new(writer: W) -> Self {
        Output {
            inner: OutputInner::Writer(writer),
        }
    }
}

impl<'a> Output<'a> {
    /// Output handed to `writer`, splicing into its pipe where the stream can (see
    /// [`ThreadWriter::spawn_splicing`]).
    pub fn splicing(writer: &'a mut ThreadWriter) -> Self {
        Output {
            inner: OutputInner::Splicing(writer),
        }
    }
}

impl<W> SpliceOutput for Output<'_, W> {
    fn splice_pipe(&self) -> Option<&pipe::Sender> {
        match &self.inner {
            OutputInner::Writer(_) => None,
            OutputInner::Splicing(w) => w.splice_pipe(),
        }
    }

    fn poll_hand_over_piped(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<io::Result<()>> {
        match &mut self.inner {
            OutputInner::Writer(_) => Poll::Ready(Err(io::ErrorKind::Unsupported.into())),
            OutputInner::Splicing(w) => w.poll_hand_over_piped(cx, n),
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Output<'_, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            OutputInner::Writer(w) => Pin::new(w).poll_write(cx, buf),
            OutputInner::Splicing(w) => Pin::new(&mut **w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            OutputInner::Writer(w) => Pin::new(w).poll_flush(cx),
            OutputInner::Splicing(w) => Pin::new(&mut **w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            OutputInner::Writer(w) => Pin::new(w).poll_shutdown(cx),
            OutputInner::Splicing(w) => Pin::new(&mut **w).poll_shutdown(cx),
        }
    }
}

impl AsyncWrite for ThreadWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.batch.len() >= WRITER_BATCH_BYTES {
            ready!(this.poll_hand_over(cx))?;
        }
        if this.batch.capacity() == 0 {
            this.batch = this
                .recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(WRITER_BATCH_BYTES));
        }
        let room = WRITER_BATCH_BYTES.saturating_sub(this.batch.len()).max(1);
        let take = buf.len().min(room);
        this.batch.extend_from_slice(&buf[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_hand_over(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_hand_over(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn bytes_arrive_in_order_once_finished() {
        let sink = Shared::default();
        let mut w = ThreadWriter::spawn(sink.clone());
        let mut expected = Vec::new();
        for i in 0..1000u32 {
            let chunk = i.to_be_bytes();
            w.write_all(&chunk).await.unwrap();
            expected.extend_from_slice(&chunk);
        }
        w.finish().await.unwrap();
        assert_eq!(*sink.0.lock().unwrap(), expected);
    }

    /// Reports every write on a channel, so a test can wait for the thread to write.
    struct Reporting(std::sync::mpsc::Sender<Vec<u8>>);

    impl Write for Reporting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn small_writes_go_out_as_one_batch_at_the_flush() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut w = ThreadWriter::spawn(Reporting(tx));
        w.write_all(b"abc").await.unwrap();
        w.write_all(b"def").await.unwrap();
        w.flush().await.unwrap();
        let written = tokio::task::spawn_blocking(move || {
            rx.recv_timeout(std::time::Duration::from_secs(10))
        });
        assert_eq!(written.await.unwrap().unwrap(), b"abcdef");
        w.finish().await.unwrap();
    }

    #[tokio::test]
    async fn a_write_past_the_batch_size_is_split_across_batches() {
        let sink = Shared::default();
        let mut w = ThreadWriter::spawn(sink.clone());
        let big: Vec<u8> = (0..WRITER_BATCH_BYTES * 2 + 5).map(|i| i as u8).collect();
        w.write_all(&big).await.unwrap();
        w.finish().await.unwrap();
        assert_eq!(*sink.0.lock().unwrap(), big);
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failing_output_surfaces_as_an_error() {
        let mut w = ThreadWriter::spawn(Broken);
        // The first batch is queued; later hand-overs fail once the thread has stopped.
        let mut failed = false;
        for _ in 0..(WRITER_QUEUE_CHUNKS * 4) {
            if w.write_all(b"x").await.is_err() || w.flush().await.is_err() {
                failed = true;
                break;
            }
        }
        let finished = w.finish().await;
        assert!(failed || finished.is_err());
        assert!(finished.is_err());
    }

    /// Writes `a`, moves `b` through the splice pipe, writes `c`, and returns what `file`
    /// then holds after `prefix`.
    async fn written_around_a_piped_piece(file: std::fs::File, path: &std::path::Path) -> Vec<u8> {
        let mut w = ThreadWriter::spawn_splicing(file);
        w.write_all(b"first, ").await.unwrap();
        let piped = b"then piped, ";
        let pipe = w.splice_pipe().expect("a splice pipe");
        pipe.writable().await.unwrap();
        assert_eq!(pipe.try_write(piped).unwrap(), piped.len());
        std::future::poll_fn(|cx| w.poll_hand_over_piped(cx, piped.len()))
            .await
            .unwrap();
        w.write_all(b"last").await.unwrap();
        w.finish().await.unwrap();
        std::fs::read(path).unwrap()
    }

    #[tokio::test]
    async fn piped_bytes_reach_a_file_in_order_with_written_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let file = std::fs::File::create(&path).unwrap();
        let got = written_around_a_piped_piece(file, &path).await;
        assert_eq!(got, b"first, then piped, last");
    }

    #[tokio::test]
    async fn an_output_that_refuses_splices_gets_piped_bytes_copied() {
        // splice(2) refuses a file opened for appending (`>>`): the thread falls back.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, b"kept: ").unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let got = written_around_a_piped_piece(file, &path).await;
        assert_eq!(got, b"kept: first, then piped, last");
    }

    #[tokio::test]
    async fn a_writer_without_a_pipe_refuses_piped_bytes() {
        let mut w = ThreadWriter::spawn(Shared::default());
        assert!(w.splice_pipe().is_none());
        let refused = std::future::poll_fn(|cx| w.poll_hand_over_piped(cx, 1)).await;
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::Unsupported);
        w.finish().await.unwrap();
    }
}
