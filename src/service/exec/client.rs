//! The client half: authenticate, send one `run`, forward local stdin and signals while
//! writing the command's output locally as it arrives, and return its exit status.

use std::future::poll_fn;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::either::Either;

use super::messages::{ClientMessage, PtyRequest, RemoteExit, ServerMessage, SignalName};
use super::{OUTPUT_CHUNK_BYTES, STDIN_WINDOW_BYTES};
use crate::net::lowat::RecvLowat;
use crate::net::splice::SpliceRead;
use crate::net::Addr;
use crate::session::{self, ClientError, ClientOptions};
use crate::stdio::{Output, SpliceOutput, SPLICE_PIPE_BYTES};
use crate::terminal::WindowSize;
use crate::text::escape_one_line;
use crate::wire::{Connection, ErrorFrame, WireError};

/// Longest remote error text kept.
const MAX_REMOTE_TEXT_CHARS: usize = 500;

/// Largest read of output from the server: a whole spliced stdout frame (1 MiB) in one go.
/// One run has one connection, so the memory is bounded by a few of these.
const OUTPUT_READ_BYTES: usize = 1024 * 1024;

/// Most output the client waits to have queued in its socket before it is woken to read
/// (plaintext): bulk output then costs one wake-up per this many bytes, not per segment.
const OUTPUT_WAKE_BYTES: usize = 512 * 1024;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// Program and arguments (or, with `shell`, the words of one shell line).
    pub argv: Vec<String>,
    /// Ask for `sh -c` (the server must allow it).
    pub shell: bool,
    /// Run on a pseudo-terminal (stdout and stderr then arrive merged, as `stdout`).
    pub pty: Option<PtyRequest>,
}

/// The local ends a remote command is wired to.
#[derive(Debug)]
pub struct LocalIo<'a, I, W, E> {
    /// Forwarded to the command's stdin, then closed at EOF.
    pub stdin: I,
    /// Receives the command's stdout: [`Output::new`] around any writer, or
    /// [`Output::splicing`] for a [`ThreadWriter`](crate::stdio::ThreadWriter) whose pipe
    /// plaintext output is spliced into.
    pub stdout: Output<'a, W>,
    /// Receives the command's stderr.
    pub stderr: E,
    /// Signals to forward to the command's process group (e.g. SIGINT on Ctrl-C).
    pub signals: mpsc::Receiver<SignalName>,
    /// The local window's size, sent as `resize` whenever it changes (with a pty); `None`
    /// when it never changes.
    pub resizes: Option<watch::Receiver<WindowSize>>,
}

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Its exit status.
    pub exit: RemoteExit,
    /// An error the server reported before the exit, e.g. `not_found` before exit 127
    /// (text escaped).
    pub error: Option<ErrorFrame>,
    /// Set when the server's timeout stopped the command: that timeout.
    pub timed_out_after: Option<Duration>,
}

/// Everything that can stop a remote command from reporting an exit status.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No session: the server could not be reached, TLS or the handshake failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The connection broke or the server sent an invalid frame.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server refused the request (text escaped).
    #[error("the server refused: {} ({})", .0.message, .0.code)]
    Remote(ErrorFrame),
    /// The server closed the connection without an exit status.
    #[error("the server closed the connection before the command's exit status")]
    Closed,
    /// The server broke the exec protocol.
    #[error("exec protocol error: {0}")]
    Protocol(&'static str),
    /// Writing the command's output locally failed.
    #[error("cannot write the command's output: {0}")]
    Local(io::Error),
    /// Reading local stdin failed. The command is not told EOF (it would take the input for
    /// complete); the connection is dropped, which kills it.
    #[error("cannot read stdin: {0}; the command was stopped")]
    Input(io::Error),
}

impl ExecError {
    /// Stable snake_case code: the server's for a refusal, else what failed locally.
    pub fn code(&self) -> &str {
        match self {
            ExecError::Client(e) => e.code(),
            ExecError::Wire(e) => e.code(),
            ExecError::Remote(frame) => &frame.code,
            ExecError::Closed => "closed",
            ExecError::Protocol(_) => "protocol_error",
            ExecError::Local(_) | ExecError::Input(_) => "local_io",
        }
    }
}

/// Runs `request` on the exec server at `addr`, reached as `options` say (the token, TLS).
///
/// Output is written to `io.stdout` / `io.stderr` as it arrives, and local stdin is forwarded
/// at the same time, so the remote command never waits on a full pipe.
///
/// # Errors
///
/// [`ExecError`]: anything that keeps the command's exit status from arriving. A command
/// that fails still returns `Ok` with its status.
pub async fn run<I, W, E>(
    addr: &Addr,
    options: &ClientOptions,
    request: &RunRequest,
    io: LocalIo<'_, I, W, E>,
) -> Result<RunOutcome, ExecError>
where
    I: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut framed = session::open(addr, options).await?;
    // The mark counts bytes on the socket, which frame bodies measure only without TLS; best
    // effort: without it, output is just read in smaller pieces.
    let lowat = match framed.get_ref().get_ref() {
        Either::Left(plain) => RecvLowat::of(plain).ok(),
        Either::Right(_) => None,
    };
    let run = ClientMessage::Run {
        argv: request.argv.clone(),
        shell: request.shell,
        pty: request.pty.clone(),
    };
    framed.write_frame(&run, &[]).await?;
    let (mut reader, mut writer) = framed.split();
    reader.set_read_buffer_bytes(OUTPUT_READ_BYTES);
    let LocalIo {
        stdin,
        stdout,
        stderr,
        signals,
        resizes,
    } = io;
    let (credited, credits) = watch::channel(0u64);
    let receive = receive_output(&mut reader, stdout, stderr, lowat, credited);
    let send = send_input(&mut writer, stdin, signals, resizes, credits);
    tokio::pin!(receive, send);
    let mut sending = true;
    loop {
        tokio::select! {
            res = &mut receive => return res,
            res = &mut send, if sending => match res {
                Err(e @ ExecError::Input(_)) => return Err(e),
                // A failed send means the server is gone or done; `receive` says which.
                _ => sending = false,
            },
        }
    }
}

/// Reads the server's frames until `exit`, writing output bodies locally as they arrive and
/// adding up stdin credit in `credited`.
async fn receive_output<R, O, E>(
    reader: &mut Connection<R>,
    mut stdout: O,
    mut stderr: E,
    mut lowat: Option<RecvLowat>,
    credited: watch::Sender<u64>,
) -> Result<RunOutcome, ExecError>
where
    R: AsyncRead + AsyncWrite + SpliceRead + Unpin,
    O: AsyncWrite + SpliceOutput + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut error = None;
    loop {
        match reader.read_frame::<ServerMessage>().await? {
            None => return Err(error.map_or(ExecError::Closed, ExecError::Remote)),
            Some(ServerMessage::Stdout { .. }) => {
                if stdout.splice_pipe().is_some() && reader.get_ref().can_splice_read() {
                    splice_body(reader, &mut stdout, lowat.as_mut()).await?;
                } else {
                    copy_body(reader, &mut stdout, lowat.as_mut()).await?;
                }
            }
            Some(ServerMessage::Stderr { .. }) => {
                copy_body(reader, &mut stderr, lowat.as_mut()).await?;
            }
            Some(ServerMessage::StdinCredit { bytes }) => {
                credited.send_modify(|total| *total = total.saturating_add(bytes));
            }
            Some(ServerMessage::Error { code, message }) => {
                error = Some(ErrorFrame::new(
                    escape_one_line(&code, MAX_REMOTE_TEXT_CHARS),
                    escape_one_line(&message, MAX_REMOTE_TEXT_CHARS),
                ));
            }
            Some(ServerMessage::Exit {
                code,
                signal,
                timed_out_ms,
            }) => {
                let exit = match (code, signal) {
                    (Some(code), _) => RemoteExit::Code(code),
                    (None, Some(sig)) => RemoteExit::Signal(sig),
                    (None, None) => {
                        return Err(ExecError::Protocol("an exit with neither code nor signal"))
                    }
                };
                return Ok(RunOutcome {
                    exit,
                    error,
                    timed_out_after: timed_out_ms.map(Duration::from_millis),
                });
            }
        }
    }
}

/// Writes the current frame's body to `out` as it arrives. With `lowat`, each read waits for
/// up to [`OUTPUT_WAKE_BYTES`] of the body's remaining bytes (already on their way), and the
/// mark is back at one byte before the next header, which may be all the server sends.
async fn copy_body<R, W>(
    reader: &mut Connection<R>,
    out: &mut W,
    mut lowat: Option<&mut RecvLowat>,
) -> Result<(), ExecError>
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        wake_for_body(reader, lowat.as_deref_mut());
        let Some(chunk) = reader.read_body_chunk().await? else {
            break;
        };
        out.write_all(&chunk).await.map_err(ExecError::Local)?;
    }
    wake_for_header(lowat)?;
    out.flush().await.map_err(ExecError::Local)
}

/// Sets the receive mark to wake the next read for up to [`OUTPUT_WAKE_BYTES`] of the body's
/// remaining bytes. Best effort: a failed mark only means more wake-ups.
fn wake_for_body<R: AsyncRead + AsyncWrite + Unpin>(
    reader: &Connection<R>,
    lowat: Option<&mut RecvLowat>,
) {
    if let Some(mark) = lowat {
        let due = usize::try_from(reader.unread_body_bytes()).unwrap_or(usize::MAX);
        let _ = mark.set(due.min(OUTPUT_WAKE_BYTES));
    }
}

/// Puts the receive mark back at one byte after a body: the next header may be all the server
/// sends, and a mark left above its size could stall the session, so a failure is an error.
fn wake_for_header(lowat: Option<&mut RecvLowat>) -> Result<(), ExecError> {
    match lowat {
        Some(mark) => mark.set(1).map_err(|e| ExecError::Wire(e.into())),
        None => Ok(()),
    }
}

/// [`copy_body`] for an output with a splice pipe, on a stream that can splice: the body goes
/// from the socket into the pipe without a copy through user space, and the output's thread
/// moves it on (by splice again where the output takes it, e.g. a pipe, a file, /dev/null).
async fn splice_body<R, W>(
    reader: &mut Connection<R>,
    out: &mut W,
    mut lowat: Option<&mut RecvLowat>,
) -> Result<(), ExecError>
where
    R: AsyncRead + AsyncWrite + SpliceRead + Unpin,
    W: AsyncWrite + SpliceOutput + Unpin,
{
    // Bytes read along with the header go first, by the usual path.
    while let Some(chunk) = reader.take_buffered_body() {
        out.write_all(&chunk).await.map_err(ExecError::Local)?;
    }
    while reader.unread_body_bytes() > 0 {
        let pipe = out
            .splice_pipe()
            .ok_or(ExecError::Protocol("no splice pipe"))?;
        wake_for_body(reader, lowat.as_deref_mut());
        pipe.writable().await.map_err(ExecError::Local)?;
        let moved = match reader.splice_body_to(pipe.as_fd(), SPLICE_PIPE_BYTES).await {
            // Nobody reads the pipe: the output's thread stopped at a write error.
            Err(WireError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                return Err(ExecError::Local(e))
            }
            moved => moved?,
        };
        if moved == 0 {
            // The pipe is full: its readiness was stale. Clear it and wait for the thread.
            let _ = pipe.try_io(|| Err::<(), _>(io::ErrorKind::WouldBlock.into()));
            continue;
        }
        poll_fn(|cx| out.poll_hand_over_piped(cx, moved))
            .await
            .map_err(ExecError::Local)?;
    }
    wake_for_header(lowat)?;
    // Buffered bytes may still sit in the output's batch.
    out.flush().await.map_err(ExecError::Local)
}

/// Forwards local stdin as `stdin` frames then `stdin_eof`, `signals` as `signal` frames
/// and window sizes as `resize` frames, until all are exhausted.
///
/// Stdin is sent only as far as the server's credit goes (the window plus the running total
/// in `credited`), so a command that stops reading holds back its input, never the signals.
///
/// # Cancel safety
///
/// Not cancel safe (a frame may be half written); dropped only when the run is over.
async fn send_input<W, I>(
    writer: &mut Connection<W>,
    mut stdin: I,
    mut signals: mpsc::Receiver<SignalName>,
    mut resizes: Option<watch::Receiver<WindowSize>>,
    mut credited: watch::Receiver<u64>,
) -> Result<(), ExecError>
where
    W: AsyncRead + AsyncWrite + Unpin,
    I: AsyncRead + Unpin,
{
    let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let (mut stdin_open, mut signals_open) = (true, true);
    let mut sent = 0u64;
    while stdin_open || signals_open || resizes.is_some() {
        let credit = STDIN_WINDOW_BYTES
            .saturating_add(*credited.borrow_and_update())
            .saturating_sub(sent);
        let room = buf.len().min(usize::try_from(credit).unwrap_or(usize::MAX));
        // All four are cancel safe: a read that loses the race has read nothing.
        tokio::select! {
            n = stdin.read(&mut buf[..room]), if stdin_open && room > 0 => {
                sent = sent.saturating_add(n.as_ref().map_or(0, |n| *n as u64));
                stdin_open = send_stdin(writer, &buf, n).await?;
            }
            more = credited.changed(), if stdin_open && room == 0 => {
                if more.is_err() {
                    // The run is over: nothing more will be credited.
                    return Ok(());
                }
            }
            sig = signals.recv(), if signals_open => match sig {
                Some(signal) => writer.write_frame(&ClientMessage::Signal { signal }, &[]).await?,
                None => signals_open = false,
            },
            size = next_size(&mut resizes), if resizes.is_some() => match size {
                Some(WindowSize { rows, cols }) => {
                    writer.write_frame(&ClientMessage::Resize { rows, cols }, &[]).await?;
                }
                None => resizes = None,
            },
        }
    }
    Ok(())
}

/// The next window size, or `None` once the sender is gone (or there never was one).
///
/// # Cancel safety
///
/// Cancel safe, as `watch::Receiver::changed` is.
async fn next_size(resizes: &mut Option<watch::Receiver<WindowSize>>) -> Option<WindowSize> {
    let rx = resizes.as_mut()?;
    rx.changed().await.ok()?;
    let size = *rx.borrow_and_update();
    Some(size)
}

/// Sends one chunk of local stdin, or `stdin_eof` at its end; returns whether stdin is still
/// open. A read error is [`ExecError::Input`], never a `stdin_eof`.
async fn send_stdin<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    buf: &[u8],
    read: io::Result<usize>,
) -> Result<bool, ExecError> {
    match read.map_err(ExecError::Input)? {
        0 => {
            writer.write_frame(&ClientMessage::StdinEof, &[]).await?;
            Ok(false)
        }
        n => {
            writer
                .write_frame(&ClientMessage::Stdin { size: n as u64 }, &buf[..n])
                .await?;
            Ok(true)
        }
    }
}
