//! `--compat DIALECT`: the socket lessons' "simulated ssh" in each of their [`Dialect`]s, both
//! halves, so their Python clients and servers work with sockit unchanged. No authentication:
//! loopback only.
//!
//! Per connection the client sends a raw command line (one `recv(1024)`); the server runs it
//! with `sh -c` and answers in its dialect; in `struct-json` the header is
//! `{"filename": LINE, "total_size": N, "hash": SHA256_HEX}`. Every dialect but `raw` sends the
//! size first, so output is collected (up to [`CompatConfig::max_output_bytes`]) before
//! anything is sent; `raw` does the same, to send stdout and then stderr as the lesson does.
//!
//! The server ([`CompatServer`]) is here; the client ([`Session`], [`run`]) has a file of its
//! own.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::compat::framing::{encode_header, TutorialHeader};
use crate::compat::Dialect;
use crate::engine::{set_command_env, with_default_signals, Conn, ConnInfo, Handler, ProcessGroup};
use crate::service::exec::OUTPUT_CHUNK_BYTES;
use crate::text::escape_one_line;

mod client;
mod shell;

pub use client::{
    run, CompatError, Reply, Session, DEFAULT_CLIENT_TIMEOUT, QUIET_GAP, RAW_SILENCE,
};
pub use shell::shell;

/// Largest command line, in bytes: the lesson's server reads it with one `recv(1024)`.
pub(crate) const MAX_LINE_BYTES: usize = 1024;

/// Default cap on one command's collected output (stdout and stderr together).
pub(crate) const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

/// Default time a command may run before its process group is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Default concurrent connections: each may hold up to the output cap in memory.
pub const DEFAULT_MAX_CONNS: usize = 16;

/// How long the `length-text-ack` server waits for the acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest command line kept in a log line.
const LOG_LINE_CHARS: usize = 500;

/// Settings of the compat server.
#[derive(Debug, Clone)]
pub struct CompatConfig {
    /// Output beyond this many bytes is cut: the command is killed and a note ends the body.
    pub max_output_bytes: usize,
    /// A command still running after this long has its process group killed.
    pub timeout: Duration,
}

impl Default for CompatConfig {
    fn default() -> Self {
        CompatConfig {
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// The lessons' server as a [`Handler`]: command lines in, output back in its dialect, until
/// EOF.
#[derive(Debug, Clone)]
pub struct CompatServer {
    dialect: Dialect,
    config: CompatConfig,
}

impl CompatServer {
    /// A server speaking `dialect` with `config`. Bind it to loopback only: it has no
    /// authentication.
    pub fn new(dialect: Dialect, config: CompatConfig) -> Self {
        CompatServer { dialect, config }
    }
}

/// Why collecting a command's output stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Truncated,
    TimedOut,
    Shutdown,
}

/// A finished command: its output and how it ended, for the log.
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Why the output was cut, to end the reply with.
    note: Option<String>,
    status: Option<ExitStatus>,
    cut: Option<Cut>,
}

impl Handler for CompatServer {
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
            info!(peer = %info.peer, service = self.dialect.service(), command = %shown, %status, duration_ms, "exec session");
            if captured.cut == Some(Cut::Shutdown) {
                return Ok(());
            }
            let mut body = self.dialect.body(captured.stdout, captured.stderr);
            body.extend_from_slice(captured.note.unwrap_or_default().as_bytes());
            if !self.write_reply(&mut conn, line, &body, &info).await? {
                return Ok(());
            }
        }
    }
}

impl CompatServer {
    /// Sends the reply to one command; false when the client left instead of acknowledging.
    async fn write_reply(
        &self,
        conn: &mut Conn,
        line: &[u8],
        body: &[u8],
        info: &ConnInfo,
    ) -> io::Result<bool> {
        let mut head = BytesMut::new();
        match self.dialect {
            Dialect::Raw => {}
            Dialect::Length => {
                let len = i32::try_from(body.len()).map_err(io::Error::other)?;
                head.extend_from_slice(&len.to_ne_bytes());
            }
            Dialect::LengthText => head.extend_from_slice(body.len().to_string().as_bytes()),
            Dialect::LengthTextAck => {
                conn.write_all(body.len().to_string().as_bytes()).await?;
                conn.flush().await?;
                if !self.read_ack(conn, info).await? {
                    return Ok(false);
                }
            }
            Dialect::StructJson => {
                let header = TutorialHeader {
                    filename: String::from_utf8_lossy(line).into_owned(),
                    total_size: body.len() as u64,
                    hash: sha256_hex(body),
                };
                encode_header(&header, &mut head).map_err(io::Error::other)?;
            }
        }
        // One write for the head and a small body: what the lesson's back-to-back sends
        // become on Linux, which is what 002 §1.5 demonstrates.
        head.extend_from_slice(&body[..body.len().min(OUTPUT_CHUNK_BYTES)]);
        conn.write_all(&head).await?;
        conn.write_all(&body[body.len().min(OUTPUT_CHUNK_BYTES)..])
            .await?;
        conn.flush().await?;
        Ok(true)
    }

    /// Waits for the client's acknowledgement: any one read, as 002 §1.7's server takes it
    /// (000 §6.1's wants `recv_ready`, which sockit's client sends). False at EOF, at the
    /// [`ACK_TIMEOUT`] or at shutdown.
    async fn read_ack(&self, conn: &mut Conn, info: &ConnInfo) -> io::Result<bool> {
        let mut ack = [0u8; MAX_LINE_BYTES];
        tokio::select! {
            n = tokio::time::timeout(ACK_TIMEOUT, conn.read(&mut ack)) => match n {
                Ok(n) => Ok(n? > 0),
                Err(_) => {
                    warn!(peer = %info.peer, "no acknowledgement within {ACK_TIMEOUT:?}");
                    Ok(false)
                }
            },
            () = info.shutdown.cancelled() => Ok(false),
        }
    }

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
                    stdout: Vec::new(),
                    stderr: format!("sockit: cannot run the command: {e}\n").into_bytes(),
                    note: None,
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
                captured.note = Some(note);
            }
            Some(Cut::TimedOut) => {
                warn!(peer = %info.peer, "tutorial command killed at the timeout");
                let note = format!(
                    "\n[sockit: the command was killed after {:?}]\n",
                    self.config.timeout
                );
                captured.note = Some(note);
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
                stdout: Vec::new(),
                stderr: Vec::new(),
                note: None,
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
            stdout: output.stdout,
            stderr: output.stderr,
            note: None,
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
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
