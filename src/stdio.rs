//! Local stdout/stderr for streaming clients: a blocking writer on its own thread behind an
//! `AsyncWrite`, so a stream of small writes costs a channel send each instead of a hand-off
//! to tokio's blocking pool (measured: that hand-off capped `exec run -- cat` near 0.3 GB/s).

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::thread::JoinHandle;

use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Chunks queued for the writer thread; a writer that falls behind applies backpressure.
pub const WRITER_QUEUE_CHUNKS: usize = 64;

/// An `AsyncWrite` whose bytes are written, in order, by a dedicated thread.
///
/// `poll_flush` only hands bytes over; [`ThreadWriter::finish`] waits until the thread has
/// written and flushed everything. The thread flushes whenever its queue runs empty.
#[derive(Debug)]
pub struct ThreadWriter {
    tx: PollSender<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl ThreadWriter {
    /// Starts a thread writing to `out`.
    pub fn spawn<W: Write + Send + 'static>(mut out: W) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITER_QUEUE_CHUNKS);
        let thread = std::thread::spawn(move || {
            while let Some(chunk) = rx.blocking_recv() {
                out.write_all(&chunk)?;
                if rx.is_empty() {
                    out.flush()?;
                }
            }
            out.flush()
        });
        ThreadWriter {
            tx: PollSender::new(tx),
            thread: Some(thread),
        }
    }

    /// Closes the queue and waits until every byte has been written and flushed.
    ///
    /// # Errors
    /// The writer thread's first write error.
    pub async fn finish(mut self) -> io::Result<()> {
        self.tx.close();
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(io::Error::other)?
            .map_err(|_| io::Error::other("the output thread panicked"))?
    }
}

impl AsyncWrite for ThreadWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The thread only stops early on a write error (e.g. EPIPE from a closed pipe).
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "local output closed");
        ready!(self.tx.poll_reserve(cx)).map_err(|_| gone())?;
        self.tx.send_item(buf.to_vec()).map_err(|_| gone())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
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
        // The first write is queued; later ones fail once the thread has stopped.
        let mut failed = false;
        for _ in 0..(WRITER_QUEUE_CHUNKS * 4) {
            if w.write_all(b"x").await.is_err() {
                failed = true;
                break;
            }
        }
        let finished = w.finish().await;
        assert!(failed || finished.is_err());
        assert!(finished.is_err());
    }
}
