//! The server half: TLS (optional) and the session handshake in the connection's task, then
//! the request loop of [`requests`](super::requests); plus the one-shot form behind `recv`.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::hash::HashAlg;
use super::progress::Progress;
use super::requests::Session;
use super::store::{Store, StoreError, StoreOptions, DEFAULT_PARTIAL_MAX_AGE};
use super::sweep::{cap, sweep, PartialSweeper, PARTIAL_SWEEP_INTERVAL};
use crate::engine::ConnInfo;
use crate::session::{FramedService, Gated, ServerStream};
use crate::wire::Connection;

/// Deadline for the next request once a session is open (the engine's idle timeout also bounds
/// a stalled body).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Default cap on concurrent file sessions (each holds a few MiB of buffers and a disk thread).
pub const DEFAULT_MAX_FILES_CONNS: usize = 256;

/// How long a closing session waits for the client to close first, so unread client bytes
/// do not turn the close into a reset that could eat the last frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Which requests a server honours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Access {
    /// Everything.
    #[default]
    ReadWrite,
    /// `list`, `get`, `fetch` only: `put` and `mkdir` are refused with `read_only`.
    ReadOnly,
    /// `put`, `probe` and `mkdir` only: `list`, `get`, `fetch` are refused with `write_only`.
    WriteOnly,
}

/// Server settings of the file service.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// The directory files are received into and served from (created if missing).
    pub root: PathBuf,
    /// Collision policy and size cap.
    pub store: StoreOptions,
    /// Which requests are honoured.
    pub access: Access,
    /// Digests accepted from clients.
    pub hashes: Vec<HashAlg>,
    /// Deadline for each next request.
    pub request_timeout: Duration,
    /// Partial files (kept for resume) untouched this long are removed when the server
    /// starts and then at most hourly; `None` keeps them forever. (Their total size is
    /// capped apart from this: `store.partial_max_total`.)
    pub partial_max_age: Option<Duration>,
    /// Advanced as uploaded files arrive, restarted per file (hidden by default; `recv` shows
    /// it). Meant for a one-session server: concurrent uploads would share one bar.
    pub progress: Progress,
}

impl FilesConfig {
    /// Defaults for a server rooted at `root`: refuse collisions, read-write, both digests.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FilesConfig {
            root: root.into(),
            store: StoreOptions::default(),
            access: Access::default(),
            hashes: vec![HashAlg::Blake3, HashAlg::Sha256],
            request_timeout: REQUEST_TIMEOUT,
            partial_max_age: Some(DEFAULT_PARTIAL_MAX_AGE),
            progress: Progress::hidden(),
        }
    }
}

/// How one authenticated session went, for logs and for `recv`'s exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSummary {
    /// Files stored (or sent, for `get`).
    pub done: u64,
    /// Directories made.
    pub dirs: u64,
    /// Requests rejected.
    pub rejected: u64,
    /// Body bytes received and sent.
    pub bytes: u64,
    /// The code of the error that ended the session, if it did not end cleanly.
    pub failure: Option<String>,
}

impl SessionSummary {
    /// No request rejected and a clean end.
    pub fn success(&self) -> bool {
        self.rejected == 0 && self.failure.is_none()
    }
}

/// The file service: the request loop of one authenticated session. Serve it behind a gate
/// ([`super::gate`]): [`FilesServer`].
#[derive(Debug)]
pub struct FilesService {
    pub(super) config: FilesConfig,
    pub(super) store: Arc<Store>,
    sweeper: PartialSweeper,
}

/// The file service behind its gate: the engine's handler.
pub type FilesServer = Gated<FilesService>;

/// What a session runs over: a plain connection, or TLS around it.
pub(super) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

impl FilesService {
    /// The service for `config`. Put it behind a gate with a token beyond loopback: without
    /// one, the gate refuses connections that arrive on a non-loopback address anyway.
    ///
    /// Partial files older than `config.partial_max_age` are removed here, before serving.
    ///
    /// # Errors
    /// The root directory cannot be created or opened.
    pub fn new(config: FilesConfig) -> Result<Self, StoreError> {
        let store = Store::open(&config.root, config.store.clone())?;
        match config.partial_max_age {
            Some(max_age) => sweep(&store, max_age),
            None => cap(&store),
        }
        let next_sweep = std::time::Instant::now() + PARTIAL_SWEEP_INTERVAL;
        Ok(FilesService {
            sweeper: PartialSweeper::new(config.partial_max_age, next_sweep),
            config,
            store: Arc::new(store),
        })
    }

    /// Serves one authenticated session's requests and logs its summary.
    pub(crate) async fn serve_session(
        &self,
        mut framed: Connection<ServerStream>,
        info: &ConnInfo,
    ) -> SessionSummary {
        self.sweeper.spawn_if_due(&self.store);
        framed.set_read_buffer_bytes(super::transfer::CHUNK_BYTES);
        let mut session = Session::new(self, framed, info);
        let summary = session.run().await;
        let status = summary.failure.as_deref().unwrap_or("ok");
        info!(peer = %info.peer, service = "files", done = summary.done, dirs = summary.dirs, rejected = summary.rejected,
            bytes = summary.bytes, status, "files session");
        summary
    }
}

impl FramedService for FilesService {
    async fn serve(&self, framed: Connection<ServerStream>, info: ConnInfo) -> io::Result<()> {
        self.serve_session(framed, &info).await;
        Ok(())
    }
}

/// `recv`: a [`FilesService`] that serves one authenticated session, then fires `done`.
/// Any other session, while that one runs or after, is told at once that the receiver is busy
/// (an error frame with code `busy`), instead of waiting in the backlog to be reset when the
/// receiver exits. Run it behind a gate with
/// [`Mode::Concurrent`](crate::engine::Mode::Concurrent) (a few connections, so the refusals
/// are prompt) and `done` (or a child of it) as the engine's shutdown token.
#[derive(Debug)]
pub struct OneShot {
    service: FilesService,
    done: CancellationToken,
    /// Whether a session has been taken: the first to set it is the one served.
    taken: AtomicBool,
    outcome: Mutex<Option<SessionSummary>>,
}

/// The refusal a second sender gets from a [`OneShot`] receiver.
pub(crate) const BUSY_MESSAGE: &str = "the receiver is busy: it is already receiving from \
     another sender (sockit recv takes one sender, then exits); try again once it is done";

/// Deadline for telling a second sender that the receiver is busy.
const BUSY_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

impl OneShot {
    /// Wraps `service`; `done` fires when the first session ends.
    pub fn new(service: FilesService, done: CancellationToken) -> Self {
        OneShot {
            service,
            done,
            taken: AtomicBool::new(false),
            outcome: Mutex::new(None),
        }
    }

    /// The first session's summary, once it has ended.
    pub fn outcome(&self) -> Option<SessionSummary> {
        self.outcome.lock().ok().and_then(|o| o.clone())
    }
}

impl FramedService for OneShot {
    async fn serve(&self, framed: Connection<ServerStream>, info: ConnInfo) -> io::Result<()> {
        if self.taken.swap(true, Ordering::AcqRel) {
            info!(peer = %info.peer, service = "files", "refused: busy with another sender");
            refuse_busy(framed).await;
            return Ok(());
        }
        let summary = self.service.serve_session(framed, &info).await;
        if let Ok(mut outcome) = self.outcome.lock() {
            outcome.get_or_insert(summary);
        }
        self.done.cancel();
        Ok(())
    }
}

/// Tells a sender the receiver is busy, then closes as a session does.
async fn refuse_busy(mut framed: Connection<ServerStream>) {
    let frame = super::messages::ServerMessage::Error {
        code: "busy".into(),
        message: BUSY_MESSAGE.into(),
    };
    let told = tokio::time::timeout(BUSY_WRITE_TIMEOUT, framed.write_frame(&frame, &[])).await;
    if matches!(told, Ok(Ok(()))) {
        close(&mut framed).await;
    }
}

/// Half-closes after the last frame and lets the client close first, for at most
/// [`CLOSE_LINGER`].
pub(super) async fn close<S: Stream>(framed: &mut Connection<S>) {
    let stream = framed.get_mut();
    let _ = stream.shutdown().await;
    let discard = async {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, discard).await;
}
