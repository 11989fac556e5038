//! `Mode::Process`: a child process per connection with the socket as its stdin and stdout
//! (ForkingMixIn, inetd, `ncat --exec`), in its own process group so it can be ended whole.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
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
}

/// The environment a per-connection child gets, inetd/ncat style: `SOCKIT_PROTO`
/// (`TCP` or `UNIX`), `SOCKIT_REMOTE_ADDR`, `SOCKIT_REMOTE_PORT`, `SOCKIT_LOCAL_ADDR`,
/// `SOCKIT_LOCAL_PORT` (ports only for TCP; Unix addresses are socket paths).
pub fn command_env(peer: &PeerAddr, local: &Addr) -> Vec<(&'static str, String)> {
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

/// Kills the child's whole process group if the connection task is dropped before the child
/// was reaped (the drain deadline passed), so no grandchild outlives the server.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH only means the group is already gone.
            let _ = killpg(pgid, sig);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Runs `cmd` with `stream` as stdin and stdout until it exits. On shutdown the group gets
/// SIGTERM; if the drain deadline passes, dropping this future sends SIGKILL.
pub(super) async fn run(cmd: &ProcessCommand, stream: Stream, info: &ConnInfo) -> io::Result<()> {
    let socket = stream.into_std_fd()?;
    let stdout = socket.try_clone()?;
    let mut command = tokio::process::Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .envs(command_env(&info.peer, &info.local))
        .stdin(Stdio::from(socket))
        .stdout(Stdio::from(stdout))
        .process_group(0)
        .kill_on_drop(true);
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
    let mut guard = GroupGuard {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    };
    debug!(pid = ?guard.pgid, "started child");
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = info.shutdown.cancelled() => {
            guard.signal(Signal::SIGTERM);
            child.wait().await?
        }
    };
    guard.pgid = None;
    info!(%status, "child exited");
    Ok(())
}
