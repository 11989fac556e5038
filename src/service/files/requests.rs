//! One authenticated session's request loop: each request answered in order, `rejected` for a
//! refused request, `error` and close for a broken conversation.

use std::sync::Arc;

use tokio::time::{timeout_at, Instant};
use tracing::info;

use super::hash::HashAlg;
use super::messages::{ClientMessage, FileHeader, ServerMessage};
use super::server::{close, Access, FilesService, SessionSummary, Stream};
use super::store::{FileMeta, Partial, Policy, RelPath, Store, StoreError, Stored};
use super::transfer::{receive_file, skip_file, ReceiveError, MAX_DISCARD_BYTES};
use super::Rejection;
use crate::engine::ConnInfo;
use crate::text::escape_one_line;
use crate::wire::{Connection, WireError};

mod batch;
mod reading;

/// Longest escaped path kept in a log line.
const LOG_PATH_CHARS: usize = 300;

/// Why a session stops.
enum Stop {
    /// The client closed cleanly between requests.
    Closed,
    /// The connection broke; nothing more can be said.
    Broken,
    /// Tell the client why, then close.
    Fatal(Rejection),
}

/// What a probe found to offer.
enum Offer {
    /// A partial copy to resume from, if any.
    Resume(Option<Box<(RelPath, Partial)>>),
    /// Under the refuse policy, a file of the probed size holds the name: its digest.
    Existing(String),
}

/// What one file request came to, for its log line.
struct FileLog<'a> {
    op: &'static str,
    path: &'a str,
    size: u64,
    started: Instant,
}

/// A session's state: the connection and the prefix offered by the last `probe`.
pub(super) struct Session<'a, S> {
    server: &'a FilesService,
    conn: Connection<S>,
    info: &'a ConnInfo,
    probed: Option<(RelPath, Partial)>,
    /// Small `put`s received and not yet stored or answered.
    batch: batch::Batch,
    /// The batch before it, being stored on a disk thread, its answers not yet sent.
    storing: Option<batch::Storing>,
    summary: SessionSummary,
    /// Whether shutdown found the session in the middle of a request (then it drains).
    idle_at_shutdown_checked: bool,
}

impl<'a, S: Stream> Session<'a, S> {
    pub(super) fn new(server: &'a FilesService, conn: Connection<S>, info: &'a ConnInfo) -> Self {
        Session {
            server,
            conn,
            info,
            probed: None,
            batch: batch::Batch::default(),
            storing: None,
            summary: SessionSummary::default(),
            idle_at_shutdown_checked: false,
        }
    }

    /// Answers requests until the client closes or the conversation breaks.
    pub(super) async fn run(&mut self) -> SessionSummary {
        let stop = loop {
            if let Err(stop) = self.next_request().await {
                break stop;
            }
        };
        // What was received whole is stored whatever ended the session; answered only if the
        // connection can still carry answers.
        let answer = !matches!(stop, Stop::Broken);
        let stop = match self.flush_batch(answer).await {
            Ok(()) => stop,
            Err(Stop::Broken) if matches!(stop, Stop::Closed) => Stop::Broken,
            Err(_) => stop,
        };
        match stop {
            Stop::Closed => {}
            Stop::Broken => self.summary.failure = Some("disconnected".into()),
            Stop::Fatal(rejection) => {
                let frame = ServerMessage::Error {
                    code: rejection.code.clone(),
                    message: rejection.message,
                };
                if self.conn.write_frame(&frame, &[]).await.is_ok() {
                    close(&mut self.conn).await;
                }
                self.summary.failure = Some(rejection.code);
            }
        }
        std::mem::take(&mut self.summary)
    }

    async fn next_request(&mut self) -> Result<(), Stop> {
        let read = match self.next_if_sent().await? {
            Some(read) => Ok(read),
            None => self.wait_request().await?,
        };
        let request = match read {
            Err(_) => return Err(fatal("timeout", "no request arrived in time")),
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return Err(Stop::Closed),
            Ok(Err(WireError::Io(_) | WireError::UnexpectedEof)) => return Err(Stop::Broken),
            Ok(Err(e)) => return Err(Stop::Fatal(Rejection::from(&e))),
        };
        if !matches!(&request, ClientMessage::Put(header) if batch::batchable(header)) {
            // Answers go out in request order: the held ones first.
            self.flush_batch(true).await?;
        }
        match request {
            ClientMessage::Probe { path, size, hash } => self.probe(path, size, hash).await,
            ClientMessage::Put(header) if batch::batchable(&header) => self.put_small(header).await,
            ClientMessage::Put(header) => self.put(header).await,
            ClientMessage::End { .. } => Err(fatal(
                "unexpected_message",
                "an end frame arrived without a file before it",
            )),
            ClientMessage::Mkdir { path, mode } => self.mkdir(path, mode).await,
            ClientMessage::List { path } => self.list(path, false).await,
            ClientMessage::Get { path } => self.list(path, true).await,
            ClientMessage::Fetch {
                path,
                offset,
                prefix,
                hash,
            } => self.fetch(path, offset, prefix, hash).await,
        }
    }

    /// Waits for the next request, within the request timeout; at shutdown, a session
    /// between requests is ended at once.
    async fn wait_request(
        &mut self,
    ) -> Result<Result<Result<Option<ClientMessage>, WireError>, tokio::time::error::Elapsed>, Stop>
    {
        let deadline = Instant::now() + self.server.config.request_timeout;
        let read = loop {
            let shutdown = self.info.shutdown.cancelled();
            tokio::select! {
                read = timeout_at(deadline, self.conn.read_frame::<ClientMessage>()) => break read,
                // Shutting down: a session between requests has nothing in flight, so it is
                // closed at once rather than held to the drain deadline. One that has begun
                // sending a request goes on (read_frame is cancel safe) and drains.
                () = shutdown, if !self.idle_at_shutdown_checked => {
                    self.idle_at_shutdown_checked = true;
                    if self.conn.at_frame_start() && self.conn.buffered().is_empty() {
                        return Err(fatal("shutting_down", "the server is shutting down"));
                    }
                }
            }
        };
        Ok(read)
    }

    async fn reply(&mut self, msg: ServerMessage) -> Result<(), Stop> {
        self.conn
            .write_frame(&msg, &[])
            .await
            .map_err(|_| Stop::Broken)
    }

    async fn reject(&mut self, path: String, rejection: Rejection) -> Result<(), Stop> {
        self.summary.rejected += 1;
        self.reply(ServerMessage::Rejected {
            path,
            code: rejection.code,
            message: rejection.message,
        })
        .await
    }

    /// Runs a store operation on a blocking thread.
    async fn blocking<T, F>(&self, op: F) -> Result<T, Rejection>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.server.store);
        tokio::task::spawn_blocking(move || op(&store).map_err(Rejection::from))
            .await
            .unwrap_or_else(|e| Err(Rejection::new("internal", format!("disk task failed: {e}"))))
    }

    fn check_access(&self, writing: bool, path: &str) -> Result<(), Rejection> {
        let shown = match path {
            // The root, as `ls` with no directory asks for it.
            "" | "." => "the top directory".to_owned(),
            path => escape_one_line(path, LOG_PATH_CHARS),
        };
        match (self.server.config.access, writing) {
            (Access::ReadOnly, true) => Err(Rejection::new(
                "read_only",
                format!("this server is read-only: {shown} was refused"),
            )),
            (Access::WriteOnly, false) => Err(Rejection::new(
                "write_only",
                format!("this server is write-only: {shown} cannot be listed or fetched"),
            )),
            _ => Ok(()),
        }
    }

    fn check_hash(&self, alg: HashAlg) -> Result<(), Rejection> {
        if self.server.config.hashes.contains(&alg) {
            return Ok(());
        }
        Err(Rejection::new(
            "hash_not_allowed",
            format!("this server does not accept {alg} digests"),
        ))
    }

    async fn probe(&mut self, path: String, size: u64, alg: HashAlg) -> Result<(), Stop> {
        self.probed = None;
        match self.offer_prefix(&path, size, alg).await {
            Ok(Offer::Existing(digest)) => {
                self.reply(ServerMessage::Partial {
                    path,
                    offset: 0,
                    prefix: None,
                    existing: Some(digest),
                })
                .await
            }
            Ok(Offer::Resume(found)) => {
                let (offset, prefix) = match found.as_deref() {
                    Some((_, partial)) => (partial.len, Some(partial.hasher.hex())),
                    None => (0, None),
                };
                self.probed = found.map(|found| *found);
                self.reply(ServerMessage::Partial {
                    path,
                    offset,
                    prefix,
                    existing: None,
                })
                .await
            }
            Err(rejection) => self.reject(path, rejection).await,
        }
    }

    /// A probe's checks, made before the client sends a large body it would have to throw
    /// away: access, name, digest, size cap, and an existing file under the refuse policy
    /// (refused unless it has the probed size, else its digest is offered for comparison).
    async fn offer_prefix(&self, path: &str, size: u64, alg: HashAlg) -> Result<Offer, Rejection> {
        self.check_access(true, path)?;
        self.check_hash(alg)?;
        let rel = RelPath::parse(path)?;
        let options = &self.server.config.store;
        if size > options.max_file_size {
            return Err(Rejection::from(StoreError::TooLarge {
                path: rel.to_string(),
                size,
                limit: options.max_file_size,
            }));
        }
        let refuse = options.policy == Policy::Refuse;
        let probe_rel = rel.clone();
        let found = self
            .blocking(move |store| {
                if refuse {
                    if let Some(digest) = store.digest_if_size(&probe_rel, size, alg)? {
                        return Ok(Err(digest));
                    }
                }
                store.partial(&probe_rel, alg).map(Ok)
            })
            .await?;
        Ok(match found {
            Err(digest) => Offer::Existing(digest),
            Ok(partial) => Offer::Resume(
                partial
                    .filter(|p| p.len > 0 && p.len <= size)
                    .map(|p| Box::new((rel, p))),
            ),
        })
    }

    async fn put(&mut self, header: FileHeader) -> Result<(), Stop> {
        let log = FileLog {
            op: "put",
            path: &header.path,
            size: header.size,
            started: Instant::now(),
        };
        let body = header.body_len();
        let outcome = match self.check_put(&header) {
            Err(rejection) => {
                skip_file::<S, ClientMessage>(&mut self.conn, body, Err(rejection)).await
            }
            Ok((rel, resume)) => {
                let store = Arc::clone(&self.server.store);
                let meta = FileMeta {
                    mode: header.mode,
                    mtime: header.mtime,
                    mtime_nsec: header.mtime_nsec,
                };
                let (size, alg) = (header.size, header.hash);
                let open = move || store.create(&rel, size, meta, alg, resume);
                let progress = &self.server.config.progress;
                progress.begin_file(&header.path, size, header.offset);
                receive_file::<S, ClientMessage, _>(&mut self.conn, body, open, progress).await
            }
        };
        let progress = &self.server.config.progress;
        progress.finish_and_clear();
        let result = self.log_file(&log, &outcome);
        // Peer-declared: a refused `u64::MAX` body must not overflow the tally.
        self.summary.bytes = self.summary.bytes.saturating_add(body);
        let path = header.path.clone();
        match outcome {
            Ok(Ok(stored)) => {
                progress.print_stored(&stored, body, log.started.elapsed(), header.hash);
                self.summary.done += 1;
                self.reply(ServerMessage::Stored {
                    path,
                    name: stored.name,
                    size: stored.size,
                    unchanged: stored.unchanged,
                })
                .await
            }
            Ok(Err(rejection)) => self.reject(path, rejection).await,
            Err(ReceiveError::Broken(_)) => Err(Stop::Broken),
            Err(ReceiveError::Invalid(rejection)) => Err(Stop::Fatal(rejection)),
            Err(ReceiveError::Unskippable(rejection)) => {
                self.reject(path, rejection).await?;
                Err(fatal(
                    "discard_limit",
                    format!(
                        "{result}: the server skips at most {MAX_DISCARD_BYTES} bytes of a \
                         refused file, so it closes the connection"
                    ),
                ))
            }
        }
    }

    /// A `put`'s checks before anything is created; returns the name and the prefix to resume.
    fn check_put(&mut self, header: &FileHeader) -> Result<(RelPath, Option<Partial>), Rejection> {
        let probed = self.probed.take();
        self.check_access(true, &header.path)?;
        self.check_hash(header.hash)?;
        let rel = RelPath::parse(&header.path)?;
        if header.offset == 0 {
            return Ok((rel, None));
        }
        match probed {
            Some((name, partial))
                if name == rel && partial.len == header.offset && header.offset <= header.size =>
            {
                Ok((rel, Some(partial)))
            }
            _ => Err(Rejection::new(
                "bad_offset",
                format!(
                    "{rel}: a put from offset {} needs a probe just before it that found that \
                     many bytes",
                    header.offset
                ),
            )),
        }
    }

    fn log_file(
        &self,
        log: &FileLog<'_>,
        outcome: &Result<Result<Stored, Rejection>, ReceiveError>,
    ) -> String {
        let result = match outcome {
            Ok(Ok(_)) => "stored".to_owned(),
            Ok(Err(r)) | Err(ReceiveError::Invalid(r) | ReceiveError::Unskippable(r)) => {
                r.code.clone()
            }
            Err(ReceiveError::Broken(_)) => "interrupted".to_owned(),
        };
        self.log_line(log, &result);
        result
    }

    fn log_line(&self, log: &FileLog<'_>, result: &str) {
        let path = escape_one_line(log.path, LOG_PATH_CHARS);
        let duration_ms = u64::try_from(log.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(peer = %self.info.peer, service = "files", op = log.op, %path, size = log.size,
            result, duration_ms, "file");
    }

    async fn mkdir(&mut self, path: String, mode: u32) -> Result<(), Stop> {
        let made = match self.check_access(true, &path) {
            Ok(()) => match RelPath::parse(&path) {
                Ok(rel) => self.blocking(move |store| store.mkdir(&rel, mode)).await,
                Err(e) => Err(Rejection::from(e)),
            },
            Err(rejection) => Err(rejection),
        };
        match made {
            Ok(()) => {
                self.summary.dirs += 1;
                let name = path.clone();
                self.reply(ServerMessage::Stored {
                    path,
                    name,
                    size: 0,
                    unchanged: false,
                })
                .await
            }
            Err(rejection) => self.reject(path, rejection).await,
        }
    }
}

fn fatal(code: &str, message: impl Into<String>) -> Stop {
    Stop::Fatal(Rejection::new(code, message))
}
