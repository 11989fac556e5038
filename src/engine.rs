//! The engine: Python `socketserver`'s family on tokio. `serve` runs a bound stream listener
//! and `serve_datagram` a datagram socket until a shutdown token fires, with connection
//! limits, access lists, idle timeouts, accept-error backoff and a bounded drain.
//!
//! ```no_run
//! use sockit::net::{Addr, BindOptions, Listener};
//! use sockit::engine::{serve, Config};
//! use sockit::service::echo::Echo;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> std::io::Result<()> {
//! let addr: Addr = "127.0.0.1:0".parse().unwrap();
//! let listener = Listener::bind(&addr, &BindOptions::default()).await?;
//! let shutdown = CancellationToken::new();
//! serve(listener, Echo::default(), Config::default(), shutdown).await?;
//! # Ok(()) }
//! ```

mod child;
mod datagram;
mod idle;
mod lot;
pub(crate) mod process;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::net::source::{SourceCounts, SourceSlot};
use crate::net::{Acl, Addr, Listener, PeerAddr, Stream};
use lot::Lot;

pub use child::{is_child, serve_if_child, serve_if_child_blocking, CHILD_ENV};

pub use datagram::{serve_datagram, DatagramHandler};
pub use idle::{IdleTimeout, WaitDeadline};
pub(crate) use process::set_command_env;
pub use process::{run as run_process, ProcessCommand};
pub(crate) use process::{with_default_signals, ProcessGroup};

/// Default cap on concurrent connections (`max_conns`).
pub const DEFAULT_MAX_CONNS: usize = 10_000;

/// Default cap on live connections from one source address (an IPv6 /64); `127.0.0.1`,
/// `::1` and Unix peers, which every local client shares, are not counted.
pub const DEFAULT_MAX_CONNS_PER_SOURCE: usize = 64;
/// Default idle timeout: a connection with no progress for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time handlers get to finish after shutdown before they are cancelled.
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause after an accept error such as EMFILE; doubles up to [`MAX_ACCEPT_BACKOFF`].
pub(crate) const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while resources are exhausted.
pub(crate) const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How connections are scheduled, after Python's socketserver mix-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// One connection at a time; the rest wait in the kernel backlog (`TCPServer`).
    Sequential,
    /// A task per connection or datagram, up to `max_conns` (`ThreadingMixIn`).
    #[default]
    Concurrent,
    /// A child process per connection with the socket as its stdin and stdout
    /// (`ForkingMixIn`, inetd, `ncat --exec`); the command comes from
    /// [`Handler::process_command`]: another program, or this one again serving the handler
    /// itself ([`ProcessCommand::reexec`] and [`serve_if_child`]).
    Process,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sequential" => Ok(Mode::Sequential),
            "concurrent" => Ok(Mode::Concurrent),
            "process" => Ok(Mode::Process),
            _ => Err(format!(
                "unknown mode {s:?} (expected sequential, concurrent or process)"
            )),
        }
    }
}

/// Engine settings. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Service name, recorded on every connection's span.
    pub service: String,
    /// Scheduling mode.
    pub mode: Mode,
    /// Connections served at once; further clients wait in the backlog.
    pub max_conns: usize,
    /// Live connections from one source at once (see [`DEFAULT_MAX_CONNS_PER_SOURCE`]); a
    /// connection beyond it is closed at once.
    pub max_conns_per_source: usize,
    /// Close a connection after this long without progress (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// How long handlers may run after shutdown before they are cancelled.
    pub drain_timeout: Duration,
    /// Which peers are served; a denied peer is closed at once.
    pub acl: Acl,
    /// Largest datagram accepted; longer ones are dropped as truncated.
    pub max_datagram: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service: "sockit".to_string(),
            mode: Mode::Concurrent,
            max_conns: DEFAULT_MAX_CONNS,
            max_conns_per_source: DEFAULT_MAX_CONNS_PER_SOURCE,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            acl: Acl::default(),
            max_datagram: datagram::DEFAULT_MAX_DATAGRAM,
        }
    }
}

/// What a handler knows about its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: PeerAddr,
    /// The local address the connection arrived on.
    pub local: Addr,
    /// Fires when the server starts shutting down: finish up and return.
    pub shutdown: CancellationToken,
}

impl ConnInfo {
    /// What a handler is told about a connection from `peer` arriving on `local`; `shutdown`
    /// fires when the server shuts down. The engine builds these; tests build their own.
    pub fn new(peer: PeerAddr, local: Addr, shutdown: CancellationToken) -> Self {
        ConnInfo {
            peer,
            local,
            shutdown,
        }
    }
}

/// The stream a handler gets: the connection, with the idle timeout applied.
pub type Conn = IdleTimeout<Stream>;

/// A connection with the default idle timeout ([`DEFAULT_IDLE_TIMEOUT`]), as the engine
/// builds one with `Config::default()`: for calling a handler directly, e.g. over
/// [`Stream::pair`]. Needs a tokio runtime (the timeout is a tokio timer).
impl From<Stream> for Conn {
    fn from(stream: Stream) -> Self {
        IdleTimeout::new(stream, DEFAULT_IDLE_TIMEOUT)
    }
}

/// How a handler's turn with a connection ended ([`Handler::handle_parkable`]).
#[derive(Debug)]
pub enum Handled {
    /// The connection is done: closed by either side, or failed.
    Done(io::Result<()>),
    /// The connection is idle, waiting for its peer to speak, and nothing it sent is held
    /// unserved. The engine keeps it without a task until the peer sends (or closes): then
    /// it is handed to [`Handler::handle_parkable`] again, like a new connection but with
    /// its [`WaitDeadline`] already set to this deadline. It is closed when the deadline
    /// (or the idle timeout) passes first, or when the server shuts down.
    Park(Conn, Instant),
}

/// Serves one connection (`BaseRequestHandler.handle()`).
pub trait Handler: Send + Sync + 'static {
    /// Handles one connection. An error ends only this connection and is logged with the peer.
    fn handle(&self, conn: Conn, info: ConnInfo) -> impl Future<Output = io::Result<()>> + Send;

    /// Handles one connection, or one turn of it, as the engine calls it: a handler whose
    /// connections sit idle between requests (HTTP keep-alive) can hand an idle one back with
    /// [`Handled::Park`], so that it holds no task, buffers or timers while it waits. The
    /// default serves the whole connection with [`Handler::handle`].
    fn handle_parkable(&self, conn: Conn, info: ConnInfo) -> impl Future<Output = Handled> + Send {
        let handled = self.handle(conn, info);
        async move { Handled::Done(handled.await) }
    }

    /// The command that serves one connection in [`Mode::Process`], with the socket as its
    /// stdin and stdout; `None` (the default) if this handler cannot run as a process.
    ///
    /// `ProcessCommand::reexec().ok()` runs this handler itself in a copy of the program,
    /// when the program's `main` calls [`serve_if_child_blocking`] (or [`serve_if_child`])
    /// with it. That is not the default: the engine cannot tell whether `main` does, and a copy
    /// whose `main` does not would start the whole program again for each connection.
    fn process_command(&self) -> Option<ProcessCommand> {
        None
    }
}

/// One handler value shared: `serve(listener, Arc::clone(&handler), ...)` serves with the
/// handler the caller keeps (to read its counters, say, or to serve it on several listeners).
impl<H: Handler> Handler for Arc<H> {
    fn handle(&self, conn: Conn, info: ConnInfo) -> impl Future<Output = io::Result<()>> + Send {
        (**self).handle(conn, info)
    }

    fn handle_parkable(&self, conn: Conn, info: ConnInfo) -> impl Future<Output = Handled> + Send {
        (**self).handle_parkable(conn, info)
    }

    fn process_command(&self) -> Option<ProcessCommand> {
        (**self).process_command()
    }
}

/// Serves `listener` with `handler` until `shutdown` is cancelled, then drains.
///
/// Shutdown: accepting stops at once, handlers see `ConnInfo::shutdown` fire, they get up to
/// `config.drain_timeout` to finish, then the rest are cancelled.
///
/// # Errors
/// Only if the configuration cannot work (e.g. `Mode::Process` with a handler that has no
/// process form). Accept errors are retried with backoff, never returned.
pub async fn serve<H: Handler>(
    listener: Listener,
    handler: H,
    config: Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let process = match config.mode {
        Mode::Process => Some(Arc::new(handler.process_command().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("service {} cannot run in process mode", config.service),
            )
        })?)),
        _ => None,
    };
    let local = listener.local_addr()?;
    let engine = Arc::new(Engine {
        handler,
        process,
        config,
        local,
        shutdown: shutdown.clone(),
        force: CancellationToken::new(),
        tracker: TaskTracker::new(),
        lot: OnceLock::new(),
        watching: std::sync::Mutex::new(None),
    });
    engine.accept_loop(&listener).await;
    drop(listener);
    engine.drain().await;
    Ok(())
}

struct Engine<H> {
    handler: H,
    process: Option<Arc<ProcessCommand>>,
    config: Config,
    local: Addr,
    shutdown: CancellationToken,
    /// Cancelled when the drain deadline passes: handlers still running are dropped.
    force: CancellationToken,
    /// The connections' tasks.
    tracker: TaskTracker,
    /// Where idle connections the handler hands back wait ([`Handled::Park`]): made, and
    /// its watch started, when the first one parks; none if it could not be made.
    lot: OnceLock<Option<Lot<Held>>>,
    /// The lot's watch, awaited by the drain.
    watching: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What a connection holds while it lives, parked or not: its source's place and its
/// permit. (A parked one's peer address is asked of its socket again: the lot keeps as
/// little as it can.)
type Held = (Option<SourceSlot>, OwnedSemaphorePermit);

impl<H: Handler> Engine<H> {
    async fn accept_loop(self: &Arc<Self>, listener: &Listener) {
        let limit = match self.config.mode {
            Mode::Sequential => 1,
            _ => self.config.max_conns.max(1),
        };
        let permits = Arc::new(Semaphore::new(limit));
        let sources = SourceCounts::new(self.config.max_conns_per_source);
        let mut backoff = MIN_ACCEPT_BACKOFF;
        let cancelled = self.shutdown.cancelled();
        tokio::pin!(cancelled);
        loop {
            // The permit is taken before accept so that clients beyond the limit wait in the
            // kernel backlog instead of being accepted and parked.
            let permit = tokio::select! {
                biased;
                _ = &mut cancelled => return,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                biased;
                _ = &mut cancelled => return,
                res = listener.accept() => res,
            };
            let (stream, peer) = match accepted {
                Ok(conn) => {
                    backoff = MIN_ACCEPT_BACKOFF;
                    conn
                }
                Err(e) => {
                    if !self.back_off(&e, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            if !self.config.acl.permits(&peer) {
                warn!(service = %self.config.service, %peer, "denied by access list");
                continue;
            }
            let Ok(source) = sources.enter(peer.ip()) else {
                warn!(service = %self.config.service, %peer, cap = self.config.max_conns_per_source, "refused: too many connections from this source");
                continue;
            };
            // Sequential mode is the same path with one permit: the next accept waits until
            // this connection is done, and shutdown drains it like any other.
            let task = self.connection_task(stream, peer, (source, permit), None);
            self.tracker.spawn(task);
        }
    }

    /// Sleeps after an accept error when it means resources ran out; returns false if
    /// shutdown fired meanwhile.
    ///
    /// Per-connection failures (the peer reset before accept completed) are retried at once;
    /// EMFILE, ENFILE, ENOBUFS and ENOMEM would otherwise spin: the pending connection stays
    /// in the backlog and accept fails again immediately.
    async fn back_off(&self, e: &io::Error, backoff: &mut Duration) -> bool {
        let resource = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if !resource {
            debug!(service = %self.config.service, error = %e, "accept failed");
            return true;
        }
        warn!(service = %self.config.service, error = %e, pause = ?*backoff, "accept failed; backing off");
        let pause = *backoff;
        *backoff = (*backoff * 2).min(MAX_ACCEPT_BACKOFF);
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    /// The future that serves one accepted connection, or a parked one again (`resumed`:
    /// its deadline), catching errors and panics; `held` (its permit and its source's
    /// place) is let go when it ends, or goes with it when it parks.
    ///
    /// It is the task itself, not awaited inside another: a wrapping `async` block kept
    /// room for this future twice (once as its capture, once as what it awaits), which made
    /// an HTTP connection's task 3.8 KB (heaptrack) where it is now under 2 KB.
    fn connection_task(
        self: &Arc<Self>,
        stream: Stream,
        peer: PeerAddr,
        held: Held,
        resumed: Option<Instant>,
    ) -> impl Future<Output = ()> {
        let span = info_span!("conn", service = %self.config.service, peer = %peer);
        let info = ConnInfo::new(peer, self.local.clone(), self.shutdown.clone());
        let engine = Arc::clone(self);
        async move {
            if resumed.is_none() {
                debug!("accepted");
            }
            let idle = engine.config.idle_timeout;
            let work = async {
                match &engine.process {
                    // Boxed: the process future is large, and inlining it would make every
                    // connection's task that size, process mode or not.
                    Some(cmd) => {
                        Handled::Done(Box::pin(process::run(cmd, stream, &info, idle)).await)
                    }
                    None => {
                        let mut conn = IdleTimeout::optional(stream, idle);
                        if let Some(until) = resumed {
                            conn.wait_deadline().set(until);
                        }
                        engine.handler.handle_parkable(conn, info).await
                    }
                }
            };
            let outcome = tokio::select! {
                res = CatchUnwind(AssertUnwindSafe(work)) => res,
                () = engine.force.cancelled() => {
                    warn!("cancelled at the drain deadline");
                    return;
                }
            };
            match outcome {
                Ok(Handled::Done(served)) => log_outcome(&served),
                Ok(Handled::Park(conn, until)) => engine.park(conn.into_inner(), until, held),
                Err(panic) => warn!(panic = panic_message(&panic), "handler panicked"),
            }
        }
        .instrument(span)
    }

    /// Parks an idle connection its handler handed back until its peer sends (then a new
    /// task serves it) or `until`, at the latest the idle timeout from now (then it is
    /// closed). At shutdown it is closed at once: it is idle.
    fn park(self: &Arc<Self>, stream: Stream, until: Instant, held: Held) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let until = match self.config.idle_timeout {
            Some(idle) => until.min(Instant::now() + idle),
            None => until,
        };
        let back = match self.lot() {
            Some(lot) => lot.park(stream, until, held),
            None => Some((stream, held)),
        };
        // Not parked: it waits for its peer in a task, as without a lot.
        if let Some((stream, held)) = back {
            self.resume(stream, held, until);
        }
    }

    /// Serves a parked connection again, in a new task, under its deadline `until`.
    fn resume(self: &Arc<Self>, stream: Stream, held: Held, until: Instant) {
        // Gone already (reset) if its peer is unknown: nothing to serve.
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let task = self.connection_task(stream, peer, held, Some(until));
        self.tracker.spawn(task);
    }

    /// The lot, made and its watch started at the first call; none if it cannot be made.
    fn lot(self: &Arc<Self>) -> Option<&Lot<Held>> {
        let mut made = false;
        let lot = self.lot.get_or_init(|| {
            made = true;
            Lot::new()
                .inspect_err(|e| warn!(service = %self.config.service, error = %e, "idle connections cannot be parked; each waits in its task"))
                .ok()
        });
        if made && lot.is_some() {
            // Not among the connections' tasks (it is not one): it ends at shutdown, and
            // the drain waits for it.
            let watch = tokio::spawn(Arc::clone(self).watch_lot());
            *self.watching.lock().unwrap_or_else(PoisonError::into_inner) = Some(watch);
        }
        lot.as_ref()
    }

    /// Watches the lot until shutdown, serving again each parked connection whose peer sends.
    async fn watch_lot(self: Arc<Self>) {
        let Some(Some(lot)) = self.lot.get() else {
            return;
        };
        lot.run(&self.shutdown, |stream, until, held| {
            self.resume(stream, held, until);
        })
        .await;
    }

    async fn drain(&self) {
        // Parked connections are idle: closed now, and nothing parks from here on.
        if let Some(Some(lot)) = self.lot.get() {
            lot.close();
        }
        let watch = self
            .watching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(watch) = watch {
            // It ends at shutdown, which has fired.
            let _ = watch.await;
        }
        self.tracker.close();
        if self.tracker.is_empty() {
            return;
        }
        info!(
            service = %self.config.service,
            connections = self.tracker.len(),
            deadline = ?self.config.drain_timeout,
            "draining"
        );
        if tokio::time::timeout(self.config.drain_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(service = %self.config.service, remaining = self.tracker.len(), "drain deadline passed; closing the rest");
            self.force.cancel();
            self.tracker.wait().await;
        }
    }
}

/// Logs how a handler ended, in the connection's span: quietly when the peer just left.
fn log_outcome(served: &io::Result<()>) {
    match served {
        Ok(()) => debug!("closed"),
        Err(e) if is_disconnect(e) => debug!(error = %e, "peer went away"),
        Err(e) => info!(error = %e, "connection ended with an error"),
    }
}

/// Errors that only mean the peer left: logged quietly.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// Polls a future, turning a panic inside it into an `Err` so it ends only its connection.
struct CatchUnwind<F>(AssertUnwindSafe<F>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the inner future is never moved out of the pinned wrapper.
        let fut = unsafe { self.map_unchecked_mut(|s| &mut s.0 .0) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Cancels the returned token on SIGINT or SIGTERM, for binaries: the server stops accepting
/// and drains. A second SIGINT or SIGTERM exits the process at once with status 128 + the
/// signal's number (130 or 143), as nginx, ssh and cargo do, for a drain the user will not wait
/// for.
///
/// # Errors
/// If the signal handlers cannot be installed.
pub fn shutdown_on_signals() -> io::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let t = token.clone();
    tokio::spawn(async move {
        // Cancel before logging: a log line must never stand between a signal and shutdown.
        let first = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        t.cancel();
        info!("{first}: shutting down; a second signal exits at once");
        let code = tokio::select! {
            _ = int.recv() => 128 + nix::sys::signal::Signal::SIGINT as i32,
            _ = term.recv() => 128 + nix::sys::signal::Signal::SIGTERM as i32,
        };
        warn!("second signal: exiting without waiting for the drain");
        std::process::exit(code);
    });
    Ok(token)
}
