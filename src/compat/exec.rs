//! `--compat tutorial`: the socket lessons' own "simulated ssh" protocol, both halves, so their
//! Python client and server work with sockit unchanged. No authentication: loopback only.
//!
//! Per connection the client sends a raw command line (one `recv(1024)`); the server runs it
//! with `sh -c` and answers with [`crate::compat::framing`] framing: a `struct.pack("i")`
//! length, a JSON header `{"filename": LINE, "total_size": N, "hash": SHA256_HEX}`, then N
//! bytes of stdout followed by stderr. The header needs the size first, so output is collected
//! (up to [`TutorialConfig::max_output_bytes`]) before anything is sent.
//!
//! The server ([`TutorialServer`]) is here; the client ([`run_tutorial`]) has a file of its own.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::compat::framing::{encode_header, TutorialHeader};
use crate::engine::{set_command_env, with_default_signals, Conn, ConnInfo, Handler, ProcessGroup};
use crate::service::exec::OUTPUT_CHUNK_BYTES;
use crate::text::escape_one_line;

mod client;

pub use client::{run_tutorial, TutorialError, TutorialReply};

/// Largest command line, in bytes: the lesson's server reads it with one `recv(1024)`.
pub(crate) const MAX_LINE_BYTES: usize = 1024;

/// Default cap on one command's collected output (stdout and stderr together).
pub(crate) const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

/// Default time a command may run before its process group is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Default concurrent connections: each may hold up to the output cap in memory.
pub const DEFAULT_MAX_CONNS: usize = 16;

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
                (Some(status), None) => crate::engine::process::exit_text(status),
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
        set_command_env(&mut command, info);
        command
            .arg("-c")
            .arg(OsStr::from_bytes(line))
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
