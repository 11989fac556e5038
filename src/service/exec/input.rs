//! The client's side of a running command: a reader of client frames that never waits on the
//! command, and a writer that feeds the command's stdin from a bounded queue between them.
//!
//! Why two halves: a command that stops reading its stdin must not hold up the frames queued
//! behind its input on the connection (`signal`, `resize`), or Ctrl-C could never reach it.
//! So the frame reader only appends `stdin` bodies to a queue and the writer alone waits on the
//! command. The queue is bounded by flow control, as ssh's channel window does it: a client
//! may have at most [`STDIN_WINDOW_BYTES`] of stdin not yet taken by the command, and the
//! server sends `stdin_credit` as the command takes it. A client that overruns its window is
//! refused; signals and resizes are never subject to the window.

use std::convert::Infallible;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::{watch, Notify};

use super::messages::{window_size, ClientMessage};
use super::pumps::Credit;
use super::STDIN_WINDOW_BYTES;
use crate::engine::ProcessGroup;
use crate::terminal::PtyMaster;
use crate::wire::ErrorFrame;
use crate::wire::{Connection, WireError};

/// The terminal's end-of-file character (Ctrl-D), typed for `stdin_eof` on a pty.
const EOF_CHAR: u8 = 0x04;

/// Most bytes handed to the command's stdin in one write; the writer's only buffer.
const STDIN_WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Where client input goes.
pub(super) enum CommandInput<'a> {
    /// The command's stdin pipe; `None` once closed.
    Pipe(Option<ChildStdin>),
    /// The command's terminal; `false` once a write failed (the command is gone).
    Pty(&'a PtyMaster, bool),
}

impl<'a> CommandInput<'a> {
    /// Passes on typed input; a command that stopped reading for good just stops receiving.
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

    /// The command's terminal, if it runs on one.
    fn terminal(&self) -> Option<&'a PtyMaster> {
        match self {
            CommandInput::Pipe(_) => None,
            CommandInput::Pty(master, _) => Some(master),
        }
    }
}

/// After a client's half-close, when its session is first probed again (the first probe
/// goes at once; on loopback the reset it draws comes back within this).
const FIRST_HALF_CLOSE_PROBE: Duration = Duration::from_millis(20);

/// After a client's half-close, how often the session checks that it is still there.
pub(crate) const HALF_CLOSE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Why the client's side of a session ended.
pub(super) enum InputEnd {
    /// A broken stream, or an end in the middle of a frame: the client is gone.
    Closed,
    /// The stream ended between frames: the client shut down its side (or closed; the probes
    /// tell, see [`pump_input`]). Only ever seen inside `pump_input`.
    HalfClosed,
    /// A frame that breaks the protocol.
    Invalid(ErrorFrame),
}

/// Reads the client's frames until it goes away or misbehaves: `stdin` bodies are queued for
/// the command (the queue fed to it meanwhile, and `credits` counting what it took), signals
/// and window sizes take effect at once.
///
/// # Cancel safety
///
/// Not cancel safe (a stdin chunk may be half written); it is only dropped at session end.
pub(super) async fn pump_input<R: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut Connection<R>,
    input: CommandInput<'_>,
    group: &ProcessGroup,
    credits: watch::Sender<Credit>,
) -> InputEnd {
    let queue = StdinQueue::default();
    let terminal = input.terminal();
    let read = async {
        let end = read_client(reader, &queue, terminal, group).await;
        if !matches!(end, InputEnd::HalfClosed) {
            return end;
        }
        // The client shut down its sending side: that is the end of stdin, and the command
        // runs on. Whether the client is still there to read is only learnt by writing to
        // it: a probe frame (a zero stdin credit) to a client that closed altogether is
        // answered with a reset, and the next write fails, which ends the session.
        queue.end();
        let mut pause = FIRST_HALF_CLOSE_PROBE;
        loop {
            credits.send_modify(|c| c.probes = c.probes.wrapping_add(1));
            tokio::time::sleep(pause).await;
            pause = HALF_CLOSE_PROBE_INTERVAL;
        }
    };
    let write = write_stdin(&queue, input, &credits);
    tokio::select! {
        end = read => end,
        never = write => match never {},
    }
}

/// The frame-reading half of [`pump_input`]: it waits only on the client.
async fn read_client<R: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut Connection<R>,
    queue: &StdinQueue,
    terminal: Option<&PtyMaster>,
    group: &ProcessGroup,
) -> InputEnd {
    loop {
        let msg = match reader.read_frame::<ClientMessage>().await {
            Ok(Some(msg)) => msg,
            Ok(None) => return InputEnd::HalfClosed,
            Err(WireError::Io(_) | WireError::UnexpectedEof) => return InputEnd::Closed,
            Err(e) => return InputEnd::Invalid(ErrorFrame::from(&e)),
        };
        match msg {
            ClientMessage::Stdin { size } => {
                if let Err(refusal) = queue.admit(size) {
                    return InputEnd::Invalid(refusal);
                }
                loop {
                    match reader.read_body_chunk().await {
                        Ok(Some(chunk)) => queue.push(&chunk),
                        Ok(None) => break,
                        Err(_) => return InputEnd::Closed,
                    }
                }
            }
            ClientMessage::StdinEof => queue.end(),
            ClientMessage::Signal { signal } => group.signal(signal.into()),
            ClientMessage::Resize { rows, cols } => {
                if let Err(refusal) = resize(terminal, rows, cols) {
                    return InputEnd::Invalid(refusal);
                }
            }
            ClientMessage::Run { .. } => {
                return InputEnd::Invalid(ErrorFrame::new(
                    "unexpected_message",
                    "one run request per connection",
                ))
            }
        }
    }
}

/// Resizes the terminal; without one there is nothing to resize.
fn resize(terminal: Option<&PtyMaster>, rows: u16, cols: u16) -> Result<(), ErrorFrame> {
    let Some(master) = terminal else {
        return Ok(());
    };
    let size = window_size(rows, cols).map_err(|e| ErrorFrame::new("invalid_pty", e))?;
    // A terminal whose command is gone cannot be resized; nothing to report.
    let _ = master.resize(size);
    Ok(())
}

/// The writing half of [`pump_input`]: feeds the command whatever is queued, in order, and
/// adds every byte it took (or that was dropped because its input is closed) to `credits`.
/// Runs until dropped.
async fn write_stdin(
    queue: &StdinQueue,
    mut input: CommandInput<'_>,
    credits: &watch::Sender<Credit>,
) -> Infallible {
    let mut buf = vec![0u8; STDIN_WRITE_CHUNK_BYTES];
    loop {
        match queue.next_step(&mut buf) {
            Step::Wait => queue.ready.notified().await,
            Step::Write(n) => {
                input.write(buf.get(..n).unwrap_or_default()).await;
                queue.taken(n);
                credits.send_modify(|c| c.taken = c.taken.saturating_add(n as u64));
            }
            Step::End => input.end().await,
        }
    }
}

/// Client stdin the command has not taken yet: filled by the frame reader, emptied by the
/// writer, at most [`STDIN_WINDOW_BYTES`] plus the writer's chunk.
#[derive(Default)]
struct StdinQueue {
    state: Mutex<Queued>,
    /// Wakes the writer when there is something to do.
    ready: Notify,
}

#[derive(Default)]
struct Queued {
    data: BytesMut,
    /// Bytes admitted and not yet credited back: `data`, the rest of the frame being read and
    /// the chunk being written.
    held: u64,
    /// Where in `data` the client's stdin ended, if it did.
    eof_at: Option<usize>,
}

/// The writer's next move.
enum Step {
    /// Nothing queued.
    Wait,
    /// Write this many bytes, copied to the front of the writer's buffer.
    Write(usize),
    /// Everything before the client's EOF was written: end the command's input.
    End,
}

impl StdinQueue {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accounts for a `stdin` frame of `size` bytes before its body is read.
    fn admit(&self, size: u64) -> Result<(), ErrorFrame> {
        let mut queued = self.lock();
        let held = queued.held.saturating_add(size);
        if held > STDIN_WINDOW_BYTES {
            return Err(ErrorFrame::new(
                "stdin_window_exceeded",
                format!(
                    "the client sent stdin beyond its window of {STDIN_WINDOW_BYTES} bytes \
                     without waiting for stdin_credit"
                ),
            ));
        }
        queued.held = held;
        Ok(())
    }

    /// Queues a chunk of an admitted frame's body.
    fn push(&self, chunk: &[u8]) {
        self.lock().data.extend_from_slice(chunk);
        self.ready.notify_one();
    }

    /// Marks the end of the client's stdin after what is queued (a second end before the
    /// first was delivered is the same end).
    fn end(&self) {
        let mut queued = self.lock();
        if queued.eof_at.is_none() {
            queued.eof_at = Some(queued.data.len());
        }
        drop(queued);
        self.ready.notify_one();
    }

    /// Takes the writer's next move, copying the bytes to write into `buf`.
    fn next_step(&self, buf: &mut [u8]) -> Step {
        let mut queued = self.lock();
        if queued.eof_at == Some(0) {
            queued.eof_at = None;
            return Step::End;
        }
        let n = queued
            .data
            .len()
            .min(buf.len())
            .min(queued.eof_at.unwrap_or(usize::MAX));
        if n == 0 {
            return Step::Wait;
        }
        buf[..n].copy_from_slice(&queued.data[..n]);
        queued.data.advance(n);
        if let Some(at) = queued.eof_at.as_mut() {
            *at -= n;
        }
        Step::Write(n)
    }

    /// The writer is done with `n` bytes.
    fn taken(&self, n: usize) {
        let mut queued = self.lock();
        queued.held = queued.held.saturating_sub(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(queue: &StdinQueue) -> Vec<u8> {
        let mut buf = vec![0u8; 4];
        match queue.next_step(&mut buf) {
            Step::Write(n) => buf[..n].to_vec(),
            Step::Wait => b"(wait)".to_vec(),
            Step::End => b"(end)".to_vec(),
        }
    }

    #[test]
    fn queued_stdin_comes_out_in_chunks_then_the_end() {
        let queue = StdinQueue::default();
        queue.admit(6).unwrap();
        queue.push(b"abcdef");
        queue.end();
        queue.end();
        assert_eq!(written(&queue), b"abcd");
        assert_eq!(written(&queue), b"ef");
        assert_eq!(written(&queue), b"(end)");
        assert_eq!(written(&queue), b"(wait)");
    }

    #[test]
    fn stdin_after_the_end_follows_it() {
        let queue = StdinQueue::default();
        queue.admit(4).unwrap();
        queue.push(b"ab");
        queue.end();
        queue.push(b"cd");
        assert_eq!(written(&queue), b"ab");
        assert_eq!(written(&queue), b"(end)");
        assert_eq!(written(&queue), b"cd");
    }

    #[test]
    fn stdin_beyond_the_window_is_refused_until_credited() {
        let queue = StdinQueue::default();
        queue.admit(STDIN_WINDOW_BYTES).unwrap();
        let refusal = queue.admit(1).unwrap_err();
        assert_eq!(refusal.code, "stdin_window_exceeded");
        queue.taken(1);
        queue.admit(1).unwrap();
        assert!(queue.admit(u64::MAX).is_err());
    }
}
