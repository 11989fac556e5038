//! The pump that streams a running command's output back to the client (from pipes or its
//! terminal), with the `stdin_credit` frames that let the client send more input.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::process::{ChildStderr, ChildStdout};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::messages::ServerMessage;
use super::{OUTPUT_CHUNK_BYTES, STDOUT_CHUNK_BYTES};
use crate::terminal::PtyMaster;
use crate::wire::{Connection, WireError};

/// Output still read from a pty after [`pump_output`] was told to stop, so a command that
/// exited with its last output still in the terminal's buffers (at most ~64 KiB on Linux)
/// loses nothing, while a background job that keeps the terminal busy cannot hold the
/// session open.
const PTY_LATE_OUTPUT_BYTES: usize = 256 * 1024;

/// Where the command's output comes from.
pub(super) enum CommandOutput<'a> {
    /// Its stdout and stderr pipes, sent as separate frames.
    Pipes(ChildStdout, ChildStderr),
    /// Its terminal, both outputs merged, sent as `stdout` frames.
    Pty(&'a PtyMaster),
}

/// The stdin the command has taken, not yet credited to the client: a running total from the
/// input pump ([`super::input::pump_input`]) and how much of it was sent.
pub(super) struct StdinCredits {
    taken: watch::Receiver<u64>,
    sent: u64,
}

impl StdinCredits {
    pub(super) fn new(taken: watch::Receiver<u64>) -> Self {
        StdinCredits { taken, sent: 0 }
    }

    /// Waits for stdin taken since the last call; `None` once the input pump is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `watch::Receiver::changed` is, and the rest does not wait.
    async fn next(&mut self) -> Option<u64> {
        loop {
            self.taken.changed().await.ok()?;
            let total = *self.taken.borrow_and_update();
            let fresh = total.saturating_sub(self.sent);
            if fresh > 0 {
                self.sent = total;
                return Some(fresh);
            }
        }
    }
}

/// Streams the command's output, one frame per chunk as it is produced, until it ends: both
/// pipes at EOF, or the terminal with no process left on it. Each write waits for the client,
/// so a slow reader holds the command at its pipe or terminal instead of growing a buffer here.
///
/// Meanwhile, and after the output ended until `exited` fires (a command may close its output
/// and still read), the stdin the command takes is credited to the client.
///
/// Once `stop` fires (some time after the command exited) a terminal is read only while it
/// has output ready, and for at most [`PTY_LATE_OUTPUT_BYTES`]: a background job may still
/// hold it open. Pipes ignore `stop`; they end with the process group.
///
/// # Errors
///
/// The write error once the client can no longer be written to.
///
/// # Cancel safety
///
/// Not cancel safe (a frame may be half written); it is only dropped at session end.
pub(super) async fn pump_output<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    output: CommandOutput<'_>,
    credits: &mut StdinCredits,
    stop: &CancellationToken,
    exited: &CancellationToken,
) -> Result<(), WireError> {
    match output {
        CommandOutput::Pipes(stdout, stderr) => pump_pipes(writer, stdout, stderr, credits).await,
        CommandOutput::Pty(master) => pump_pty(writer, master, credits, stop).await,
    }?;
    loop {
        // Both are cancel safe.
        tokio::select! {
            () = exited.cancelled() => return Ok(()),
            fresh = credits.next() => match fresh {
                Some(bytes) => send_credit(writer, bytes).await?,
                None => return Ok(()),
            },
        }
    }
}

/// Lets the client send `bytes` more of stdin.
async fn send_credit<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    bytes: u64,
) -> Result<(), WireError> {
    writer
        .write_frame(&ServerMessage::StdinCredit { bytes }, &[])
        .await
}

async fn pump_pty<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    master: &PtyMaster,
    credits: &mut StdinCredits,
    stop: &CancellationToken,
) -> Result<(), WireError> {
    let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let mut late = 0usize;
    loop {
        // Biased: output that is ready is read before `stop` is even looked at. All three are
        // cancel safe.
        let read = tokio::select! {
            biased;
            n = master.read(&mut buf) => n,
            Some(bytes) = credits.next() => {
                send_credit(writer, bytes).await?;
                continue;
            }
            () = stop.cancelled() => return Ok(()),
        };
        if stop.is_cancelled() {
            late += read.as_ref().map_or(0, |n| *n);
            if late > PTY_LATE_OUTPUT_BYTES {
                return Ok(());
            }
        }
        if !forward(writer, Pipe::Stdout, &buf, read).await? {
            return Ok(());
        }
    }
}

async fn pump_pipes<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    mut stdout: ChildStdout,
    mut stderr: ChildStderr,
    credits: &mut StdinCredits,
) -> Result<(), WireError> {
    // Stdout starts small and grows to STDOUT_CHUNK_BYTES once a read fills it: bulk output
    // gets big reads, while a quiet command (most sessions) never touches the big buffer.
    let mut out_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let mut err_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        // All three are cancel safe: a read that loses the race has read nothing.
        tokio::select! {
            n = stdout.read(&mut out_buf), if out_open => {
                let filled = matches!(n, Ok(read) if read == out_buf.len());
                out_open = forward(writer, Pipe::Stdout, &out_buf, n).await?;
                if filled && out_buf.len() < STDOUT_CHUNK_BYTES {
                    out_buf.resize(STDOUT_CHUNK_BYTES, 0);
                }
            }
            n = stderr.read(&mut err_buf), if err_open => {
                err_open = forward(writer, Pipe::Stderr, &err_buf, n).await?;
            }
            Some(bytes) = credits.next() => send_credit(writer, bytes).await?,
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Pipe {
    Stdout,
    Stderr,
}

/// Sends one chunk read from a pipe; returns whether the pipe is still open.
async fn forward<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    pipe: Pipe,
    buf: &[u8],
    read: io::Result<usize>,
) -> Result<bool, WireError> {
    // A failed pipe read is treated as EOF: the child's side is what broke.
    let n = read.unwrap_or(0);
    if n == 0 {
        return Ok(false);
    }
    let size = n as u64;
    let msg = match pipe {
        Pipe::Stdout => ServerMessage::Stdout { size },
        Pipe::Stderr => ServerMessage::Stderr { size },
    };
    writer.write_frame(&msg, &buf[..n]).await?;
    Ok(true)
}
