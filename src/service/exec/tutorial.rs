//! `--compat tutorial`: the socket lessons' own "simulated ssh" protocol, both halves, so their
//! Python client and server work with sockit unchanged. No authentication: loopback only.
//!
//! Per connection the client sends a raw command line (one `recv(1024)`); the server runs it
//! with `sh -c` and answers with [`crate::wire::tutorial`] framing: a `struct.pack("i")`
//! length, a JSON header `{"filename": LINE, "total_size": N, "hash": SHA256_HEX}`, then N
//! bytes of stdout followed by stderr. The header needs the size first, so output is collected
//! (up to [`TutorialConfig::max_output_bytes`]) before anything is sent.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::{info, warn};

use super::OUTPUT_CHUNK_BYTES;
use crate::net::{Addr, Stream};
use crate::server::{command_env, with_default_signals, Conn, ConnInfo, Handler, ProcessGroup};
use crate::session::quote_first_line;
use crate::text::escape_one_line;
use crate::wire::tutorial::{encode_header, TutorialDecoder, TutorialHeader};
use crate::wire::{looks_like_text, Decoded, Limits, WireError, MAX_HEADER_BYTES};

/// Largest command line, in bytes: the lesson's server reads it with one `recv(1024)`.
pub const MAX_LINE_BYTES: usize = 1024;

/// Default cap on one command's collected output (stdout and stderr together).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

/// Default time a command may run before its process group is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Default concurrent connections: each may hold up to the output cap in memory.
pub const DEFAULT_MAX_CONNS: usize = 16;

/// Largest reply body the client accepts (it streams the body, so this only bounds time).
pub const MAX_CLIENT_BODY_BYTES: u64 = 1 << 32;

/// Longest command line kept in a log line.
const LOG_LINE_CHARS: usize = 500;

/// Settings of the tutorial-compatible server.
#[derive(Debug, Clone)]
pub struct TutorialConfig {
    /// Output beyond this many bytes is cut: the command is killed and a note ends the body.
    pub max_output_bytes: usize,
    /// A command still running after this long has its process group killed.
    pub timeout: Duration,
}

impl Default for TutorialConfig {
    fn default() -> Self {
        TutorialConfig {
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// The lesson's server as a [`Handler`]: command lines in, framed output back, until EOF.
#[derive(Debug, Clone, Default)]
pub struct TutorialServer {
    config: TutorialConfig,
}

impl TutorialServer {
    /// A server with `config`. Bind it to loopback only: it has no authentication.
    pub fn new(config: TutorialConfig) -> Self {
        TutorialServer { config }
    }
}

/// Why collecting a command's output stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Truncated,
    TimedOut,
    Shutdown,
}

/// A finished command: the reply body and how it ended, for the log.
struct Captured {
    body: Vec<u8>,
    status: Option<ExitStatus>,
    cut: Option<Cut>,
}

impl Handler for TutorialServer {
    async fn handle(&self, mut conn: Conn, info: ConnInfo) -> io::Result<()> {
        let mut buf = [0u8; MAX_LINE_BYTES];
        loop {
            let n = tokio::select! {
                n = conn.read(&mut buf) => n?,
                () = info.shutdown.cancelled() => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            let line = buf[..n].trim_ascii_end();
            if line.is_empty() {
                continue;
            }
            let started = Instant::now();
            let captured = self.capture(line, &info).await;
            let shown = escape_one_line(&String::from_utf8_lossy(line), LOG_LINE_CHARS);
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let status = match (captured.status, captured.cut) {
                (_, Some(cut)) => format!("{cut:?}"),
                (Some(status), None) => status.to_string(),
                (None, None) => "unknown".to_owned(),
            };
            info!(peer = %info.peer, service = "exec-tutorial", command = %shown, %status, duration_ms, "exec session");
            if captured.cut == Some(Cut::Shutdown) {
                return Ok(());
            }
            write_reply(&mut conn, line, &captured.body).await?;
        }
    }
}

impl TutorialServer {
    /// Runs `sh -c LINE` and collects stdout, then stderr, within the cap and the timeout.
    async fn capture(&self, line: &[u8], info: &ConnInfo) -> Captured {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(OsStr::from_bytes(line))
            .envs(command_env(&info.peer, &info.local))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        with_default_signals(&mut command);
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return Captured {
                    body: format!("sockit: cannot run the command: {e}\n").into_bytes(),
                    status: None,
                    cut: None,
                }
            }
        };
        let mut captured = self.collect(&mut child, info).await;
        let limit = self.config.max_output_bytes;
        match captured.cut {
            Some(Cut::Truncated) => {
                warn!(peer = %info.peer, limit, "tutorial command output truncated");
                let note = format!(
                    "\n[sockit: output truncated at {limit} bytes; the command was killed]\n"
                );
                captured.body.extend_from_slice(note.as_bytes());
            }
            Some(Cut::TimedOut) => {
                warn!(peer = %info.peer, "tutorial command killed at the timeout");
                let note = format!(
                    "\n[sockit: the command was killed after {:?}]\n",
                    self.config.timeout
                );
                captured.body.extend_from_slice(note.as_bytes());
            }
            Some(Cut::Shutdown) | None => {}
        }
        captured
    }

    /// Reads both pipes at once (so neither fills up and stalls the child) into one budget.
    async fn collect(&self, child: &mut Child, info: &ConnInfo) -> Captured {
        let group = ProcessGroup::of(child);
        let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
            return Captured {
                body: Vec::new(),
                status: None,
                cut: None,
            };
        };
        let mut output = Output::new(self.config.max_output_bytes);
        let (mut out_open, mut err_open) = (true, true);
        let mut status = None;
        let mut cut = None;
        let (mut out_buf, mut err_buf) =
            (vec![0u8; OUTPUT_CHUNK_BYTES], vec![0u8; OUTPUT_CHUNK_BYTES]);
        let timer = tokio::time::sleep(self.config.timeout);
        tokio::pin!(timer);
        while (out_open || err_open || status.is_none()) && cut.is_none() {
            // Pipe reads are cancel safe: a read that loses the race has read nothing.
            tokio::select! {
                n = out.read(&mut out_buf), if out_open => {
                    out_open = output.keep(n, &out_buf, Pipe::Out);
                }
                n = err.read(&mut err_buf), if err_open => {
                    err_open = output.keep(n, &err_buf, Pipe::Err);
                }
                res = child.wait(), if status.is_none() => {
                    // Background processes die with the command, so the pipes reach EOF.
                    group.signal(Signal::SIGKILL);
                    group.disarm();
                    status = Some(res.ok());
                }
                () = &mut timer => cut = Some(Cut::TimedOut),
                () = info.shutdown.cancelled() => cut = Some(Cut::Shutdown),
            }
            if output.truncated {
                cut = Some(Cut::Truncated);
            }
        }
        if cut.is_some() && status.is_none() {
            group.signal(Signal::SIGKILL);
            status = Some(child.wait().await.ok());
            group.disarm();
        }
        Captured {
            body: output.into_body(),
            status: status.flatten(),
            cut,
        }
    }
}

/// Which pipe a chunk came from.
#[derive(Clone, Copy)]
enum Pipe {
    Out,
    Err,
}

/// Collected stdout and stderr, sharing one byte budget.
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    remaining: usize,
    truncated: bool,
}

impl Output {
    fn new(limit: usize) -> Self {
        Output {
            stdout: Vec::new(),
            stderr: Vec::new(),
            remaining: limit,
            truncated: false,
        }
    }

    /// Keeps what the budget allows of one read; returns whether the pipe is still open.
    fn keep(&mut self, read: io::Result<usize>, buf: &[u8], from: Pipe) -> bool {
        let n = match read {
            Ok(n) if n > 0 => n,
            _ => return false,
        };
        let take = n.min(self.remaining);
        self.truncated |= take < n;
        self.remaining -= take;
        let dst = match from {
            Pipe::Out => &mut self.stdout,
            Pipe::Err => &mut self.stderr,
        };
        dst.extend_from_slice(&buf[..take]);
        true
    }

    fn into_body(mut self) -> Vec<u8> {
        self.stdout.append(&mut self.stderr);
        self.stdout
    }
}

/// Sends the length, the header and the body.
async fn write_reply<W: AsyncWrite + Unpin>(
    conn: &mut W,
    line: &[u8],
    body: &[u8],
) -> io::Result<()> {
    let header = TutorialHeader {
        filename: String::from_utf8_lossy(line).into_owned(),
        total_size: body.len() as u64,
        hash: sha256_hex(body),
    };
    let mut head = BytesMut::new();
    encode_header(&header, &mut head).map_err(io::Error::other)?;
    conn.write_all(&head).await?;
    conn.write_all(body).await?;
    conn.flush().await
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the tutorial client can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TutorialError {
    /// The command line cannot be sent in the lesson's protocol.
    #[error("{0}")]
    InvalidCommand(String),
    /// The server could not be reached.
    #[error("{0}")]
    Connect(io::Error),
    /// The connection broke.
    #[error("connection error: {0}")]
    Io(io::Error),
    /// The server sent an invalid header.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server closed the connection before the whole reply arrived.
    #[error("the server closed the connection before the whole reply")]
    Closed,
    /// The server answered with a line of text where the tutorial's length prefix belongs:
    /// not a tutorial server (a sockit exec server says so in text).
    #[error(
        "the server answered in plain text, not the tutorial protocol (is this the right \
         port?); it said: \"{said}\""
    )]
    ServerSpeaksText {
        /// The start of its first line (escaped peer text).
        said: String,
    },
    /// The server answered with one of sockit's own frames (a big-endian length, then JSON):
    /// a sockit exec server without `--compat tutorial`.
    #[error(
        "the server answered in sockit's framed protocol, not the tutorial's: connect with \
         `sockit exec run` without --compat, or start the server with --compat tutorial"
    )]
    ServerSpeaksFramed,
    /// The body does not match the header's hash.
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

/// What the server answered, besides the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TutorialReply {
    /// The header as received (text fields untrusted).
    pub header: TutorialHeader,
    /// Whether the body was checked against a SHA-256 `hash`; an empty hash or another
    /// algorithm's digest (e.g. the 32 hex digits of MD5) cannot be checked.
    pub verified: bool,
}

/// Sends `line` to a tutorial exec server at `addr` and writes the reply body to `out` as it
/// arrives.
///
/// # Errors
///
/// [`TutorialError`]: an empty or overlong line, a broken connection or header, a body that
/// does not match a SHA-256 hash (the body has been written by then).
pub async fn run_tutorial<O: AsyncWrite + Unpin>(
    addr: &Addr,
    line: &str,
    mut out: O,
) -> Result<TutorialReply, TutorialError> {
    let line = line.trim_end();
    if line.is_empty() {
        return Err(TutorialError::InvalidCommand("the command is empty".into()));
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(TutorialError::InvalidCommand(format!(
            "the command line has {} bytes; the tutorial protocol allows {MAX_LINE_BYTES}",
            line.len()
        )));
    }
    let mut stream = Stream::connect(addr)
        .await
        .map_err(TutorialError::Connect)?;
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(TutorialError::Io)?;
    let header = read_reply(&mut stream, &mut out).await?;
    let (header, actual) = header;
    let verified = header.hash.len() == 64;
    if verified && !header.hash.eq_ignore_ascii_case(&actual) {
        return Err(TutorialError::HashMismatch {
            expected: escape_one_line(&header.hash, 64),
            actual,
        });
    }
    Ok(TutorialReply { header, verified })
}

/// Whether `buf` starts like one of sockit's frames: a big-endian length within the frame
/// limit, then a JSON object.
fn looks_framed(buf: &[u8]) -> bool {
    match (buf.get(..4), buf.get(4)) {
        (Some(prefix), Some(b'{')) => {
            let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            usize::try_from(len).is_ok_and(|len| len <= MAX_HEADER_BYTES)
        }
        _ => false,
    }
}

/// Reads one reply, writing its body to `out`; returns the header and the body's SHA-256.
async fn read_reply<S, O>(
    stream: &mut S,
    out: &mut O,
) -> Result<(TutorialHeader, String), TutorialError>
where
    S: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut decoder = TutorialDecoder::with_limits(Limits {
        max_header: MAX_HEADER_BYTES,
        max_body: MAX_CLIENT_BODY_BYTES,
    });
    let mut buf = BytesMut::with_capacity(OUTPUT_CHUNK_BYTES);
    let mut hasher = Sha256::new();
    let mut header = None;
    loop {
        loop {
            let step = match decoder.decode(&mut buf) {
                Ok(Some(step)) => step,
                Ok(None) => break,
                // Text reads as an absurd length prefix.
                Err(WireError::HeaderTooLarge { .. })
                    if header.is_none() && looks_like_text(&buf) =>
                {
                    return Err(TutorialError::ServerSpeaksText {
                        said: quote_first_line(&buf),
                    })
                }
                Err(WireError::HeaderTooLarge { .. }) if header.is_none() && looks_framed(&buf) => {
                    return Err(TutorialError::ServerSpeaksFramed)
                }
                Err(e) => return Err(e.into()),
            };
            match step {
                Decoded::Header(h) => header = Some(h),
                Decoded::Body(chunk) => {
                    hasher.update(&chunk);
                    out.write_all(&chunk).await.map_err(TutorialError::Local)?;
                }
            }
        }
        if let Some(h) = header.take_if(|_| decoder.is_idle()) {
            out.flush().await.map_err(TutorialError::Local)?;
            return Ok((h, hex::encode(hasher.finalize())));
        }
        let n = stream.read_buf(&mut buf).await.map_err(TutorialError::Io)?;
        if n == 0 {
            return Err(TutorialError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tutorial::encode_header;

    #[test]
    fn a_sockit_frame_is_told_from_a_tutorial_reply_and_from_text() {
        let mut framed = BytesMut::new();
        let json = br#"{"type":"error","code":"timeout","message":"handshake not completed"}"#;
        framed.extend_from_slice(&(json.len() as u32).to_be_bytes());
        framed.extend_from_slice(json);
        assert!(looks_framed(&framed));

        let mut tutorial = BytesMut::new();
        let header = TutorialHeader {
            filename: "ls".into(),
            total_size: 3,
            hash: String::new(),
        };
        encode_header(&header, &mut tutorial).unwrap();
        assert!(!looks_framed(&tutorial));
        assert!(!looks_framed(b"error: this port speaks"));
        assert!(!looks_framed(b"\0\0"));
    }
}
