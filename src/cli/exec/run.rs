//! `exec run`: one command on an exec server, in sockit's protocol or the tutorial's. Its output
//! is written here, and its exit status becomes ours (ssh's rule).

use crate::cli::output::{eprint_line, BROKEN_PIPE_EXIT};
use std::io::IsTerminal;

use anyhow::Context;
use tokio::signal::unix::{signal as unix_signal, SignalKind};
use tokio::sync::{mpsc, watch};

use super::{fail, required_token, Compat, ExecRunArgs};
use crate::cli::Failure;
use sockit::compat::exec as compat;
use sockit::service::exec::local::{self, Hangups};
use sockit::service::exec::{
    self, ExecError, LocalIo, PtyRequest, RunOutcome, RunRequest, SignalName,
};
use sockit::session::ClientOptions;
use sockit::stdio::{Output, ThreadWriter};
use sockit::terminal::{RawMode, WindowSize};

pub(in crate::cli) async fn run_exec_run(args: ExecRunArgs) -> Result<(), Failure> {
    if let Some(dialect) = args.compat {
        return run_compat_client(args, dialect).await;
    }
    let tls = args.tls.connector(&args.addr)?;
    let token = required_token(args.token_file.as_deref())?;
    let addr = args.addr.resolve().await.map_err(fail)?;
    let stdin_is_tty = std::io::stdin().is_terminal();
    let pty = pty_wanted(args.tty, stdin_is_tty);
    // The guard restores the terminal however this function ends, and is dropped before
    // anything is printed after the run.
    let mut terminal = PtyTerminal::enter(pty.is_some() && stdin_is_tty).map_err(fail)?;
    let signals = forward_interrupts().map_err(fail)?;
    // Output goes through writer threads: tokio's stdout hands every small write to its
    // blocking pool, which capped `exec run -- cat` near 0.3 GB/s (docs/benchmarks.md).
    // Stdout's thread also drains a pipe, so plaintext output can be spliced from the socket.
    let mut stdout = ThreadWriter::spawn_splicing(std::io::stdout());
    let mut stderr = ThreadWriter::spawn(std::io::stderr());
    let io = LocalIo {
        stdin: tokio::io::stdin(),
        stdout: Output::splicing(&mut stdout),
        stderr: &mut stderr,
        signals,
        resizes: terminal.take_resizes(),
    };
    let request = RunRequest {
        argv: args.command,
        shell: args.shell,
        pty,
    };
    let options = ClientOptions {
        tls,
        ..exec::client_options(token)
    };
    let running = exec::run(&addr, &options, &request, io);
    let limited = async {
        match args.timeout {
            Some(limit) => tokio::time::timeout(limit, running).await.map_err(|_| {
                fail(anyhow::anyhow!(
                    "the command did not finish within {limit:?}"
                ))
            }),
            None => Ok(running.await),
        }
    };
    let result = tokio::select! {
        result = limited => result,
        signal = terminal.hangup() => Err(fail(anyhow::anyhow!("terminated by {signal}"))),
    };
    // Everything received is written out before any error or exit status is reported, and
    // the terminal is itself again before anything else is printed.
    let flushed = stdout.finish().await.and(stderr.finish().await);
    drop(terminal);
    let outcome = conclude(result?, flushed)?;
    if let Some(error) = &outcome.error {
        eprint_line(&format!(
            "sockit: remote: {} ({})",
            error.message, error.code
        ));
    }
    if let Some(after) = outcome.timed_out_after {
        eprint_line(&format!(
            "sockit: the command was stopped by the server's timeout after {} ({})",
            humantime_secs(after),
            outcome.exit
        ));
        return Err(Failure::Exit {
            code: TIMED_OUT_EXIT,
            error: None,
        });
    }
    match outcome.exit.exit_code() {
        0 => Ok(()),
        code => Err(Failure::Exit { code, error: None }),
    }
}

/// Exit status when the server's timeout stopped the command, as timeout(1)'s.
const TIMED_OUT_EXIT: u8 = 124;

/// A duration in seconds as people write it: `30 s`, `1.5 s`.
fn humantime_secs(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

/// The pty to ask for: with -t only when stdin is a terminal, with -tt anyway (ssh's rule).
fn pty_wanted(tty: u8, stdin_is_tty: bool) -> Option<PtyRequest> {
    match (tty, stdin_is_tty) {
        (0, _) => None,
        (1, false) => {
            eprint_line(
                "sockit: pseudo-terminal will not be allocated because stdin is not a terminal \
                 (-tt forces one)",
            );
            None
        }
        _ => Some(local::pty_request()),
    }
}

/// Ctrl-C goes to the remote command, which decides whether to die of it. (In raw mode the key
/// is a byte on stdin; this still catches a SIGINT sent from elsewhere.) Returns the signals
/// for the run to forward.
pub(super) fn forward_interrupts() -> anyhow::Result<mpsc::Receiver<SignalName>> {
    let (tx, rx) = mpsc::channel(4);
    let mut interrupts =
        unix_signal(SignalKind::interrupt()).context("cannot install signal handlers")?;
    tokio::spawn(async move {
        while interrupts.recv().await.is_some() {
            if tx.send(SignalName::Int).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// The run's outcome once its output was flushed (`flushed`), or why there is none.
fn conclude(
    run: Result<RunOutcome, ExecError>,
    flushed: std::io::Result<()>,
) -> Result<RunOutcome, Failure> {
    // A reader that went away (`exec run … | head`) ends the run quietly, as with ssh.
    let cannot_write = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::BrokenPipe => Failure::Exit {
            code: BROKEN_PIPE_EXIT,
            error: None,
        },
        _ => fail(anyhow::Error::from(e).context("cannot write the output")),
    };
    match (run, flushed) {
        // The output's own error (a full disk, a closed pipe) says why the run could not
        // hand it the output; the run only saw the hand-over fail.
        (Err(ExecError::Local(_)), Err(e)) => Err(cannot_write(e)),
        (outcome, flushed) => {
            let outcome = outcome.map_err(|e| fail(e.into()))?;
            flushed.map_err(cannot_write)?;
            Ok(outcome)
        }
    }
}

/// The local terminal while `exec run -t` runs, when stdin is one: raw mode, so every key
/// (Ctrl-C, Ctrl-D, Ctrl-Z too) goes to the remote terminal, which gives it its meaning; the
/// window size to follow; SIGTERM and SIGHUP caught. Dropping it restores the terminal.
struct PtyTerminal {
    resizes: Option<watch::Receiver<WindowSize>>,
    hangups: Option<Hangups>,
    /// Held for its drop, which leaves raw mode.
    _raw: Option<RawMode>,
}

impl PtyTerminal {
    /// Sets the terminal up if `wanted`; else leaves it alone.
    fn enter(wanted: bool) -> anyhow::Result<Self> {
        if !wanted {
            return Ok(PtyTerminal {
                resizes: None,
                hangups: None,
                _raw: None,
            });
        }
        let resizes = local::watch_window_size().context("cannot watch the window size")?;
        let hangups = Hangups::install().context("cannot install signal handlers")?;
        // Raw mode last, so nothing can fail after it but the run.
        let raw =
            RawMode::enable(std::io::stdin()).context("cannot put the terminal in raw mode")?;
        Ok(PtyTerminal {
            resizes: Some(resizes),
            hangups: Some(hangups),
            _raw: Some(raw),
        })
    }

    /// The window size for the run to follow (once).
    fn take_resizes(&mut self) -> Option<watch::Receiver<WindowSize>> {
        self.resizes.take()
    }

    /// The name of the next SIGTERM or SIGHUP; never, with the terminal left alone.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Hangups::recv`] is.
    async fn hangup(&mut self) -> &'static str {
        Hangups::recv(&mut self.hangups).await
    }
}

async fn run_compat_client(args: ExecRunArgs, dialect: Compat) -> Result<(), Failure> {
    let line = args.command.join(" ");
    let limit = args.timeout.unwrap_or(compat::DEFAULT_CLIENT_TIMEOUT);
    let addr = args.addr.resolve().await.map_err(fail)?;
    let reply = compat::run(&addr, dialect.into(), &line, tokio::io::stdout(), limit)
        .await
        .map_err(|e| fail(e.into()))?;
    if let Some(header) = reply
        .header
        .filter(|h| !reply.verified && !h.hash.is_empty())
    {
        eprint_line(&format!(
            "sockit: the output's hash is not SHA-256 ({} characters), so it was not checked",
            header.hash.chars().count()
        ));
    }
    Ok(())
}
