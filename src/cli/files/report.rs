//! What a transfer shows on the terminal: a progress bar while it runs, then a line per failed
//! file and one summary line.

use crate::cli::output::eprint_line;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressDrawTarget, TermLike};

use crate::cli::Failure;
use sockit::service::files::{self, FileReport, HashAlg, Progress};

/// Columns the bar leaves free at the right edge of the terminal: room for the `^C` a
/// terminal echoes at the cursor when Ctrl-C is pressed. A bar filling the whole width would
/// have that echo wrap onto a new line, and clearing the bar would then clear the wrong line.
const BAR_RIGHT_MARGIN: u16 = 3;

/// A bar on stderr when it is a terminal and not `-q`; else none (the summary line says it
/// all). The bar is cleared before anything else is printed.
pub(super) fn progress_bar(quiet: bool) -> Progress {
    if quiet || !std::io::stderr().is_terminal() {
        return Progress::hidden();
    }
    let term = MarginTerm(console::Term::stderr());
    Progress::new(ProgressDrawTarget::term_like(Box::new(term)))
}

/// Standard error as the bar sees it: [`BAR_RIGHT_MARGIN`] columns narrower than it is.
#[derive(Debug)]
struct MarginTerm(console::Term);

impl TermLike for MarginTerm {
    fn width(&self) -> u16 {
        TermLike::width(&self.0)
            .saturating_sub(BAR_RIGHT_MARGIN)
            .max(1)
    }
    fn height(&self) -> u16 {
        TermLike::height(&self.0)
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::Write::flush(&mut &self.0)
    }
}

/// Which name a file was asked to land under, on the receiving side: the remote path for
/// `put`, the local one for `get`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Receiver {
    Remote,
    Local,
}

/// One line per failed file: `sockit: VERB: NAME: why`, the name said once (the receiver's
/// message usually starts with it) and no wire code.
pub(super) fn print_failures(verb: &str, files: &[FileReport]) {
    for file in files {
        if let Err(rejection) = &file.result {
            eprint_line(&failure_line(verb, file, rejection));
        }
    }
}

fn failure_line(verb: &str, file: &FileReport, rejection: &files::Rejection) -> String {
    let name = if file.local.is_empty() {
        &file.remote
    } else {
        &file.local
    };
    let mut why = rejection.message.as_str();
    for said in [&file.remote, &file.local]
        .into_iter()
        .filter(|n| !n.is_empty())
    {
        if let Some(rest) = why.strip_prefix(said.as_str()) {
            why = rest.strip_prefix(':').unwrap_or(rest).trim_start();
            break;
        }
    }
    format!("sockit: {verb}: {name}: {why}")
}

/// A line per file stored under another name than asked (the rename policy found the name
/// taken): `VERB: NAME stored as NAME (1).ext`.
pub(super) fn print_renamed(verb: &str, files: &[FileReport], asked: Receiver) {
    for file in files.iter().filter(|f| f.kind == files::Kind::File) {
        let requested = match asked {
            Receiver::Remote => &file.remote,
            Receiver::Local => &file.local,
        };
        if let Ok(name) = &file.result {
            if name != requested {
                eprint_line(&format!(
                    "{verb}: {requested} stored as {name} (the name was taken)"
                ));
            }
        }
    }
}

/// One line on stderr: what landed, how many bytes crossed the wire, how fast, verified how;
/// and how many failed. Nothing when nothing landed: the failure lines said it all.
pub(super) fn summary_line(
    verb: &str,
    files: &[FileReport],
    (moved, elapsed, hash): (u64, Duration, HashAlg),
) {
    let done = |kind| {
        files
            .iter()
            .filter(|f| f.kind == kind && f.result.is_ok())
            .count()
    };
    let (ok_files, ok_dirs) = (done(files::Kind::File), done(files::Kind::Dir));
    let failed = files.iter().filter(|f| f.result.is_err()).count();
    if failed > 0 && ok_files + ok_dirs == 0 {
        return;
    }
    let unchanged = files
        .iter()
        .filter(|f| f.unchanged && f.result.is_ok())
        .count();
    // Sizes a server may have declared: summed without overflowing.
    let bytes = files
        .iter()
        .filter(|f| f.result.is_ok())
        .map(|f| f.size)
        .fold(0, u64::saturating_add);
    let verified = if ok_files > 0 {
        format!("; verified {hash}")
    } else {
        String::new()
    };
    let unchanged = match unchanged {
        0 => String::new(),
        n => format!(", {n} unchanged"),
    };
    let failed = match failed {
        0 => String::new(),
        n => format!("; {n} failed"),
    };
    eprint_line(&format!(
        "{verb}: {} ({bytes} bytes{unchanged}) and {} done{failed}; {moved} bytes transferred in \
         {:.2} s ({}){verified}",
        counted(ok_files as u64, "file"),
        counted(ok_dirs as u64, "directory"),
        elapsed.as_secs_f64(),
        files::transfer_rate(moved, elapsed),
    ));
}

/// `1 file`, `2 files`, `1 directory`, `0 directories`.
pub(super) fn counted(n: u64, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {noun}s"),
    }
}

/// Exit 1 when any file failed; the lines printed already say which and why.
pub(super) fn finish(failures: usize) -> Result<(), Failure> {
    match failures {
        0 => Ok(()),
        _ => Err(Failure::Exit {
            code: 1,
            error: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(local: &str, remote: &str, message: &str) -> FileReport {
        FileReport {
            local: local.into(),
            remote: remote.into(),
            kind: files::Kind::File,
            size: 0,
            transferred: 0,
            result: Err(files::Rejection::new("exists", message)),
            unchanged: false,
        }
    }

    #[test]
    fn a_failure_line_names_the_file_once_and_leaves_the_code_out() {
        let file = report(
            "src/a.txt",
            "a.txt",
            "a.txt already exists and was left untouched",
        );
        let Err(rejection) = &file.result else {
            unreachable!()
        };
        assert_eq!(
            failure_line("put", &file, rejection),
            "sockit: put: src/a.txt: already exists and was left untouched"
        );
        let file = report("", "d/b", "d/b: received 3 bytes, the header declared 4");
        let Err(rejection) = &file.result else {
            unreachable!()
        };
        assert_eq!(
            failure_line("get", &file, rejection),
            "sockit: get: d/b: received 3 bytes, the header declared 4"
        );
    }
}
