//! The binary's own output: log lines on stderr, result lines on stdout, the final error line.
//! None of them may panic or hold a task up when the terminal or pipe they go to is gone or
//! stops reading (`sockit serve 2>&1 | head -1`, `sockit ls ADDR | head -1`).

use std::io::{self, Write};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Exit status of a client whose stdout reader went away: what a C tool killed by SIGPIPE
/// reports (128 + 13), so `set -o pipefail` scripts see the same as with `ls | head`.
pub const BROKEN_PIPE_EXIT: u8 = 141;

/// Log lines queued for stderr; while stderr does not keep up, further lines are dropped
/// rather than making a connection's task wait.
pub const LOG_QUEUE_LINES: usize = 16 * 1024;

/// Sends log lines to stderr through a writer thread and a bounded, lossy queue, so no task
/// ever blocks on a slow stderr or panics on a closed one. Keep the guard until exit: dropping
/// it flushes what is queued.
pub fn init_logging(filter: EnvFilter, ansi: bool) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .thread_name("sockit-log")
        .finish(Stderr::default());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        // tracing-subscriber reports a failed write with eprintln!, which panics on a closed
        // stderr; Stderr below never fails instead.
        .log_internal_errors(false)
        .init();
    guard
}

/// stderr that drops what it cannot write: after the first failure (the reader closed the
/// pipe) every later line is dropped without trying, as there is nowhere left to say so.
#[derive(Debug, Default)]
struct Stderr {
    closed: bool,
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.closed && io::stderr().write_all(buf).is_err() {
            self.closed = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.closed && io::stderr().flush().is_err() {
            self.closed = true;
        }
        Ok(())
    }
}

/// Writes one result line of a client to stdout. A reader that went away ends the command
/// quietly with [`BROKEN_PIPE_EXIT`], as `ls | head` users expect; any other failure to
/// write stdout is reported on stderr, also with that status.
pub fn print_line(line: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        exit_on_stdout_error(&e);
    }
}

/// Writes `text` to stdout as is (no newline added), as [`print_line`] does.
pub fn print_text(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        exit_on_stdout_error(&e);
    }
}

fn exit_on_stdout_error(e: &io::Error) -> ! {
    if e.kind() != io::ErrorKind::BrokenPipe {
        eprint_line(&format!("sockit: cannot write to stdout: {e}"));
    }
    std::process::exit(i32::from(BROKEN_PIPE_EXIT))
}

/// Writes one line to stderr, dropping it if stderr is closed (`eprintln!` would panic).
pub fn eprint_line(line: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Writes one line to stdout for whoever reads it, for servers: a reader that went away must
/// not take the server down with it, so a failed write is dropped.
pub fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
