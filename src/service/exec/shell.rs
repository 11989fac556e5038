//! `sockit exec shell`: the tutorial's prompt loop on top of [`run`]. Each line is one
//! authenticated `run` on a fresh connection (the exec protocol runs one command per
//! connection), so a refused line costs nothing but its own connection. The loop itself
//! (`prompt_loop`) also drives the compat dialects' shell, over one connection.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::client::{run, ExecError, LocalIo, RunRequest};
use super::messages::SignalName;
use super::MAX_COMMAND_BYTES;
use crate::net::Addr;
use crate::session::ClientOptions;
use crate::stdio::Output;

/// What the shell prints before reading each line.
pub const PROMPT: &str = "sockit> ";

/// The shell's exit status when an interrupt ends it while it waits for a line that is not
/// typed at a prompt (128 + SIGINT, as sh).
pub const INTERRUPTED_EXIT: u8 = 130;

/// Signals forwarded to one running command at most, queued while it starts.
const QUEUED_SIGNALS: usize = 4;

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
    /// Local interrupts (Ctrl-C, SIGINT): each goes to the running command, as SIGINT, and
    /// the loop goes on with the next line. Between commands one drops the line being typed
    /// and prompts again, as sh does; without a prompt (lines piped in) it ends the shell
    /// with [`INTERRUPTED_EXIT`]. `None`: interrupts are not this loop's business.
    pub interrupts: Option<mpsc::Receiver<SignalName>>,
}

/// Reads lines from `io.input` and runs each on the exec server at `addr`, until EOF or a line
/// `exit [N]`. Returns N, else the last command's exit code (0 if none ran), as a shell does.
/// A refused line (e.g. `not_found`, `command_not_allowed`) is reported on `io.stderr` and
/// the loop goes on. A server that runs no shell lines refuses every line alike, so its
/// refusal is reported once, with how to run the commands (`--words`, [`LineForm::Words`]),
/// and ends the shell with 255.
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

    /// Runs `line`, writing its output to `io` (and forwarding `io`'s interrupts where the
    /// protocol can); returns how it ended. An error ends the loop.
    async fn run_line<O, E>(
        &mut self,
        line: &str,
        io: &mut LineIo<'_, O, E>,
    ) -> Result<LineEnd, Self::Error>
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
        interrupts,
    } = io;
    let prompt = *prompt;
    let mut last = 0;
    loop {
        if prompt {
            write_local(stderr, PROMPT.as_bytes())
                .await
                .map_err(R::local)?;
        }
        let line = match next_line(input, interrupts, stderr, prompt)
            .await
            .map_err(R::local)?
        {
            Read::Line(line) => Some(line),
            Read::Eof => None,
            Read::Interrupted => return Ok(INTERRUPTED_EXIT),
        };
        let Some(line) = line else {
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
        let mut local = LineIo {
            stdout: &mut *stdout,
            stderr: &mut *stderr,
            interrupts: &mut *interrupts,
            prompt,
        };
        last = match runner.run_line(line, &mut local).await? {
            LineEnd::Exited(code) => code,
            LineEnd::NoShell => return Ok(255),
        };
    }
    Ok(last)
}

/// What waiting for a line brought.
enum Read {
    Line(Vec<u8>),
    Eof,
    /// An interrupt with no prompt: the shell ends.
    Interrupted,
}

/// Waits for the next line. An interrupt meanwhile drops the line being typed (the terminal
/// already discarded it) and prompts again; with no prompt it ends the shell.
///
/// # Errors
///
/// A local read or write error.
async fn next_line<I, E>(
    input: &mut I,
    interrupts: &mut Option<mpsc::Receiver<SignalName>>,
    stderr: &mut E,
    prompt: bool,
) -> std::io::Result<Read>
where
    I: AsyncBufRead + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut line = Vec::new();
    loop {
        // Both are cancel safe: a read cut short keeps what it read in `line` and goes on
        // where it stopped. Biased: input already there is taken before an interrupt drops it.
        tokio::select! {
            biased;
            read = read_line(input, &mut line) => {
                return match read? {
                    Some(line) => Ok(Read::Line(line)),
                    None => Ok(Read::Eof),
                };
            }
            () = next_interrupt(interrupts) => {
                if !prompt {
                    return Ok(Read::Interrupted);
                }
                line.clear();
                write_local(stderr, b"\n").await?;
                write_local(stderr, PROMPT.as_bytes()).await?;
            }
        }
    }
}

/// The next interrupt; never, without a source of them (or once it is gone).
///
/// # Cancel safety
///
/// Cancel safe, as `mpsc::Receiver::recv` is.
async fn next_interrupt(interrupts: &mut Option<mpsc::Receiver<SignalName>>) {
    match interrupts {
        Some(rx) => match rx.recv().await {
            Some(_) => {}
            None => {
                *interrupts = None;
                std::future::pending::<()>().await;
            }
        },
        None => std::future::pending::<()>().await,
    }
}

/// The local ends one line's command is wired to.
pub(crate) struct LineIo<'a, O, E> {
    pub(crate) stdout: &'a mut O,
    pub(crate) stderr: &'a mut E,
    interrupts: &'a mut Option<mpsc::Receiver<SignalName>>,
    prompt: bool,
}

/// How one line came out.
pub(crate) enum LineEnd {
    /// It ran (or was refused, 255): its exit code.
    Exited(u8),
    /// The server runs no shell lines: so would every other line be refused.
    NoShell,
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

    /// Runs one line on the server, writing its output and any refusal locally, and
    /// forwarding interrupts to it; returns how it ended (an exit code, 255 for a refused
    /// line). Errors only for the failures that would repeat on every line.
    async fn run_line<O, E>(
        &mut self,
        line: &str,
        io: &mut LineIo<'_, O, E>,
    ) -> Result<LineEnd, ExecError>
    where
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        let form = self.form;
        let argv = match form {
            LineForm::Shell => vec![line.to_owned()],
            LineForm::Words => line.split_whitespace().map(str::to_owned).collect(),
        };
        let request = RunRequest {
            argv,
            shell: form == LineForm::Shell,
            pty: None,
        };
        // The command gets an empty stdin (the lines are the shell's), and the interrupts.
        let (signals, rx) = mpsc::channel(QUEUED_SIGNALS);
        let local = LocalIo {
            stdin: tokio::io::empty(),
            stdout: Output::new(&mut *io.stdout),
            stderr: &mut *io.stderr,
            signals: rx,
            resizes: None,
        };
        let mut interrupted = false;
        let result = {
            let running = run(self.addr, self.options, &request, local);
            tokio::pin!(running);
            loop {
                // `running` is polled in place, never dropped before it ends; `next_interrupt` is
                // cancel safe.
                tokio::select! {
                    result = &mut running => break result,
                    () = next_interrupt(io.interrupts) => {
                        interrupted = true;
                        // A full queue already holds interrupts the command was not sent yet.
                        let _ = signals.try_send(SignalName::Int);
                    }
                }
            }
        };
        if interrupted && io.prompt {
            // The terminal echoed ^C: the next prompt starts a line of its own, as in sh.
            write_local(io.stderr, b"\n")
                .await
                .map_err(ExecError::Local)?;
        }
        match result {
            Ok(outcome) => {
                if let Some(error) = outcome.error {
                    let text = format!("sockit: remote: {} ({})\n", error.message, error.code);
                    write_local(io.stderr, text.as_bytes())
                        .await
                        .map_err(ExecError::Local)?;
                }
                Ok(LineEnd::Exited(outcome.exit.exit_code()))
            }
            Err(ExecError::Remote(error)) if error.code == "shell_not_allowed" => {
                let text = format!(
                    "sockit: remote: {} ({}); every line would be refused: run \
                 `sockit exec shell --words ADDR` to send each line as a program and its \
                 arguments, or start the server with --shell\n",
                    error.message, error.code
                );
                write_local(io.stderr, text.as_bytes())
                    .await
                    .map_err(ExecError::Local)?;
                Ok(LineEnd::NoShell)
            }
            Err(ExecError::Remote(error)) => {
                let text = format!("sockit: remote: {} ({})\n", error.message, error.code);
                write_local(io.stderr, text.as_bytes())
                    .await
                    .map_err(ExecError::Local)?;
                Ok(LineEnd::Exited(255))
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

/// Reads one line into `line` and returns it without its newline, or `None` at EOF. Of a
/// line longer than the exec protocol allows, only the first `MAX_COMMAND_BYTES + 1` bytes
/// are kept (the rest is skipped), so the server's `command_too_long` refusal reports it
/// without unbounded memory.
///
/// # Cancel safety
///
/// Cancel safe if called again with the same `line`: what was read is kept there.
async fn read_line<I: AsyncBufRead + Unpin>(
    input: &mut I,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
    let cap = (MAX_COMMAND_BYTES + 1) as u64;
    let room = cap.saturating_sub(line.len() as u64);
    (&mut *input).take(room).read_until(b'\n', line).await?;
    let n = line.len();
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
    Ok(Some(std::mem::take(line)))
}

/// Writes and flushes a prompt, a refusal or a note.
pub(crate) async fn write_local<W: AsyncWrite + Unpin>(
    out: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    out.write_all(bytes).await?;
    out.flush().await
}
