//! The idle timeout: a stream wrapper that fails a read or write that has waited longer than
//! the timeout since the connection last made progress.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::net::splice::{SpliceRead, SpliceWrite};

/// A stream whose reads and writes fail with `TimedOut` after `timeout` without progress.
///
/// Progress only records an `Instant`; the timer is re-armed lazily when it fires, so the hot
/// path never touches the timer wheel.
#[derive(Debug)]
pub struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    last_progress: Instant,
    timer: Pin<Box<Sleep>>,
}

/// Stand-in for "no idle timeout": far enough away never to fire, near enough not to overflow.
const NO_IDLE_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl<S> IdleTimeout<S> {
    /// Wraps `inner` with `timeout`, or with none (it never fires).
    pub fn optional(inner: S, timeout: Option<Duration>) -> Self {
        IdleTimeout::new(inner, timeout.unwrap_or(NO_IDLE_TIMEOUT))
    }

    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: S, timeout: Duration) -> Self {
        let now = Instant::now();
        IdleTimeout {
            inner,
            timeout,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }

    /// The wrapped stream.
    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Called when the inner stream is pending: errors if the idle deadline has passed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last_progress + self.timeout;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("idle for {:?}", self.timeout),
                ));
            }
        }
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match res {
            Poll::Ready(r) => {
                self.last_progress = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.progress(cx, res)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, res)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, res)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: SpliceWrite> SpliceWrite for IdleTimeout<S> {
    fn can_splice(&self) -> bool {
        self.inner.can_splice()
    }

    fn poll_splice_from(
        &mut self,
        cx: &mut Context<'_>,
        pipe: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let res = self.inner.poll_splice_from(cx, pipe, len);
        self.progress(cx, res)
    }
}

impl<S: SpliceRead> SpliceRead for IdleTimeout<S> {
    fn can_splice_read(&self) -> bool {
        self.inner.can_splice_read()
    }

    fn poll_splice_to(
        &mut self,
        cx: &mut Context<'_>,
        pipe: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let res = self.inner.poll_splice_to(cx, pipe, len);
        self.progress(cx, res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn read_fails_after_the_idle_timeout() {
        let (a, _b) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(a, Duration::from_secs(3));
        let start = Instant::now();
        let err = idle.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_pushes_the_deadline_back() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(a, Duration::from_secs(3));
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                b.write_all(b"x").await.unwrap();
            }
            b
        });
        for _ in 0..4 {
            assert_eq!(idle.read_u8().await.unwrap(), b'x');
        }
        let _b = writer.await.unwrap();
        let err = idle.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
