//! The idle timeout: a stream wrapper that fails a read or write that has waited longer than
//! the timeout since the connection last made progress, or past a deadline its server set.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::net::splice::{SpliceRead, SpliceWrite};

/// A stream whose reads and writes fail with `TimedOut` after `timeout` without progress,
/// or once its [`WaitDeadline`] has passed.
///
/// Progress only sets a flag; the clock is read when the stream next waits, and the timer is
/// moved lazily (later deadlines only extend it; it is re-armed when it fires), so the hot
/// path never touches the timer wheel.
#[derive(Debug)]
pub struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    last_progress: Instant,
    /// Progress made since `last_progress` was read off the clock.
    progressed: bool,
    timer: Pin<Box<Sleep>>,
    deadline: Option<WaitDeadline>,
}

/// A deadline for a stream's waits, set from outside the stream by whoever serves it (HTTP's
/// request-head deadline, say): once it has passed, a read or write that waits fails with
/// `TimedOut`, as after the idle timeout. Checked only while the stream waits, on the idle
/// timer, so setting it costs a store.
#[derive(Debug, Clone)]
pub struct WaitDeadline(Arc<DeadlineCell>);

#[derive(Debug)]
struct DeadlineCell {
    /// What `at` counts from.
    base: Instant,
    /// Nanoseconds after `base`; [`NO_DEADLINE`] for none.
    at: AtomicU64,
}

const NO_DEADLINE: u64 = u64::MAX;

impl WaitDeadline {
    fn new() -> WaitDeadline {
        WaitDeadline(Arc::new(DeadlineCell {
            base: Instant::now(),
            at: AtomicU64::new(NO_DEADLINE),
        }))
    }

    /// From now on, a wait that reaches `at` fails.
    pub fn set(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.0.base).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(NO_DEADLINE - 1);
        self.0.at.store(nanos, Ordering::Relaxed);
    }

    /// No deadline (only the idle timeout) from now on.
    pub fn clear(&self) {
        self.0.at.store(NO_DEADLINE, Ordering::Relaxed);
    }

    /// The deadline set, if any.
    pub fn get(&self) -> Option<Instant> {
        match self.0.at.load(Ordering::Relaxed) {
            NO_DEADLINE => None,
            nanos => Some(self.0.base + Duration::from_nanos(nanos)),
        }
    }
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
            progressed: false,
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
            deadline: None,
        }
    }

    /// The stream's [`WaitDeadline`], shared with the caller (none is set until it says).
    pub fn wait_deadline(&mut self) -> WaitDeadline {
        self.deadline.get_or_insert_with(WaitDeadline::new).clone()
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

    /// Called when the inner stream is pending: errors if the idle deadline or the set
    /// deadline has passed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        // Progress counts from this wait's start: the same instant, or later when the caller
        // was busy elsewhere in between, which is not the peer being idle.
        if std::mem::take(&mut self.progressed) {
            self.last_progress = Instant::now();
        }
        loop {
            let idle_at = self.last_progress + self.timeout;
            let set_at = self.deadline.as_ref().and_then(WaitDeadline::get);
            let deadline = set_at.map_or(idle_at, |at| at.min(idle_at));
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                let reason = match set_at {
                    Some(at) if at <= idle_at => "its deadline passed".to_owned(),
                    _ => format!("idle for {:?}", self.timeout),
                };
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, reason));
            }
        }
    }

    /// Arms the timer for a [`WaitDeadline`] set earlier than it is armed for. A server sets
    /// its deadline as a response ends, perhaps after its stream's read began waiting under
    /// the old one; without this, that wait would go on to the old time. Called on a flush
    /// (the end of each response's writes): a load and a compare when nothing moved.
    fn arm_earlier(&mut self, cx: &mut Context<'_>) {
        let Some(at) = self.deadline.as_ref().and_then(WaitDeadline::get) else {
            return;
        };
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
            if self.timer.as_mut().poll(cx).is_ready() {
                // Already passed: the next wait is to meet it.
                cx.waker().wake_by_ref();
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
                self.progressed = true;
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
        if res.is_ready() {
            this.arm_earlier(cx);
        }
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

    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: std::os::fd::BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let res = self.inner.poll_send_file(cx, file, offset, len);
        self.progress(cx, res)
    }

    fn set_cork(&mut self, on: bool) -> io::Result<()> {
        self.inner.set_cork(on)
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

    #[tokio::test(start_paused = true)]
    async fn a_set_deadline_fails_a_wait_despite_progress_and_a_cleared_one_does_not() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(a, Duration::from_secs(300));
        let deadline = idle.wait_deadline();
        let start = Instant::now();
        deadline.set(start + Duration::from_secs(5));
        // A byte every 2 s is progress enough for the idle timeout, not for the deadline.
        let writer = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if b.write_all(b"x").await.is_err() {
                    break;
                }
            }
            b
        });
        let err = loop {
            match idle.read_u8().await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("deadline"), "{err}");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
            "{waited:?}"
        );
        // Cleared: the next wait has only the idle timeout.
        deadline.clear();
        assert_eq!(idle.read_u8().await.unwrap(), b'x');
        writer.abort();
    }

    /// Counts its wakes.
    struct Counted(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_set_while_a_read_waits_is_armed_by_the_next_flush() {
        let (a, _b) = tokio::io::duplex(64);
        let mut idle = IdleTimeout::new(a, Duration::from_secs(300));
        let deadline = idle.wait_deadline();
        let counted = Arc::new(Counted(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(counted.clone());
        let mut cx = Context::from_waker(&waker);
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        assert!(Pin::new(&mut idle)
            .poll_read(&mut cx, &mut buf)
            .is_pending());
        // The server sets its deadline after the read began to wait, then flushes.
        deadline.set(Instant::now() + Duration::from_secs(5));
        assert!(Pin::new(&mut idle).poll_flush(&mut cx).is_ready());
        tokio::time::advance(Duration::from_secs(6)).await;
        tokio::task::yield_now().await;
        assert!(
            counted.0.load(Ordering::Relaxed) > 0,
            "the waiting read was not woken at the deadline"
        );
        let err = Pin::new(&mut idle).poll_read(&mut cx, &mut buf);
        assert!(matches!(err, Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::TimedOut));
    }
}
