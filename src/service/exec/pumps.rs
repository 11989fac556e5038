//! The moving parts of a running command: its process group, the pump that forwards client
//! frames to it, and the pump that streams its output back.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use super::messages::{ClientMessage, ServerMessage};
use super::{Refusal, OUTPUT_CHUNK_BYTES};
use crate::server::ProcessGroup;
use crate::wire::{Connection, WireError};

/// Why the client's side of a session ended.
pub(super) enum InputEnd {
    /// EOF or a broken stream: the client is gone.
    Closed,
    /// A frame that breaks the protocol.
    Invalid(Refusal),
}

/// Forwards `stdin` frames to the child, closes its stdin at `stdin_eof`, and delivers
/// signals, until the client goes away or misbehaves.
///
/// # Cancel safety
///
/// Not cancel safe (a stdin chunk may be half written); it is only dropped at session end.
pub(super) async fn pump_input<R: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut Connection<R>,
    stdin: ChildStdin,
    group: &ProcessGroup,
) -> InputEnd {
    let mut stdin = Some(stdin);
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
                // A child that closed its stdin (or exited) just stops receiving.
                if let Some(pipe) = stdin.as_mut() {
                    if pipe.write_all(&chunk).await.is_err() {
                        stdin = None;
                    }
                }
            },
            ClientMessage::StdinEof => stdin = None,
            ClientMessage::Signal { signal } => group.signal(signal.into()),
            ClientMessage::Run { .. } => {
                return InputEnd::Invalid(Refusal::new(
                    "unexpected_message",
                    "one run request per connection",
                ))
            }
        }
    }
}

/// Streams stdout and stderr, read concurrently, one frame per chunk as it is produced,
/// until both reach EOF. Each write waits for the client, so a slow reader holds the child
/// at its pipe instead of growing a buffer here.
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
    mut stdout: ChildStdout,
    mut stderr: ChildStderr,
) -> Result<(), WireError> {
    let mut out_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let mut err_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        // Both reads are cancel safe: the one that loses the race has read nothing.
        tokio::select! {
            n = stdout.read(&mut out_buf), if out_open => {
                out_open = forward(writer, Pipe::Stdout, &out_buf, n).await?;
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
