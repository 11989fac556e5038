//! `Mode::Process`: a child process per connection with the socket as its stdin and stdout
//! (ForkingMixIn, inetd, `ncat --exec`), in its own process group so it can be ended whole.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tracing::{debug, info};

use super::ConnInfo;
use crate::net::{Addr, PeerAddr, Stream};

/// A program and its arguments, run once per connection.
#[derive(Debug, Clone)]
pub struct ProcessCommand {
    /// The program (looked up in `PATH` if it has no slash).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables set in its environment, besides `command_env`'s.
    pub env: Vec<(OsString, OsString)>,
}

/// Variables no child inherits from the server: a token the server was given through its
/// environment must not reach the commands it runs (a remote `env` would print it).
pub(crate) const SCRUBBED_ENV: [&str; 1] = ["SOCKIT_TOKEN"];

/// Sets a per-connection child's environment: [`command_env`]'s variables, and none of
/// [`SCRUBBED_ENV`].
pub(crate) fn set_command_env(cmd: &mut tokio::process::Command, info: &ConnInfo) {
    for name in SCRUBBED_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(command_env(&info.peer, &info.local));
}

/// The environment a per-connection child gets, inetd/ncat style: `SOCKIT_PROTO`
/// (`TCP` or `UNIX`), `SOCKIT_REMOTE_ADDR`, `SOCKIT_REMOTE_PORT`, `SOCKIT_LOCAL_ADDR`,
/// `SOCKIT_LOCAL_PORT` (ports only for TCP; Unix addresses are socket paths).
pub(crate) fn command_env(peer: &PeerAddr, local: &Addr) -> Vec<(&'static str, String)> {
    let mut env = Vec::with_capacity(5);
    match peer {
        PeerAddr::Inet(sa) => {
            env.push(("SOCKIT_PROTO", "TCP".to_string()));
            env.push(("SOCKIT_REMOTE_ADDR", sa.ip().to_string()));
            env.push(("SOCKIT_REMOTE_PORT", sa.port().to_string()));
        }
        PeerAddr::Unix(path) => {
            env.push(("SOCKIT_PROTO", "UNIX".to_string()));
            let path = path.as_ref().map(|p| p.display().to_string());
            env.push(("SOCKIT_REMOTE_ADDR", path.unwrap_or_default()));
        }
    }
    match local {
        Addr::Inet(sa) => {
            env.push(("SOCKIT_LOCAL_ADDR", sa.ip().to_string()));
            env.push(("SOCKIT_LOCAL_PORT", sa.port().to_string()));
        }
        Addr::Unix(path) => env.push(("SOCKIT_LOCAL_ADDR", path.display().to_string())),
    }
    env
}

/// A child's process group (the child was started with `process_group(0)`): signalled as a
/// whole, and SIGKILLed when dropped while armed, so no grandchild outlives a cancelled
/// connection. Disarm it once the leader is reaped, since its id may then be reused.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    /// The group id, or 0 once disarmed.
    pgid: AtomicI32,
}

impl ProcessGroup {
    /// The group led by `child`.
    pub fn of(child: &Child) -> Self {
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or(0);
        ProcessGroup {
            pgid: AtomicI32::new(pgid),
        }
    }

    /// Sends `sig` to every process in the group (nothing once disarmed).
    pub fn signal(&self, sig: Signal) {
        let pgid = self.pgid.load(Ordering::Relaxed);
        if pgid > 0 {
            // ESRCH only means the group is already gone.
            let _ = killpg(Pid::from_raw(pgid), sig);
        }
    }

    /// Stops signalling the group: call after reaping the leader.
    pub(crate) fn disarm(&self) {
        self.pgid.store(0, Ordering::Relaxed);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Signals a command starts with at their defaults whatever this process inherited or set: a
/// server started in the background (`sockit exec serve &`) has SIGINT and SIGQUIT ignored,
/// `nohup` ignores SIGHUP, and `main` ignores SIGXFSZ. A child would inherit all of that, and
/// a forwarded Ctrl-C would do nothing.
const CHILD_DEFAULT_SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGPIPE,
    Signal::SIGXFSZ,
];

/// Makes `cmd` start with SIGINT, SIGQUIT, SIGHUP, SIGPIPE and SIGXFSZ at their default actions.
pub(crate) fn with_default_signals(cmd: &mut tokio::process::Command) {
    // SAFETY: the hook runs in the forked child before exec and only calls sigaction, which
    // is async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            for sig in CHILD_DEFAULT_SIGNALS {
                nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl)?;
            }
            Ok(())
        });
    }
}

/// Runs `cmd` with `stream` as stdin and stdout until it exits. On shutdown the group gets
/// SIGTERM; if the drain deadline passes, dropping this future sends SIGKILL.
///
/// The child does its own I/O, out of the engine's sight, so an `idle` timeout is left to the
/// kernel: a read or write on the socket that waits longer fails (`SO_RCVTIMEO`,
/// `SO_SNDTIMEO`), and a child that stops at its first I/O error frees the connection.
pub async fn run(
    cmd: &ProcessCommand,
    stream: Stream,
    info: &ConnInfo,
    idle: Option<Duration>,
) -> io::Result<()> {
    let socket = stream.into_std_fd()?;
    if let Some(idle) = idle.filter(|d| !d.is_zero()) {
        let sock = socket2::SockRef::from(&socket);
        sock.set_read_timeout(Some(idle))?;
        sock.set_write_timeout(Some(idle))?;
    }
    let stdout = socket.try_clone()?;
    let mut command = tokio::process::Command::new(&cmd.program);
    set_command_env(&mut command, info);
    command
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::from(socket))
        .stdout(Stdio::from(stdout))
        .process_group(0)
        .kill_on_drop(true);
    with_default_signals(&mut command);
    let spawned = command.spawn();
    // The parent's copies of the socket live in `command`: close them now, or the peer would
    // not see EOF when the child exits.
    drop(command);
    let mut child = spawned.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {}: {e}", cmd.program.display()),
        )
    })?;
    let group = ProcessGroup::of(&child);
    debug!(pid = ?child.id(), "started child");
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = info.shutdown.cancelled() => {
            group.signal(Signal::SIGTERM);
            child.wait().await?
        }
    };
    group.disarm();
    info!(status = %exit_text(status), "child exited");
    Ok(())
}

/// `exit 0` or `signal 15`, for a log line (std's form reads `status=exit status: 0`).
pub(crate) fn exit_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::exit_text;

    #[test]
    fn exit_statuses_read_as_words_not_as_std_debug() {
        assert_eq!(exit_text(ExitStatus::from_raw(0)), "exit 0");
        assert_eq!(exit_text(ExitStatus::from_raw(3 << 8)), "exit 3");
        assert_eq!(exit_text(ExitStatus::from_raw(9)), "signal 9");
    }
}
