//! `sockit exec shell`: the tutorial's prompt loop on top of [`run`]. Each line is one
//! authenticated `run` on a fresh connection (the exec protocol runs one command per
//! connection), so a refused line costs nothing but its own connection. The loop itself
//! (`prompt_loop`) also drives the compat dialects' shell, over one connection.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::client::{run, ExecError, LocalIo, RunRequest};
use super::MAX_COMMAND_BYTES;
use crate::net::Addr;
use crate::session::ClientOptions;
use crate::stdio::Output;

/// What the shell prints before reading each line.
pub const PROMPT: &str = "sockit> ";

/// How each line is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineForm {
    /// As one `sh -c` line (the server must run with `--shell`).
    Shell,
    /// Split on whitespace into a program and its arguments (no shell on either side).
    Words,
}

/// The local ends of a shell session.
#[derive(Debug)]
pub struct ShellIo<I, O, E> {
    /// Command lines, one per line, until EOF or `exit`.
    pub input: I,
    /// The commands' stdout.
    pub stdout: O,
    /// The prompt, the commands' stderr, and refusals.
    pub stderr: E,
    /// Whether to print [`PROMPT`] before each line: for a person at a terminal, not for lines
    /// piped in.
    pub prompt: bool,
}

/// Reads lines from `io.input` and runs each on the exec server at `addr`, until EOF or a line
/// `exit [N]`. Returns N, else the last command's exit code (0 if none ran), as a shell does.
/// A refused line (e.g. `shell_not_allowed`) is reported on `io.stderr` and the loop goes on.
///
/// # Errors
///
/// Failures that would repeat on every line end the session: the server cannot be reached,
/// the handshake fails (wrong token), or the connection breaks.
pub async fn shell<I, O, E>(
    addr: &Addr,
    options: &ClientOptions,
    form: LineForm,
    mut io: ShellIo<I, O, E>,
) -> Result<u8, ExecError>
where
    I: AsyncBufRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut runner = ExecLines {
        addr,
        options,
        form,
    };
    prompt_loop(&mut runner, &mut io).await
}

/// What runs each line of a prompt loop: the exec protocol's (a connection per line) or a
/// compat dialect's (one connection for all).
pub(crate) trait LineRunner {
    /// What ends the loop.
    type Error;

    /// A local write failure as `Self::Error`.
    fn local(error: std::io::Error) -> Self::Error;

    /// Runs `line`, writing its output; returns its exit code. An error ends the loop.
    async fn run_line<O, E>(
        &mut self,
        line: &str,
        stdout: &mut O,
        stderr: &mut E,
    ) -> Result<u8, Self::Error>
    where
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin;
}

/// The prompt loop itself: reads lines until EOF or `exit [N]` and runs each with `runner`.
/// Returns N, else the last line's exit code (0 if none ran).
///
/// # Errors
/// The runner's, and a failure to read input or write locally.
pub(crate) async fn prompt_loop<R, I, O, E>(
    runner: &mut R,
    io: &mut ShellIo<I, O, E>,
) -> Result<u8, R::Error>
where
    R: LineRunner,
    I: AsyncBufRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let ShellIo {
        input,
        stdout,
        stderr,
        prompt,
    } = io;
    let prompt = *prompt;
    let mut last = 0;
    loop {
        if prompt {
            write_local(stderr, PROMPT.as_bytes())
                .await
                .map_err(R::local)?;
        }
        let Some(line) = read_line(input).await.map_err(R::local)? else {
            if prompt {
                // End the prompt's line, as a shell does at Ctrl-D.
                write_local(stderr, b"\n").await.map_err(R::local)?;
            }
            break;
        };
        let Ok(line) = String::from_utf8(line) else {
            write_local(stderr, b"sockit: the line is not UTF-8\n")
                .await
                .map_err(R::local)?;
            continue;
        };
        let line = line.trim();
        match exit_command(line) {
            Some(Ok(None)) => break,
            Some(Ok(Some(code))) => return Ok(code),
            Some(Err(())) => {
                write_local(stderr, b"sockit: exit takes one number: exit [N]\n")
                    .await
                    .map_err(R::local)?;
                last = 2;
                continue;
            }
            None => {}
        }
        if line.is_empty() {
            continue;
        }
        last = runner.run_line(line, stdout, stderr).await?;
    }
    Ok(last)
}

/// Lines run with the exec protocol, each on a connection of its own.
struct ExecLines<'a> {
    addr: &'a Addr,
    options: &'a ClientOptions,
    form: LineForm,
}

impl LineRunner for ExecLines<'_> {
    type Error = ExecError;

    fn local(error: std::io::Error) -> ExecError {
        ExecError::Local(error)
    }

    /// Runs one line on the server, writing its output and any refusal locally; returns its
    /// exit code (255 for a refused line). Errors only for failures that would repeat on
    /// every line.
    async fn run_line<O, E>(
        &mut self,
        line: &str,
        stdout: &mut O,
        stderr: &mut E,
    ) -> Result<u8, ExecError>
    where
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let argv = match self.form {
            LineForm::Shell => vec![line.to_owned()],
            LineForm::Words => line.split_whitespace().map(str::to_owned).collect(),
        };
        let request = RunRequest {
            argv,
            shell: self.form == LineForm::Shell,
            pty: None,
        };
        // Nothing to forward: the command gets an empty stdin, and Ctrl-C ends the shell.
        let (_signals, rx) = mpsc::channel(1);
        let local = LocalIo {
            stdin: tokio::io::empty(),
            stdout: Output::new(&mut *stdout),
            stderr: &mut *stderr,
            signals: rx,
            resizes: None,
        };
        match run(self.addr, self.options, &request, local).await {
            Ok(outcome) => {
                if let Some(error) = outcome.error {
                    let text = format!("sockit: remote: {} ({})\n", error.message, error.code);
                    write_local(stderr, text.as_bytes())
                        .await
                        .map_err(ExecError::Local)?;
                }
                Ok(outcome.exit.exit_code())
            }
            Err(ExecError::Remote(error)) => {
                let hint = if error.code == "shell_not_allowed" {
                    " (the server runs without --shell: try `sockit exec shell --words`)"
                } else {
                    ""
                };
                let text = format!("sockit: remote: {} ({}){hint}\n", error.message, error.code);
                write_local(stderr, text.as_bytes())
                    .await
                    .map_err(ExecError::Local)?;
                Ok(255)
            }
            Err(e) => Err(e),
        }
    }
}

/// The shell's own `exit [N]`: `None` for any other line, `Some(Ok(None))` for a bare `exit`
/// (the last status stands), `Some(Ok(Some(N)))` with N taken modulo 256 as sh does, and
/// `Some(Err(()))` for an `exit` with anything but one integer after it.
fn exit_command(line: &str) -> Option<Result<Option<u8>, ()>> {
    let mut words = line.split_whitespace();
    if words.next() != Some("exit") {
        return None;
    }
    Some(match (words.next(), words.next()) {
        (None, _) => Ok(None),
        (Some(n), None) => n
            .parse::<i64>()
            .map(|n| Some(n.rem_euclid(256) as u8))
            .map_err(drop),
        (Some(_), Some(_)) => Err(()),
    })
}

/// Reads one line without its newline, or `None` at EOF. Of a line longer than the exec
/// protocol allows, only the first `MAX_COMMAND_BYTES + 1` bytes are kept (the rest is
/// skipped), so the server's `command_too_long` refusal reports it without unbounded memory.
async fn read_line<I: AsyncBufRead + Unpin>(input: &mut I) -> std::io::Result<Option<Vec<u8>>> {
    let cap = (MAX_COMMAND_BYTES + 1) as u64;
    let mut line = Vec::new();
    let n = (&mut *input).take(cap).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && n as u64 == cap {
        // Skip the rest of the overlong line without holding it.
        let mut rest = Vec::new();
        while (&mut *input).take(cap).read_until(b'\n', &mut rest).await? > 0 {
            if rest.last() == Some(&b'\n') {
                break;
            }
            rest.clear();
        }
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(Some(line))
}

/// Writes and flushes a prompt, a refusal or a note.
pub(crate) async fn write_local<W: AsyncWrite + Unpin>(
    out: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    out.write_all(bytes).await?;
    out.flush().await
}
