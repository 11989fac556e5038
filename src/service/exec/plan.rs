//! What a `run` request becomes: a checked [`Plan`], then a command spawned on pipes or on a
//! pseudo-terminal, in a process group of its own.

use std::io;
use std::process::{ExitStatus, Stdio};

use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdin, Command};

use super::escapees::{Escapees, SESSION_MARK_VAR};
use super::messages::{PtyRequest, RemoteExit};
use super::server::ExecConfig;
use super::{MAX_COMMAND_BYTES, STDOUT_PIPE_BYTES};
use crate::engine::{set_command_env, with_default_signals, ConnInfo};
use crate::terminal::{Pty, PtyMaster, WindowSize};
use crate::text::escape_one_line;
use crate::wire::ErrorFrame;

/// Longest escaped program name repeated in a refusal.
const SHOWN_PROGRAM_CHARS: usize = 500;

/// A program and its arguments, validated and ready to spawn.
pub(super) struct Plan {
    pub(super) program: String,
    pub(super) args: Vec<String>,
    /// The terminal to run it on, and its `TERM`.
    pub(super) pty: Option<(WindowSize, String)>,
}

impl Plan {
    /// The pty the plan asks for, opened apart from the spawn so that a host out of ptys is
    /// not reported as a missing program.
    pub(super) fn open_pty(&self) -> Result<Option<Pty>, ErrorFrame> {
        let Some((size, _)) = &self.pty else {
            return Ok(None);
        };
        Pty::open(*size).map(Some).map_err(|e| {
            ErrorFrame::new(
                "pty_failed",
                format!("cannot allocate a pseudo-terminal: {e}"),
            )
        })
    }
}

/// A spawned command's ends. Stdout is a plain pipe receiver, so the output pump can wait for
/// it to be readable and splice from it without reading.
pub(super) enum CommandIo {
    Pipes(ChildStdin, pipe::Receiver, ChildStderr),
    Pty(PtyMaster),
}

/// Checks a `run` request against the limits and `config`; the refusal says what is wrong.
pub(super) fn validate(
    config: &ExecConfig,
    argv: Vec<String>,
    shell: bool,
    pty: Option<&PtyRequest>,
) -> Result<Plan, ErrorFrame> {
    let total: usize = argv.iter().map(|a| a.len() + 1).sum();
    if total > MAX_COMMAND_BYTES {
        return Err(ErrorFrame::new(
            "command_too_long",
            format!("the command line has {total} bytes; the limit is {MAX_COMMAND_BYTES}"),
        ));
    }
    if argv.first().filter(|p| !p.is_empty()).is_none() {
        return Err(ErrorFrame::new("invalid_command", "the command is empty"));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ErrorFrame::new(
            "invalid_command",
            "an argument contains a NUL byte",
        ));
    }
    let pty = match pty.map(PtyRequest::validate).transpose() {
        Ok(pty) => pty.map(|(size, term)| (size, term.to_owned())),
        Err(why) => return Err(ErrorFrame::new("invalid_pty", why)),
    };
    if shell {
        if !config.shell {
            return Err(ErrorFrame::new(
                "shell_not_allowed",
                "this server does not run shell command lines",
            ));
        }
        if !config.allow_cmds.is_empty() {
            return Err(ErrorFrame::new(
                "command_not_allowed",
                "a shell line cannot be checked against the allowed commands",
            ));
        }
        return Ok(Plan {
            program: "sh".to_owned(),
            args: vec!["-c".to_owned(), argv.join(" ")],
            pty,
        });
    }
    let mut words = argv.into_iter();
    let program = words.next().unwrap_or_default();
    if !config.allow_cmds.is_empty() && !config.allow_cmds.contains(&program) {
        let shown = escape_one_line(&program, SHOWN_PROGRAM_CHARS);
        return Err(ErrorFrame::new(
            "command_not_allowed",
            format!("{shown} is not an allowed command on this server"),
        ));
    }
    Ok(Plan {
        program,
        args: words.collect(),
        pty,
    })
}

/// Starts the command in a process group of its own: on pipes, or on `pty`, in a new session
/// it leads (a session leader's group id is its pid, so the group kill still works). Its
/// environment carries the session's mark and `escapees` learns its pipes or terminal, so
/// what it leaves behind outside its group can be found.
pub(super) fn spawn(
    plan: &Plan,
    pty: Option<Pty>,
    info: &ConnInfo,
    escapees: &mut Escapees,
) -> io::Result<(Child, CommandIo)> {
    let mut cmd = Command::new(&plan.program);
    set_command_env(&mut cmd, info);
    cmd.env(SESSION_MARK_VAR, escapees.mark());
    cmd.args(&plan.args).kill_on_drop(true);
    with_default_signals(&mut cmd);
    if let Some(pty) = pty {
        if let Some((_, term)) = &plan.pty {
            cmd.env("TERM", term);
        }
        escapees.watch_file(pty.slave());
        escapees.hold_open(pty.master());
        let (child, master) = pty.spawn(cmd)?;
        return Ok((child, CommandIo::Pty(master)));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
        (Some(stdin), Some(stdout), Some(stderr)) => {
            escapees.watch_file(&stdin);
            escapees.watch_file(&stdout);
            escapees.watch_file(&stderr);
            let stdout = pipe::Receiver::from_owned_fd(stdout.into_owned_fd()?)?;
            widen_pipe(&stdout);
            Ok((child, CommandIo::Pipes(stdin, stdout, stderr)))
        }
        _ => Err(io::Error::other("the command's pipes are missing")),
    }
}

/// Asks for a [`STDOUT_PIPE_BYTES`] stdout pipe, so a command that writes fast (`cat` of a
/// big file) blocks less often and each read moves more. Best effort: the kernel caps pipe
/// sizes for unprivileged users (`/proc/sys/fs/pipe-max-size`), and the default still works.
fn widen_pipe(stdout: &pipe::Receiver) {
    #[cfg(target_os = "linux")]
    {
        let size = i32::try_from(STDOUT_PIPE_BYTES).unwrap_or(i32::MAX);
        let _ = nix::fcntl::fcntl(stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stdout;
}

/// The exit status as the `exit` frame carries it.
pub(super) fn exit_of(status: ExitStatus) -> RemoteExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => RemoteExit::Code(code),
        (None, Some(sig)) => RemoteExit::Signal(sig),
        (None, None) => RemoteExit::Code(255),
    }
}
