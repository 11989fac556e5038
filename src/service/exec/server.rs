//! The server half: one authenticated `run` per connection, the child in its own process
//! group, its stdout and stderr streamed as frames as they are produced.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{info, warn};

use super::messages::{ClientMessage, RemoteExit};
use super::pumps::{pump_input, pump_output, InputEnd};
use super::{Refusal, MAX_COMMAND_BYTES, RUN_REQUEST_TIMEOUT};
use crate::net::tls::TlsAcceptor;
use crate::server::ProcessGroup;
use crate::server::{command_env, Conn, ConnInfo, Handler};
use crate::session::{self, AuthLimiter, SessionConfig, Token};
use crate::text::escape_one_line;
use crate::wire::{Connection, WireError};

/// How long a finished session waits for the client to close before closing itself, so
/// unread client bytes do not turn the close into a reset that could eat the `exit` frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Longest escaped command line kept in a log line.
const LOG_ARGV_CHARS: usize = 500;

/// Server settings of the exec service.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Honour `shell: true` requests by running `sh -c LINE`.
    pub shell: bool,
    /// Programs that may be run, matched exactly against `argv[0]`; empty allows any.
    pub allow_cmds: Vec<String>,
    /// Kill the command's whole process group (SIGKILL) after this long.
    pub timeout: Option<Duration>,
    /// Deadline for the `run` frame after the handshake.
    pub run_request_timeout: Duration,
    /// The handshake: service name, deadline, post-auth limits.
    pub session: SessionConfig,
    /// Wrap every connection in TLS first (its handshake deadline is
    /// [`TlsAcceptor::handshake_timeout`]); `None` serves plaintext.
    pub tls: Option<TlsAcceptor>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            shell: false,
            allow_cmds: Vec::new(),
            timeout: None,
            run_request_timeout: RUN_REQUEST_TIMEOUT,
            session: super::session_config(),
            tls: None,
        }
    }
}

/// The exec service's [`Handler`]: authentication is always on.
pub struct ExecServer {
    config: ExecConfig,
    token: Token,
    limiter: AuthLimiter,
}

impl ExecServer {
    /// A server that requires `token` from every client.
    pub fn new(config: ExecConfig, token: Token) -> Self {
        ExecServer {
            config,
            token,
            limiter: AuthLimiter::new(),
        }
    }
}

/// What a session runs over: the engine's [`Conn`], or TLS around it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// A program and its arguments, validated and ready to spawn.
struct Plan {
    program: String,
    args: Vec<String>,
}

/// How a session ended, for the log line.
enum Ending {
    Exited(RemoteExit),
    Refused(&'static str),
    Disconnected,
}

impl Handler for ExecServer {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> io::Result<()> {
        let Some(tls) = &self.config.tls else {
            return self.serve_session(conn, info).await;
        };
        // In the connection's task, under its own deadline: a slow client holds only itself.
        match tls.accept(conn).await {
            Ok(stream) => self.serve_session(stream, info).await,
            Err(e) => {
                warn!(peer = %info.peer, service = "exec", error = %e, "tls handshake failed");
                Ok(())
            }
        }
    }
}

impl ExecServer {
    /// The session over a ready stream, plaintext or TLS: authenticate, run, log.
    async fn serve_session<S: Stream>(&self, stream: S, info: ConnInfo) -> io::Result<()> {
        let mut framed = Connection::new(stream);
        let peer_ip = info.peer.ip();
        let accepted = session::accept(
            &mut framed,
            &self.config.session,
            Some(&self.token),
            peer_ip,
            &self.limiter,
        )
        .await;
        if accepted.is_err() {
            // `accept` has logged the refusal and answered the peer.
            return Ok(());
        }
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
        let (argv, shell) = match request {
            Ok(Ok(Some(ClientMessage::Run { argv, shell }))) => (argv, shell),
            Ok(Ok(None) | Err(WireError::Io(_) | WireError::UnexpectedEof)) => {
                return (String::new(), Ending::Disconnected)
            }
            Ok(Ok(Some(_))) => {
                let refusal = Refusal::new(
                    "unexpected_message",
                    "the first frame must be a run request",
                );
                return (String::new(), refuse(&mut framed, refusal).await);
            }
            Ok(Err(e)) => return (String::new(), refuse(&mut framed, Refusal::from(&e)).await),
            Err(_) => {
                let refusal = Refusal::new("timeout", "no run request arrived in time");
                return (String::new(), refuse(&mut framed, refusal).await);
            }
        };
        // Debug keeps argument boundaries visible; escaping then covers what Debug lets through.
        let shown = escape_one_line(&format!("{argv:?}"), LOG_ARGV_CHARS);
        let plan = match self.validate(argv, shell) {
            Ok(plan) => plan,
            Err(refusal) => return (shown, refuse(&mut framed, refusal).await),
        };
        let child = match spawn(&plan, info) {
            Ok(child) => child,
            Err(e) => {
                return (
                    shown,
                    self.report_spawn_failure(&mut framed, &plan, &e).await,
                )
            }
        };
        (shown, self.supervise(framed, child, info).await)
    }

    fn validate(&self, argv: Vec<String>, shell: bool) -> Result<Plan, Refusal> {
        let total: usize = argv.iter().map(|a| a.len() + 1).sum();
        if total > MAX_COMMAND_BYTES {
            return Err(Refusal::new(
                "command_too_long",
                format!("the command line has {total} bytes; the limit is {MAX_COMMAND_BYTES}"),
            ));
        }
        if argv.first().filter(|p| !p.is_empty()).is_none() {
            return Err(Refusal::new("invalid_command", "the command is empty"));
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(Refusal::new(
                "invalid_command",
                "an argument contains a NUL byte",
            ));
        }
        if shell {
            if !self.config.shell {
                return Err(Refusal::new(
                    "shell_not_allowed",
                    "this server does not run shell command lines",
                ));
            }
            if !self.config.allow_cmds.is_empty() {
                return Err(Refusal::new(
                    "command_not_allowed",
                    "a shell line cannot be checked against the allowed commands",
                ));
            }
            return Ok(Plan {
                program: "sh".to_owned(),
                args: vec!["-c".to_owned(), argv.join(" ")],
            });
        }
        let mut words = argv.into_iter();
        let program = words.next().unwrap_or_default();
        if !self.config.allow_cmds.is_empty() && !self.config.allow_cmds.contains(&program) {
            let shown = escape_one_line(&program, LOG_ARGV_CHARS);
            return Err(Refusal::new(
                "command_not_allowed",
                format!("{shown} is not an allowed command on this server"),
            ));
        }
        Ok(Plan {
            program,
            args: words.collect(),
        })
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
                Refusal::new("not_found", format!("{shown}: command not found")),
                127,
            ),
            io::ErrorKind::PermissionDenied => (
                Refusal::new("not_executable", format!("{shown}: permission denied")),
                126,
            ),
            _ => {
                return refuse(
                    framed,
                    Refusal::new("spawn_failed", format!("cannot run {shown}: {err}")),
                )
                .await
            }
        };
        let exit = RemoteExit::Code(code);
        if framed.write_frame(&refusal.to_message(), &[]).await.is_ok()
            && framed.write_frame(&exit.to_message(), &[]).await.is_ok()
        {
            close(framed).await;
        }
        Ending::Exited(exit)
    }

    /// Streams the child's output, forwards input and signals, enforces the timeout, and
    /// reports the exit. The group dies with the session however it ends.
    async fn supervise<S: Stream>(
        &self,
        framed: Connection<S>,
        mut child: Child,
        info: &ConnInfo,
    ) -> Ending {
        let group = ProcessGroup::of(&child);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Ending::Disconnected;
        };
        let (mut reader, mut writer) = framed.split();
        let deadline = self.config.timeout.map(|t| Instant::now() + t);
        let mut status: Option<io::Result<ExitStatus>> = None;
        let mut output: Option<Result<(), WireError>> = None;
        let mut client_error: Option<Refusal> = None;
        let (mut input_done, mut timed_out, mut terminating) = (false, false, false);
        {
            let pump_out = pump_output(&mut writer, stdout, stderr);
            let pump_in = pump_input(&mut reader, stdin, &group);
            let timer = sleep_until(deadline.unwrap_or_else(far_future));
            tokio::pin!(pump_out, pump_in, timer);
            while status.is_none() || output.is_none() {
                tokio::select! {
                    res = &mut pump_out, if output.is_none() => output = Some(res),
                    end = &mut pump_in, if !input_done => {
                        input_done = true;
                        group.signal(Signal::SIGKILL);
                        match end {
                            InputEnd::Closed => break,
                            InputEnd::Invalid(refusal) => client_error = Some(refusal),
                        }
                    }
                    res = child.wait(), if status.is_none() => {
                        // Background processes left behind die with the command, so its
                        // output reaches EOF and nothing outlives the session.
                        group.signal(Signal::SIGKILL);
                        group.disarm();
                        status = Some(res);
                    }
                    () = &mut timer, if !timed_out && deadline.is_some() => {
                        timed_out = true;
                        group.signal(Signal::SIGKILL);
                    }
                    () = info.shutdown.cancelled(), if !terminating => {
                        terminating = true;
                        group.signal(Signal::SIGTERM);
                    }
                }
                if matches!(output, Some(Err(_))) {
                    // The client stopped reading for good: it is gone.
                    group.signal(Signal::SIGKILL);
                    break;
                }
            }
        }
        let status = match (status, output) {
            (Some(Ok(status)), Some(Ok(()))) => status,
            _ => {
                // Killed above; reaping is prompt, and kill_on_drop covers the rest.
                let _ = timeout(CLOSE_LINGER, child.wait()).await;
                return Ending::Disconnected;
            }
        };
        let exit = exit_of(status);
        let (last, ending) = match client_error {
            Some(refusal) => (refusal.to_message(), Ending::Refused(refusal.code)),
            None => (exit.to_message(), Ending::Exited(exit)),
        };
        if writer.write_frame(&last, &[]).await.is_err() {
            return Ending::Disconnected;
        }
        linger(&mut writer, &mut reader).await;
        if timed_out {
            warn!(peer = %info.peer, "command killed at the timeout");
        }
        ending
    }
}

/// Writes `refusal` and ends the session.
async fn refuse<S: Stream>(framed: &mut Connection<S>, refusal: Refusal) -> Ending {
    if framed.write_frame(&refusal.to_message(), &[]).await.is_ok() {
        close(framed).await;
    }
    Ending::Refused(refusal.code)
}

/// Half-closes after the last frame and lets the client close first (see [`drain`]).
async fn close<S: Stream>(framed: &mut Connection<S>) {
    let stream = framed.get_mut();
    let _ = stream.shutdown().await;
    drain(stream).await;
}

fn spawn(plan: &Plan, info: &ConnInfo) -> io::Result<Child> {
    Command::new(&plan.program)
        .args(&plan.args)
        .envs(command_env(&info.peer, &info.local))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

fn exit_of(status: ExitStatus) -> RemoteExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => RemoteExit::Code(code),
        (None, Some(sig)) => RemoteExit::Signal(sig),
        (None, None) => RemoteExit::Code(255),
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Half-closes, then waits (bounded) for the client to close too.
async fn linger<R, W>(writer: &mut Connection<W>, reader: &mut Connection<R>)
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncRead + AsyncWrite + Unpin,
{
    let _ = writer.get_mut().shutdown().await;
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
