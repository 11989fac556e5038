//! The lessons' clients in every dialect: command lines out over one connection ([`Session`]),
//! each reply's output written as it arrives, `struct-json`'s checked against its hash. Every
//! reply has a deadline, and bytes in another dialect are named in the error.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::MAX_LINE_BYTES;
use crate::compat::dialect::{describe, ACK};
use crate::compat::framing::TutorialHeader;
use crate::compat::reply::{Pause, ReplyDecoder, ReplyError, Step};
use crate::compat::Dialect;
use crate::net::{Addr, Stream};
use crate::service::exec::OUTPUT_CHUNK_BYTES;
use crate::text::escape_one_line;
use crate::wire::WireError;

/// Largest reply the client accepts (it streams the output, so this only bounds time).
pub(crate) const MAX_CLIENT_BODY_BYTES: u64 = 1 << 32;

/// Default time for one reply, connecting included: longer than the server's default command
/// timeout, so a sockit server's own note about a killed command arrives first.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(75);

/// In a session, how long a server may be silent before a `raw` reply that has begun (or a
/// `length-text` reply whose digits are ambiguous) is taken as complete.
pub const QUIET_GAP: Duration = Duration::from_millis(300);

/// In a session, how long a `raw` reply may take to begin: a command that prints nothing gets
/// no reply at all in that dialect. Output that comes later is written with the next reply.
pub const RAW_SILENCE: Duration = Duration::from_secs(2);

/// Bytes of a reply's start kept to describe it in an error.
const DESCRIBED_BYTES: usize = 64;

/// What a compat client can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    /// The command line cannot be sent in the lessons' protocols.
    #[error("{0}")]
    InvalidCommand(String),
    /// The server could not be reached.
    #[error("{0}")]
    Connect(io::Error),
    /// The connection broke.
    #[error("connection error: {0}")]
    Io(io::Error),
    /// The server closed the connection before the whole reply arrived.
    #[error("the server closed the connection before the whole {dialect} reply")]
    Closed {
        /// The dialect expected.
        dialect: Dialect,
    },
    /// The server answered in another dialect or protocol.
    #[error("expected a {dialect} reply ({}), got {got}", dialect.shape())]
    NotThisDialect {
        /// The dialect expected.
        dialect: Dialect,
        /// What came instead (escaped peer text).
        got: String,
    },
    /// No complete reply within the deadline.
    #[error("no complete {dialect} reply ({}) within {after:?}; got {got}", dialect.shape())]
    Timeout {
        /// The dialect expected.
        dialect: Dialect,
        /// The deadline.
        after: Duration,
        /// What had come (escaped peer text).
        got: String,
    },
    /// The reply announces more output than the client accepts.
    #[error("the reply announces {size} bytes, over the limit of {max}")]
    TooLarge {
        /// The announced size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The server sent an invalid `struct-json` header.
    #[error(transparent)]
    Wire(WireError),
    /// The output does not match the header's hash.
    #[error("the output does not match its hash (header {expected}, computed {actual})")]
    HashMismatch {
        /// The header's digest (escaped).
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// Writing the output locally failed.
    #[error("cannot write the output: {0}")]
    Local(io::Error),
}

/// What the server answered, besides the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The `struct-json` header as received (text fields untrusted).
    pub header: Option<TutorialHeader>,
    /// Whether the output was checked against a SHA-256 `hash`; an empty hash or another
    /// algorithm's digest (e.g. the 32 hex digits of MD5) cannot be checked.
    pub verified: bool,
}

/// One connection to a compat exec server, for any number of commands.
#[derive(Debug)]
pub struct Session {
    stream: Stream,
    buf: BytesMut,
    dialect: Dialect,
    timeout: Duration,
    /// One command, then a half-close: the server's close ends a `raw` or `length-text` reply.
    one_shot: bool,
}

impl Session {
    /// Connects to a server speaking `dialect`; each reply (and the connection) has `timeout`.
    ///
    /// # Errors
    /// [`CompatError::Connect`] when the server cannot be reached in time.
    pub async fn connect(
        addr: &Addr,
        dialect: Dialect,
        timeout: Duration,
    ) -> Result<Self, CompatError> {
        let stream = tokio::time::timeout(timeout, Stream::connect(addr))
            .await
            .map_err(|_| {
                CompatError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("cannot connect to {addr} within {timeout:?}"),
                ))
            })?
            .map_err(CompatError::Connect)?;
        Ok(Session {
            stream,
            buf: BytesMut::with_capacity(OUTPUT_CHUNK_BYTES),
            dialect,
            timeout,
            one_shot: false,
        })
    }

    /// Sends `line` and writes the reply's output to `out` as it arrives.
    ///
    /// # Errors
    /// [`CompatError`]: an empty or overlong line, a broken connection, a reply in another
    /// dialect or past the deadline, an output that does not match a SHA-256 hash (it has
    /// been written by then).
    pub async fn run<O: AsyncWrite + Unpin>(
        &mut self,
        line: &str,
        out: &mut O,
    ) -> Result<Reply, CompatError> {
        let line = check_line(line)?;
        let deadline = Instant::now() + self.timeout;
        self.stream
            .write_all(line.as_bytes())
            .await
            .map_err(CompatError::Io)?;
        if self.one_shot && matches!(self.dialect, Dialect::Raw | Dialect::LengthText) {
            self.stream.shutdown().await.map_err(CompatError::Io)?;
        }
        let mut reader = ReplyReader {
            decoder: ReplyDecoder::new(self.dialect, MAX_CLIENT_BODY_BYTES),
            hasher: Sha256::new(),
            start: Vec::new(),
        };
        let header = reader.read(self, out, deadline).await?;
        out.flush().await.map_err(CompatError::Local)?;
        let actual = hex::encode(reader.hasher.finalize());
        let verified = header.as_ref().is_some_and(|h| h.hash.len() == 64);
        if let Some(h) = header.as_ref().filter(|_| verified) {
            if !h.hash.eq_ignore_ascii_case(&actual) {
                return Err(CompatError::HashMismatch {
                    expected: escape_one_line(&h.hash, 64),
                    actual,
                });
            }
        }
        Ok(Reply { header, verified })
    }

    /// Ends the session: closes the sending side and, in `raw`, writes what output still
    /// arrives until the server closes (within the timeout).
    ///
    /// # Errors
    /// [`CompatError::Io`] or [`CompatError::Local`].
    pub async fn finish<O: AsyncWrite + Unpin>(mut self, out: &mut O) -> Result<(), CompatError> {
        let _ = self.stream.shutdown().await;
        if self.dialect != Dialect::Raw {
            return Ok(());
        }
        out.write_all(&self.buf).await.map_err(CompatError::Local)?;
        let drained = tokio::time::timeout(self.timeout, async {
            loop {
                self.buf.clear();
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => out.write_all(&self.buf).await.map_err(CompatError::Local)?,
                    Err(e) => return Err(CompatError::Io(e)),
                }
            }
        })
        .await;
        out.flush().await.map_err(CompatError::Local)?;
        drained.unwrap_or(Ok(()))
    }
}

/// One reply being read.
struct ReplyReader {
    decoder: ReplyDecoder,
    hasher: Sha256,
    /// The reply's first bytes, to describe it in an error.
    start: Vec<u8>,
}

impl ReplyReader {
    /// Reads until the reply is complete; returns its header (`struct-json`).
    async fn read<O: AsyncWrite + Unpin>(
        &mut self,
        session: &mut Session,
        out: &mut O,
        deadline: Instant,
    ) -> Result<Option<TutorialHeader>, CompatError> {
        let dialect = session.dialect;
        let mut pause = None;
        loop {
            loop {
                let step = match pause.take() {
                    Some(p) => self.decoder.pause(&mut session.buf, p),
                    None => self.decoder.decode(&mut session.buf),
                };
                match step.map_err(|e| reply_error(e, dialect))? {
                    Some(Step::Body(chunk)) => {
                        self.hasher.update(&chunk);
                        out.write_all(&chunk).await.map_err(CompatError::Local)?;
                    }
                    Some(Step::SendAck) => {
                        session
                            .stream
                            .write_all(ACK)
                            .await
                            .map_err(CompatError::Io)?;
                    }
                    Some(Step::Done(header)) => return Ok(header),
                    None => break,
                }
            }
            let now = Instant::now();
            let quiet = match (session.one_shot, self.decoder.waits_for_quiet()) {
                (false, true) if self.decoder.started() => Some(QUIET_GAP),
                (false, true) if dialect == Dialect::Raw => Some(RAW_SILENCE),
                _ => None,
            };
            let wait = deadline.saturating_duration_since(now);
            let wait = quiet.map_or(wait, |q| q.min(wait));
            let before = session.buf.len();
            match tokio::time::timeout(wait, session.stream.read_buf(&mut session.buf)).await {
                Ok(Ok(0)) => pause = Some(Pause::Eof),
                Ok(Ok(_)) => {
                    let room = DESCRIBED_BYTES.saturating_sub(self.start.len());
                    let new = &session.buf[before..];
                    self.start.extend_from_slice(&new[..new.len().min(room)]);
                }
                Ok(Err(e)) => return Err(CompatError::Io(e)),
                Err(_) if Instant::now() >= deadline => {
                    return Err(CompatError::Timeout {
                        dialect,
                        after: session.timeout,
                        got: describe(&self.start),
                    })
                }
                // A raw reply that never began: the command printed nothing.
                Err(_) if dialect == Dialect::Raw && !self.decoder.started() => return Ok(None),
                Err(_) => pause = Some(Pause::Quiet),
            }
        }
    }
}

/// The line without its trailing whitespace, if the lessons' servers can take it.
fn check_line(line: &str) -> Result<&str, CompatError> {
    let line = line.trim_end();
    if line.is_empty() {
        return Err(CompatError::InvalidCommand("the command is empty".into()));
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(CompatError::InvalidCommand(format!(
            "the command line has {} bytes; the lessons' protocols allow {MAX_LINE_BYTES}",
            line.len()
        )));
    }
    Ok(line)
}

fn reply_error(e: ReplyError, dialect: Dialect) -> CompatError {
    match e {
        ReplyError::Closed => CompatError::Closed { dialect },
        ReplyError::Mismatch { got } => CompatError::NotThisDialect { dialect, got },
        ReplyError::TooLarge { size, max } => CompatError::TooLarge { size, max },
        ReplyError::Wire(e) => CompatError::Wire(e),
    }
}

/// Sends `line` to a compat exec server at `addr` on a connection of its own and writes the
/// reply's output to `out`. `raw` and `length-text` half-close after the command, so the
/// server's close ends the reply.
///
/// # Errors
/// As [`Session::run`], and [`CompatError::Connect`].
pub async fn run<O: AsyncWrite + Unpin>(
    addr: &Addr,
    dialect: Dialect,
    line: &str,
    mut out: O,
    timeout: Duration,
) -> Result<Reply, CompatError> {
    check_line(line)?;
    let mut session = Session::connect(addr, dialect, timeout).await?;
    session.one_shot = true;
    session.run(line, &mut out).await
}
