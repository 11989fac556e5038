//! The binary's own output: log lines on stderr, result lines on stdout, the final error line.
//! None of them may panic or hold a task up when the terminal or pipe they go to is gone or
//! stops reading (`sockit serve 2>&1 | head -1`, `sockit ls ADDR | head -1`).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Exit status of a client whose stdout reader went away: what a C tool killed by SIGPIPE
/// reports (128 + 13), so `set -o pipefail` scripts see the same as with `ls | head`.
pub const BROKEN_PIPE_EXIT: u8 = 141;

/// Log lines queued for stderr; while stderr does not keep up, further lines are dropped
/// rather than making a connection's task wait.
pub const LOG_QUEUE_LINES: usize = 16 * 1024;

/// When the binary colours its output (`--color`): log levels on stderr, nicks in `chat
/// join`, and clap's help and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless `NO_COLOR` is set to anything but the empty string.
    #[default]
    Auto,
    /// Always, even into a pipe or a file, and whatever `NO_COLOR` says.
    Always,
    /// Never.
    Never,
}

impl ColorWhen {
    /// Whether output to a stream that `is_terminal` (or not) gets colours, with `NO_COLOR`
    /// as this process's environment has it.
    pub fn enabled(self, is_terminal: bool) -> bool {
        self.enabled_with(is_terminal, std::env::var_os("NO_COLOR").as_deref())
    }

    /// [`Self::enabled`] with the value of `NO_COLOR` given (no-color.org: set and not empty
    /// means no colour; a command-line flag overrides it).
    fn enabled_with(self, is_terminal: bool, no_color: Option<&OsStr>) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => is_terminal && no_color.is_none_or(OsStr::is_empty),
        }
    }

    /// The `--color` on a command line, read before clap parses it so that clap's own help
    /// and errors follow it: the last one before `--` (after it come a remote command's
    /// words). A missing or unknown value is `auto` here; the real parse reports it.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Self {
        let mut when = ColorWhen::Auto;
        let mut args = args.into_iter().skip(1);
        while let Some(arg) = args.next() {
            let value = match arg.to_str() {
                Some("--") => break,
                Some("--color") => args.next(),
                Some(a) => match a.strip_prefix("--color=") {
                    Some(v) => Some(OsString::from(v)),
                    None => continue,
                },
                None => continue,
            };
            when = match value.as_ref().and_then(|v| v.to_str()) {
                Some("always") => ColorWhen::Always,
                Some("never") => ColorWhen::Never,
                _ => ColorWhen::Auto,
            };
        }
        when
    }

    /// The same choice for clap, whose `auto` also honours `NO_COLOR`.
    pub fn for_clap(self) -> clap::ColorChoice {
        match self {
            ColorWhen::Auto => clap::ColorChoice::Auto,
            ColorWhen::Always => clap::ColorChoice::Always,
            ColorWhen::Never => clap::ColorChoice::Never,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_last_color_before_the_double_dash_counts_in_either_spelling() {
        assert_eq!(ColorWhen::from_args(args("sockit ls A")), ColorWhen::Auto);
        assert_eq!(
            ColorWhen::from_args(args("sockit --color never ls A")),
            ColorWhen::Never
        );
        assert_eq!(
            ColorWhen::from_args(args("sockit --color=never chat join --color=always")),
            ColorWhen::Always
        );
        assert_eq!(
            ColorWhen::from_args(args("sockit exec run A --color never -- ls --color=always")),
            ColorWhen::Never
        );
        assert_eq!(
            ColorWhen::from_args(args("sockit --color sometimes")),
            ColorWhen::Auto
        );
    }

    #[test]
    fn auto_colours_a_terminal_unless_no_color_is_set_and_the_flag_overrides_it() {
        let set = Some(OsStr::new("1"));
        assert!(ColorWhen::Auto.enabled_with(true, None));
        assert!(ColorWhen::Auto.enabled_with(true, Some(OsStr::new(""))));
        assert!(!ColorWhen::Auto.enabled_with(true, set));
        assert!(!ColorWhen::Auto.enabled_with(false, None));
        assert!(ColorWhen::Always.enabled_with(false, set));
        assert!(!ColorWhen::Never.enabled_with(true, None));
    }
}
