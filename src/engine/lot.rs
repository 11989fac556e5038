//! The parking lot: connections their handler handed back idle ([`super::Handled::Park`])
//! wait here as bare sockets, with no task, no buffers and no registration with tokio's
//! reactor, watched by one task through an epoll set of the lot's own, until their peer
//! sends again (then a new task serves them) or their deadline passes (then they are closed).
//!
//! An idle HTTP keep-alive connection waiting in a task of its own cost 2.5 KB (the task,
//! its reactor registration, its timers; docs/benchmarks.md); here it is its slab entry and
//! its place among the deadlines, and the kernel's epoll entry, which is not the process's
//! memory. nginx keeps its idle keep-alive connections the same way.
//!
//! Both the slab and the deadlines are single arrays, grown by a quarter at a time, rather
//! than many small long-lived allocations (a tree's nodes, say) scattered among the buffers
//! of the connections being served.
//!
//! The allocator keeps what the connections used while they were served: a burst of 9,000
//! new connections, each parking after one response, left about 4 MB of freed buffers in
//! glibc's per-thread arenas, which it does not give back by itself (RSS grew 0.7 KB per
//! parked connection, against 0.1 KB of them live). So after connections park, at most once
//! per [`TRIM_AFTER`], the lot asks glibc to return its free pages (`malloc_trim`), on a
//! blocking thread; the growth is then 0.2 KB per connection.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::net::{StdStream, Stream};

/// Events taken from the lot's epoll set in one wait; more are taken on the next turn.
const EVENTS_PER_WAIT: usize = 256;

/// How long after a connection parks the allocator is asked to give back free memory; at
/// most one such request per this time.
pub(super) const TRIM_AFTER: Duration = Duration::from_secs(1);

/// Parked connections, each with its deadline and the caller's `T` (what goes back to the
/// task that serves it again).
pub(super) struct Lot<T> {
    epoll: AsyncFd<EpollFd>,
    spaces: Mutex<Spaces<T>>,
    /// Told when a connection parks with a deadline sooner than all the others', or the
    /// first since the allocator was last trimmed.
    sooner: Notify,
    /// Whether a connection has parked since the allocator was last trimmed.
    untrimmed: AtomicBool,
}

/// The lot's epoll set, as tokio's reactor watches it (readable when a parked socket is).
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

struct Spaces<T> {
    /// The parked connections; each one's key is its data in the epoll set.
    parked: Slab<Parked<T>>,
    /// Each parked connection's deadline and key, soonest first; an entry whose key no
    /// longer holds a connection with that deadline is stale, and skipped when met.
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    /// False once the lot has closed (at shutdown): nothing parks any more.
    open: bool,
}

/// One parked connection.
pub(super) struct Parked<T> {
    stream: StdStream,
    /// When it is closed if its peer has not spoken.
    until: Instant,
    value: T,
}

/// Sleeps until `at`; forever if none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Asks the allocator to return its free pages to the system, on a blocking thread (it
/// walks the heap). Only glibc's needs asking.
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim only releases free memory; it has no preconditions.
        let gave = unsafe { libc::malloc_trim(0) } == 1;
        debug!(gave, took = ?started.elapsed(), "asked the allocator to give back free memory");
    });
}

/// The least a growing array grows by.
const MIN_GROWTH: usize = 64;

/// What a full array of `len` grows by: a quarter (at least [`MIN_GROWTH`]) rather than
/// as much again, since what it holds lasts.
fn growth(len: usize) -> usize {
    (len / 4).max(MIN_GROWTH)
}

impl<T> Spaces<T> {
    /// The soonest deadline of a parked connection; stale ones at the front are dropped.
    fn soonest(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, key))) = self.deadlines.peek() {
            if self.parked.get(key).is_some_and(|p| p.until == at) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Takes the connection at `key` out of the lot and out of the epoll set.
    fn remove(&mut self, key: usize, epoll: &Epoll) -> Option<Parked<T>> {
        let parked = self.parked.try_remove(key)?;
        // Its deadline is left to go stale; when stale ones outnumber the parked, the
        // deadlines are rebuilt.
        if self.deadlines.len() > 2 * self.parked.len() + MIN_GROWTH {
            let live = self.parked.iter().map(|(key, p)| Reverse((p.until, key)));
            self.deadlines = live.collect();
        }
        // Explicitly, not by the close: a copy of the descriptor in a child process that
        // has not yet exec'd would keep it in the set, and its key may be reused.
        let _ = epoll.delete(&parked.stream);
        // Emptied after a burst: what the burst grew is given back (any deadlines left are
        // stale).
        if self.parked.is_empty() && self.parked.capacity() > MIN_GROWTH {
            self.parked = Slab::new();
            self.deadlines = BinaryHeap::new();
        }
        Some(parked)
    }
}

impl<T: Send> Lot<T> {
    /// An empty lot with its own epoll set.
    ///
    /// # Errors
    /// If the epoll set cannot be made or registered with the reactor.
    pub(super) fn new() -> io::Result<Lot<T>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // SAFETY: `EpollFd` owns the set's descriptor, which stays open, and is the one its
        // `as_raw_fd` gives, for as long as the `AsyncFd` holds it.
        let epoll = unsafe { AsyncFd::register_with_interest(EpollFd(epoll), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Lot {
            epoll,
            spaces: Mutex::new(Spaces {
                parked: Slab::new(),
                deadlines: BinaryHeap::new(),
                open: true,
            }),
            sooner: Notify::new(),
            untrimmed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Spaces<T>> {
        self.spaces.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks `stream` until its peer sends (or closes) or `until` passes. Gives it back
    /// (on the runtime again) if the epoll set will not take it, to be served as before;
    /// once the lot has closed, it is closed.
    pub(super) fn park(&self, stream: Stream, until: Instant, value: T) -> Option<(Stream, T)> {
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                debug!(error = %e, "cannot take the idle connection off the runtime; closed");
                return None;
            }
        };
        let mut guard = self.lock();
        let spaces = &mut *guard;
        if !spaces.open {
            return None;
        }
        if spaces.parked.len() == spaces.parked.capacity() {
            spaces.parked.reserve_exact(growth(spaces.parked.len()));
        }
        let key = spaces.parked.vacant_key();
        // Level-triggered: bytes that came before it was added are told at once. A peer's
        // close is readable too.
        let event = EpollEvent::new(EpollFlags::EPOLLIN, key as u64);
        if let Err(e) = self.epoll.get_ref().0.add(&stream, event) {
            drop(guard);
            debug!(error = %e, "cannot park the idle connection; it waits in its task");
            return stream.into_stream().ok().map(|stream| (stream, value));
        }
        let soonest = spaces.soonest().is_none_or(|at| until < at);
        spaces.parked.insert(Parked {
            stream,
            until,
            value,
        });
        if spaces.deadlines.len() == spaces.deadlines.capacity() {
            spaces
                .deadlines
                .reserve_exact(growth(spaces.deadlines.len()));
        }
        spaces.deadlines.push(Reverse((until, key)));
        drop(guard);
        let first_untrimmed = !self.untrimmed.swap(true, Ordering::Relaxed);
        if soonest || first_untrimmed {
            self.sooner.notify_one();
        }
        None
    }

    /// Watches the parked connections until `shutdown` fires: each whose peer sends is given
    /// to `resume` with its deadline, each whose deadline passes is closed. At shutdown all
    /// still parked are closed (they are idle) and nothing parks any more.
    pub(super) async fn run(
        &self,
        shutdown: &CancellationToken,
        mut resume: impl FnMut(Stream, Instant, T),
    ) {
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
        let mut woken = Vec::new();
        let mut trim_at = None;
        loop {
            if trim_at.is_none() && self.untrimmed.load(Ordering::Relaxed) {
                trim_at = Some(Instant::now() + TRIM_AFTER);
            }
            let soonest = self.lock().soonest();
            let expiry = sleep_until(soonest);
            let trim = sleep_until(trim_at);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                ready = self.epoll.readable() => match ready {
                    Ok(mut guard) => {
                        if !self.take_woken(&mut events, &mut woken) {
                            // Anything parked or woken since is a new edge: not lost.
                            guard.clear_ready();
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "the idle connections' watch failed; they are closed");
                        break;
                    }
                },
                () = expiry => self.expire(Instant::now()),
                () = trim => {
                    trim_at = None;
                    self.untrimmed.store(false, Ordering::Relaxed);
                    give_back_free_memory();
                }
                () = self.sooner.notified() => {}
            }
            for parked in woken.drain(..) {
                match parked.stream.into_stream() {
                    Ok(stream) => resume(stream, parked.until, parked.value),
                    Err(e) => {
                        debug!(error = %e, "cannot serve the parked connection again; closed")
                    }
                }
            }
        }
        self.close();
    }

    /// Takes the connections whose peers sent out of the lot into `woken`; true if there
    /// may be more than one wait's worth.
    fn take_woken(&self, events: &mut [EpollEvent], woken: &mut Vec<Parked<T>>) -> bool {
        let mut spaces = self.lock();
        let epoll = &self.epoll.get_ref().0;
        let n = match epoll.wait(events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e, "waiting on the idle connections failed");
                return false;
            }
        };
        for event in &events[..n] {
            let Ok(key) = usize::try_from(event.data()) else {
                continue;
            };
            woken.extend(spaces.remove(key, epoll));
        }
        n == events.len()
    }

    /// Closes the connections whose deadline is `now` or before.
    fn expire(&self, now: Instant) {
        let mut expired = Vec::new();
        let mut spaces = self.lock();
        while let Some(&Reverse((at, key))) = spaces.deadlines.peek() {
            if at > now {
                break;
            }
            spaces.deadlines.pop();
            if spaces.parked.get(key).is_some_and(|p| p.until == at) {
                expired.extend(spaces.remove(key, &self.epoll.get_ref().0));
            }
        }
        drop(spaces);
        if !expired.is_empty() {
            debug!(
                connections = expired.len(),
                "idle connections closed at their deadline"
            );
        }
    }

    /// Closes every parked connection; nothing parks after this.
    pub(super) fn close(&self) {
        let mut spaces = self.lock();
        spaces.open = false;
        spaces.deadlines.clear();
        let parked = std::mem::take(&mut spaces.parked);
        drop(spaces);
        drop(parked);
    }

    /// How many connections are parked.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().parked.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    use super::*;

    type Resumed = mpsc::UnboundedReceiver<(Stream, Instant, u32)>;

    /// A lot watched by a task that sends each resumed connection to the returned channel.
    fn watched(
        shutdown: &CancellationToken,
    ) -> (Arc<Lot<u32>>, Resumed, tokio::task::JoinHandle<()>) {
        let lot = Arc::new(Lot::new().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let run = tokio::spawn({
            let lot = Arc::clone(&lot);
            let shutdown = shutdown.clone();
            async move {
                lot.run(&shutdown, |stream, until, value| {
                    let _ = tx.send((stream, until, value));
                })
                .await;
            }
        });
        (lot, rx, run)
    }

    /// Whether `peer` reads the end of the stream (its other end was closed) within two
    /// hours of the paused clock, which passes at once when nothing else is to be done.
    async fn closed(peer: &mut Stream) -> bool {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(7200), peer.read(&mut byte));
        matches!(read.await, Ok(Ok(0)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_connection_goes_back_when_its_peer_sends_and_keeps_its_deadline() {
        let shutdown = CancellationToken::new();
        let (lot, mut resumed, _run) = watched(&shutdown);
        let (server, mut client) = Stream::pair().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        assert!(lot.park(server, until, 7).is_none());
        assert_eq!(lot.len(), 1);
        client.write_all(b"x").await.unwrap();
        let (mut server, at, value) = resumed.recv().await.unwrap();
        assert_eq!((at, value), (until, 7));
        assert_eq!(lot.len(), 0);
        // The stream is whole and on the runtime again.
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
        server.write_all(b"y").await.unwrap();
        client.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"y");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_parked_with_a_sooner_deadline_is_closed_at_it_and_not_the_others() {
        let shutdown = CancellationToken::new();
        let (lot, mut resumed, _run) = watched(&shutdown);
        let start = Instant::now();
        let (late, mut late_peer) = Stream::pair().unwrap();
        assert!(lot.park(late, start + Duration::from_secs(10), 1).is_none());
        // The lot is asleep until the later deadline when the sooner one parks.
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Sooner than the lot's next wake for any other reason (the allocator's trim).
        let soon_after = TRIM_AFTER / 10;
        let (soon, mut soon_peer) = Stream::pair().unwrap();
        assert!(lot.park(soon, start + soon_after, 2).is_none());
        assert!(closed(&mut soon_peer).await);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= soon_after && elapsed < soon_after * 2,
            "closed after {elapsed:?}"
        );
        assert_eq!(lot.len(), 1, "the later one was closed too");
        assert!(closed(&mut late_peer).await);
        assert!(start.elapsed() >= Duration::from_secs(10));
        assert!(
            resumed.try_recv().is_err(),
            "a closed peer's connection was resumed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_left_stale_by_resumed_connections_stay_bounded() {
        let shutdown = CancellationToken::new();
        let (lot, mut resumed, _run) = watched(&shutdown);
        // Parked throughout with the soonest deadline: the stale ones are never at the
        // front, where they would be dropped as met.
        let (anchor, _anchor_peer) = Stream::pair().unwrap();
        let sooner = Instant::now() + Duration::from_secs(5);
        assert!(lot.park(anchor, sooner, u32::MAX).is_none());
        let (mut server, mut client) = Stream::pair().unwrap();
        for round in 0..1_000u32 {
            let until = Instant::now() + Duration::from_secs(10);
            assert!(lot.park(server, until, round).is_none());
            client.write_all(b"x").await.unwrap();
            let (back, _, value) = resumed.recv().await.unwrap();
            assert_eq!(value, round);
            server = back;
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.unwrap();
            let kept = lot.lock().deadlines.len();
            assert!(
                kept <= 2 * lot.len() + MIN_GROWTH + 1,
                "{kept} deadlines kept for {} parked",
                lot.len()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lot_emptied_after_a_burst_gives_back_what_it_grew() {
        let shutdown = CancellationToken::new();
        let (lot, mut resumed, _run) = watched(&shutdown);
        let until = Instant::now() + Duration::from_secs(10);
        let mut clients = Vec::new();
        for i in 0..2 * MIN_GROWTH as u32 {
            let (server, client) = Stream::pair().unwrap();
            assert!(lot.park(server, until, i).is_none());
            clients.push(client);
        }
        assert!(lot.lock().parked.capacity() > MIN_GROWTH);
        for client in &mut clients {
            client.write_all(b"x").await.unwrap();
        }
        for _ in 0..clients.len() {
            resumed.recv().await.unwrap();
        }
        let spaces = lot.lock();
        assert_eq!(spaces.parked.len(), 0);
        assert_eq!(spaces.parked.capacity(), 0, "the burst's slab was kept");
        assert_eq!(
            spaces.deadlines.capacity(),
            0,
            "the burst's deadlines were kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_every_parked_connection_is_closed_and_none_parks_after() {
        let shutdown = CancellationToken::new();
        let (lot, _resumed, run) = watched(&shutdown);
        let far = Instant::now() + Duration::from_secs(3600);
        let (a, mut a_peer) = Stream::pair().unwrap();
        let (b, mut b_peer) = Stream::pair().unwrap();
        assert!(lot.park(a, far, 1).is_none());
        assert!(lot.park(b, far, 2).is_none());
        shutdown.cancel();
        run.await.unwrap();
        assert!(closed(&mut a_peer).await);
        assert!(closed(&mut b_peer).await);
        let (c, mut c_peer) = Stream::pair().unwrap();
        assert!(lot.park(c, far, 3).is_none());
        assert_eq!(lot.len(), 0);
        assert!(closed(&mut c_peer).await);
    }
}
