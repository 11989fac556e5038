//! The moving parts of a running command: the pump that forwards client frames to it (over
//! pipes or its terminal), and the pump that streams its output back.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

use super::messages::{window_size, ClientMessage, ServerMessage};
use super::{Refusal, OUTPUT_CHUNK_BYTES, STDOUT_CHUNK_BYTES};
use crate::server::ProcessGroup;
use crate::terminal::PtyMaster;
use crate::wire::{Connection, WireError};

/// The terminal's end-of-file character (Ctrl-D), typed for `stdin_eof` on a pty.
const EOF_CHAR: u8 = 0x04;

/// Output still read from a pty after [`pump_output`] was told to stop, so a command that
/// exited with its last output still in the terminal's buffers (at most ~64 KiB on Linux)
/// loses nothing, while a background job that keeps the terminal busy cannot hold the
/// session open.
const PTY_LATE_OUTPUT_BYTES: usize = 256 * 1024;

/// Where client input goes.
pub(super) enum CommandInput<'a> {
    /// The command's stdin pipe; `None` once closed.
    Pipe(Option<ChildStdin>),
    /// The command's terminal; `false` once a write failed (the command is gone).
    Pty(&'a PtyMaster, bool),
}

impl CommandInput<'_> {
    /// Passes on typed input; a command that stopped reading just stops receiving.
    async fn write(&mut self, chunk: &[u8]) {
        match self {
            CommandInput::Pipe(pipe) => {
                if let Some(stdin) = pipe.as_mut() {
                    if stdin.write_all(chunk).await.is_err() {
                        *pipe = None;
                    }
                }
            }
            CommandInput::Pty(master, open) => {
                if *open && master.write_all(chunk).await.is_err() {
                    *open = false;
                }
            }
        }
    }

    /// The client's input ended: close the pipe, or type Ctrl-D on the terminal.
    async fn end(&mut self) {
        match self {
            CommandInput::Pipe(pipe) => *pipe = None,
            CommandInput::Pty(..) => self.write(&[EOF_CHAR]).await,
        }
    }

    /// Resizes the terminal; without one there is nothing to resize.
    fn resize(&self, rows: u16, cols: u16) -> Result<(), Refusal> {
        let CommandInput::Pty(master, _) = self else {
            return Ok(());
        };
        let size = window_size(rows, cols).map_err(|e| Refusal::new("invalid_pty", e))?;
        // A terminal whose command is gone cannot be resized; nothing to report.
        let _ = master.resize(size);
        Ok(())
    }
}

/// Where the command's output comes from.
pub(super) enum CommandOutput<'a> {
    /// Its stdout and stderr pipes, sent as separate frames.
    Pipes(ChildStdout, ChildStderr),
    /// Its terminal, both outputs merged, sent as `stdout` frames.
    Pty(&'a PtyMaster),
}

/// Why the client's side of a session ended.
pub(super) enum InputEnd {
    /// EOF or a broken stream: the client is gone.
    Closed,
    /// A frame that breaks the protocol.
    Invalid(Refusal),
}

/// Forwards `stdin` frames to the command, ends its input at `stdin_eof`, delivers signals
/// and window sizes, until the client goes away or misbehaves.
///
/// # Cancel safety
///
/// Not cancel safe (a stdin chunk may be half written); it is only dropped at session end.
pub(super) async fn pump_input<R: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut Connection<R>,
    mut input: CommandInput<'_>,
    group: &ProcessGroup,
) -> InputEnd {
    loop {
        let msg = match reader.read_frame::<ClientMessage>().await {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(WireError::Io(_) | WireError::UnexpectedEof) => return InputEnd::Closed,
            Err(e) => return InputEnd::Invalid(Refusal::from(&e)),
        };
        match msg {
            ClientMessage::Stdin { .. } => loop {
                let chunk = match reader.read_body_chunk().await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(_) => return InputEnd::Closed,
                };
                input.write(&chunk).await;
            },
            ClientMessage::StdinEof => input.end().await,
            ClientMessage::Signal { signal } => group.signal(signal.into()),
            ClientMessage::Resize { rows, cols } => {
                if let Err(refusal) = input.resize(rows, cols) {
                    return InputEnd::Invalid(refusal);
                }
            }
            ClientMessage::Run { .. } => {
                return InputEnd::Invalid(Refusal::new(
                    "unexpected_message",
                    "one run request per connection",
                ))
            }
        }
    }
}

/// Streams the command's output, one frame per chunk as it is produced, until it ends: both
/// pipes at EOF, or the terminal with no process left on it. Each write waits for the client,
/// so a slow reader holds the command at its pipe or terminal instead of growing a buffer here.
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
    stop: &CancellationToken,
) -> Result<(), WireError> {
    match output {
        CommandOutput::Pipes(stdout, stderr) => pump_pipes(writer, stdout, stderr).await,
        CommandOutput::Pty(master) => pump_pty(writer, master, stop).await,
    }
}

async fn pump_pty<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    master: &PtyMaster,
    stop: &CancellationToken,
) -> Result<(), WireError> {
    let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let mut late = 0usize;
    loop {
        // Biased: output that is ready is read before `stop` is even looked at. The read is
        // cancel safe.
        let read = tokio::select! {
            biased;
            n = master.read(&mut buf) => n,
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
) -> Result<(), WireError> {
    // Stdout starts small and grows to STDOUT_CHUNK_BYTES once a read fills it: bulk output
    // gets big reads, while a quiet command (most sessions) never touches the big buffer.
    let mut out_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let mut err_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        // Both reads are cancel safe: the one that loses the race has read nothing.
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
