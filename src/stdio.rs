//! Local stdout/stderr for streaming clients: a blocking writer on its own thread behind an
//! `AsyncWrite`, so a stream of small writes costs a copy into a batch instead of a hand-off
//! to tokio's blocking pool (measured: that hand-off capped `exec run -- cat` near 0.3 GB/s).

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Batches queued for the writer thread; a writer that falls behind applies backpressure.
pub const WRITER_QUEUE_CHUNKS: usize = 16;

/// Writes are gathered into batches of about this size before they are handed to the thread
/// (or sooner, at a flush): one wake-up of the thread per batch, not per write (under TLS a
/// write is one record, 16 KiB). Queue and batch bound the memory to about
/// `(WRITER_QUEUE_CHUNKS + 1) * WRITER_BATCH_BYTES`.
pub const WRITER_BATCH_BYTES: usize = 1024 * 1024;

/// Written batches the thread hands back for reuse: a fresh megabyte per batch costs a page
/// fault per 4 KiB (measured at 5% of `exec run --tls -- cat`'s time); a few in circulation
/// avoid that without holding on to a slow output's whole queue.
pub const RECYCLED_BATCHES: usize = 2;

/// An `AsyncWrite` whose bytes are written, in order, by a dedicated thread.
///
/// Bytes are handed over in batches: once [`WRITER_BATCH_BYTES`] have gathered, and at every
/// `poll_flush` (which does not wait for the thread). [`ThreadWriter::finish`] waits until
/// the thread has written and flushed everything. The thread flushes whenever its queue runs
/// empty.
#[derive(Debug)]
pub struct ThreadWriter {
    tx: PollSender<Vec<u8>>,
    /// Bytes written and not yet handed over.
    batch: Vec<u8>,
    /// Emptied batches coming back from the thread.
    recycled: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ThreadWriter {
    /// Starts a thread writing to `out`.
    pub fn spawn<W: Write + Send + 'static>(mut out: W) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITER_QUEUE_CHUNKS);
        let (give_back, recycled) = std::sync::mpsc::sync_channel(RECYCLED_BATCHES);
        let thread = std::thread::spawn(move || {
            while let Some(mut chunk) = rx.blocking_recv() {
                out.write_all(&chunk)?;
                if rx.is_empty() {
                    out.flush()?;
                }
                chunk.clear();
                // Never waits: with enough batches in circulation, this one is just freed.
                let _ = give_back.try_send(chunk);
            }
            out.flush()
        });
        ThreadWriter {
            tx: PollSender::new(tx),
            batch: Vec::new(),
            recycled,
            thread: Some(thread),
        }
    }

    /// Hands the batch to the thread, waiting for room in the queue.
    fn poll_hand_over(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.batch.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // The thread only stops early on a write error (e.g. EPIPE from a closed pipe).
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "local output closed");
        ready!(self.tx.poll_reserve(cx)).map_err(|_| gone())?;
        let batch = std::mem::take(&mut self.batch);
        self.tx.send_item(batch).map_err(|_| gone())?;
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
}
