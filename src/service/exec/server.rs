//! The server half: one authenticated `run` per connection, the child in its own process
//! group, its stdout and stderr streamed as frames as they are produced.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::escapees::Escapees;
use super::input::{pump_input, CommandInput};
use super::messages::{ClientMessage, RemoteExit, ServerMessage};
use super::plan::{exit_of, spawn, validate, CommandIo, Plan};
use super::pumps::{pump_output, CommandOutput, Credit, StdinCredits};
use super::supervisor::{Outcome, OutputSignals, Supervisor};
use super::{DEFAULT_KILL_GRACE, RUN_REQUEST_TIMEOUT};
use crate::engine::{ConnInfo, ProcessGroup};
use crate::net::splice::SpliceWrite;
use crate::session::{FramedService, Gated, ServerStream};
use crate::text::escape_one_line;
use crate::wire::ErrorFrame;
use crate::wire::{Connection, WireError};

/// How long a finished session waits for the client to close before closing itself, so
/// unread client bytes do not turn the close into a reset that could eat the `exit` frame.
pub(super) const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Longest escaped command line kept in a log line.
const LOG_ARGV_CHARS: usize = 500;

/// Server settings of the exec service.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Honour `shell: true` requests by running `sh -c LINE`.
    pub shell: bool,
    /// Programs that may be run, matched exactly against `argv[0]`; empty allows any.
    pub allow_cmds: Vec<String>,
    /// Stop the command after this long: its whole process group gets SIGTERM, then SIGKILL
    /// `kill_grace` later, and the client is told the timeout stopped it.
    pub timeout: Option<Duration>,
    /// Time between the timeout's SIGTERM and its SIGKILL, for the command to clean up.
    pub kill_grace: Duration,
    /// Deadline for the `run` frame after the handshake.
    pub run_request_timeout: Duration,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            shell: false,
            allow_cmds: Vec::new(),
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            run_request_timeout: RUN_REQUEST_TIMEOUT,
        }
    }
}

/// The exec service: one command per authenticated session. Serve it behind a gate that
/// requires a token ([`super::gate`]): [`ExecServer`].
#[derive(Debug)]
pub struct ExecService {
    config: ExecConfig,
}

/// The exec service behind its gate: the engine's handler.
pub type ExecServer = Gated<ExecService>;

impl ExecService {
    /// The service with these settings.
    pub fn new(config: ExecConfig) -> Self {
        ExecService { config }
    }
}

/// What a session runs over: a plain connection (which can splice), or TLS around it.
trait Stream: AsyncRead + AsyncWrite + SpliceWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + SpliceWrite + Unpin + Send> Stream for S {}

/// How a session ended, for the log line.
enum Ending {
    Exited(RemoteExit),
    Refused(String),
    Disconnected,
}

impl FramedService for ExecService {
    /// Reads the request, runs it and logs how it ended.
    async fn serve(&self, framed: Connection<ServerStream>, info: ConnInfo) -> io::Result<()> {
        let started = Instant::now();
        let (argv, ending) = self.run_session(framed, &info).await;
        let status = match &ending {
            Ending::Exited(exit) => exit.to_string(),
            Ending::Refused(code) => format!("refused {code}"),
            Ending::Disconnected => "client disconnected".to_owned(),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(peer = %info.peer, service = "exec", argv = %argv, %status, duration_ms, "exec session");
        Ok(())
    }
}

impl ExecService {
    /// Reads the request, runs it and reports; returns the escaped command line and the ending.
    async fn run_session<S: Stream>(
        &self,
        mut framed: Connection<S>,
        info: &ConnInfo,
    ) -> (String, Ending) {
        let request = timeout(
            self.config.run_request_timeout,
            framed.read_frame::<ClientMessage>(),
        )
        .await;
        let (argv, shell, pty) = match request {
            Ok(Ok(Some(ClientMessage::Run { argv, shell, pty }))) => (argv, shell, pty),
            Ok(Ok(None) | Err(WireError::Io(_) | WireError::UnexpectedEof)) => {
                return (String::new(), Ending::Disconnected)
            }
            Ok(Ok(Some(_))) => {
                let refusal = ErrorFrame::new(
                    "unexpected_message",
                    "the first frame must be a run request",
                );
                return (String::new(), refuse(&mut framed, refusal).await);
            }
            Ok(Err(e)) => {
                return (
                    String::new(),
                    refuse(&mut framed, ErrorFrame::from(&e)).await,
                )
            }
            Err(_) => {
                let refusal = ErrorFrame::new("timeout", "no run request arrived in time");
                return (String::new(), refuse(&mut framed, refusal).await);
            }
        };
        // Debug keeps argument boundaries visible; escaping then covers what Debug lets through.
        let shown = escape_one_line(&format!("{argv:?}"), LOG_ARGV_CHARS);
        let plan = match validate(&self.config, argv, shell, pty.as_ref()) {
            Ok(plan) => plan,
            Err(refusal) => return (shown, refuse(&mut framed, refusal).await),
        };
        let pty = match plan.open_pty() {
            Ok(pty) => pty,
            Err(refusal) => return (shown, refuse(&mut framed, refusal).await),
        };
        let mut escapees = Escapees::new();
        let (child, io) = match spawn(&plan, pty, info, &mut escapees) {
            Ok(spawned) => spawned,
            Err(e) => {
                return (
                    shown,
                    self.report_spawn_failure(&mut framed, &plan, &e).await,
                )
            }
        };
        (
            shown,
            self.supervise(framed, child, io, info, &escapees).await,
        )
    }

    /// A missing or non-executable program is answered like a shell: an error, then exit 127
    /// or 126.
    async fn report_spawn_failure<S: Stream>(
        &self,
        framed: &mut Connection<S>,
        plan: &Plan,
        err: &io::Error,
    ) -> Ending {
        let shown = escape_one_line(&plan.program, LOG_ARGV_CHARS);
        let (refusal, code) = match err.kind() {
            io::ErrorKind::NotFound => (
                ErrorFrame::new("not_found", format!("{shown}: command not found")),
                127,
            ),
            io::ErrorKind::PermissionDenied => (
                ErrorFrame::new("not_executable", format!("{shown}: permission denied")),
                126,
            ),
            _ => {
                return refuse(
                    framed,
                    ErrorFrame::new("spawn_failed", format!("cannot run {shown}: {err}")),
                )
                .await
            }
        };
        let exit = RemoteExit::Code(code);
        if framed
            .write_frame(&ServerMessage::from(&refusal), &[])
            .await
            .is_ok()
            && framed.write_frame(&exit.to_message(), &[]).await.is_ok()
        {
            close(framed).await;
        }
        Ending::Exited(exit)
    }

    /// Streams the child's output, forwards input and signals, enforces the timeout, and
    /// reports the exit. The group, and whatever escaped it, dies with the session however it
    /// ends.
    async fn supervise<S: Stream>(
        &self,
        framed: Connection<S>,
        mut child: Child,
        io: CommandIo,
        info: &ConnInfo,
        escapees: &Escapees,
    ) -> Ending {
        let group = ProcessGroup::of(&child);
        let master;
        let (command_in, command_out) = match io {
            CommandIo::Pipes(stdin, stdout, stderr) => (
                CommandInput::Pipe(Some(stdin)),
                CommandOutput::Pipes(stdout, stderr),
            ),
            CommandIo::Pty(pty) => {
                master = pty;
                (
                    CommandInput::Pty(&master, true),
                    CommandOutput::Pty(&master),
                )
            }
        };
        let is_pty = matches!(command_out, CommandOutput::Pty(_));
        let stop_output = CancellationToken::new();
        let exited = CancellationToken::new();
        let (taken, credits) = watch::channel(Credit::default());
        let mut credits = StdinCredits::new(credits);
        let (mut reader, mut writer) = framed.split();
        let signals = OutputSignals {
            exited: &exited,
            stop: &stop_output,
        };
        let limit = self
            .config
            .timeout
            .map(|after| (after, self.config.kill_grace));
        let mut supervisor =
            Supervisor::new(&mut child, &group, escapees, info, signals, is_pty, limit);
        let pump_out = pump_output(
            &mut writer,
            command_out,
            &mut credits,
            &stop_output,
            &exited,
        );
        let pump_in = pump_input(&mut reader, command_in, &group, taken);
        supervisor.watch(pump_out, pump_in).await;
        let outcome = supervisor.finish().await;
        // Whatever escaped the group dies with the session, whichever way it ended. The sweep
        // reads /proc (milliseconds): the exit is sent meanwhile, not after it.
        let (ending, ()) = tokio::join!(
            report(&mut writer, &mut reader, outcome, info),
            escapees.kill_all_within(CLOSE_LINGER),
        );
        // The pipes or the terminal close when this returns; a sweep still running goes on by
        // the mark alone.
        escapees.release_files();
        ending
    }
}

/// Sends the session's last frame (the exit, or the client's protocol error) for a command
/// that finished, then lingers for the client to close.
async fn report<R, W>(
    writer: &mut Connection<W>,
    reader: &mut Connection<R>,
    outcome: Outcome,
    info: &ConnInfo,
) -> Ending
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncRead + AsyncWrite + Unpin,
{
    let (status, client_error, timed_out_after) = match outcome {
        Outcome::Finished {
            status,
            client_error,
            timed_out_after,
        } => (status, client_error, timed_out_after),
        Outcome::Abandoned => return Ending::Disconnected,
    };
    let exit = exit_of(status);
    let (last, ending) = match client_error {
        Some(refusal) => (
            ServerMessage::from(&refusal),
            Ending::Refused(refusal.code.clone()),
        ),
        None => (exit.to_message_after(timed_out_after), Ending::Exited(exit)),
    };
    if writer.write_frame(&last, &[]).await.is_err() {
        return Ending::Disconnected;
    }
    linger(writer, reader).await;
    if let Some(after) = timed_out_after {
        warn!(peer = %info.peer, ?after, "command stopped by the timeout");
    }
    ending
}

/// Writes `refusal` and ends the session.
async fn refuse<S: Stream>(framed: &mut Connection<S>, refusal: ErrorFrame) -> Ending {
    if framed
        .write_frame(&ServerMessage::from(&refusal), &[])
        .await
        .is_ok()
    {
        close(framed).await;
    }
    Ending::Refused(refusal.code)
}

/// Half-closes after the last frame and lets the client close first (see [`drain`]).
async fn close<S: Stream>(framed: &mut Connection<S>) {
    let stream = framed.get_mut();
    half_close(stream).await;
    drain(stream).await;
}

/// Shuts down the write side, for at most [`CLOSE_LINGER`]: over TLS that writes a
/// close_notify, which must not wait forever on a client that stopped reading.
async fn half_close<S: AsyncWrite + Unpin>(stream: &mut S) {
    let _ = timeout(CLOSE_LINGER, stream.shutdown()).await;
}

/// Half-closes, then waits (bounded) for the client to close too.
async fn linger<R, W>(writer: &mut Connection<W>, reader: &mut Connection<R>)
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncRead + AsyncWrite + Unpin,
{
    half_close(writer.get_mut()).await;
    drain(reader.get_mut()).await;
}

/// Discards what the client still sends until it closes, for at most [`CLOSE_LINGER`]:
/// closing with unread bytes would reset the connection and could destroy our last frame
/// before the client reads it.
async fn drain<S: AsyncRead + Unpin>(stream: &mut S) {
    let discard = async {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = timeout(CLOSE_LINGER, discard).await;
}
