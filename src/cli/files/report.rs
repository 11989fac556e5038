//! What a transfer shows on the terminal: a progress bar while it runs, then a line per failed
//! file and one summary line.

use crate::cli::output::eprint_line;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::ProgressDrawTarget;

use crate::cli::Failure;
use sockit::service::files::{self, FileReport, HashAlg, Progress};

/// A bar on stderr when it is a terminal and not `-q`; else none (the summary line says it
/// all). The bar is cleared before anything else is printed.
pub(super) fn progress_bar(quiet: bool) -> Progress {
    if quiet || !std::io::stderr().is_terminal() {
        return Progress::hidden();
    }
    Progress::new(ProgressDrawTarget::stderr())
}

pub(super) fn print_failures(verb: &str, files: &[FileReport]) {
    for file in files {
        if let Err(rejection) = &file.result {
            let name = if file.local.is_empty() {
                &file.remote
            } else {
                &file.local
            };
            eprint_line(&format!("sockit: {verb}: {name}: {rejection}"));
        }
    }
}

/// One line on stderr: what landed, how many bytes crossed the wire, how fast, verified how.
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
    eprint_line(&format!(
        "{verb}: {} ({bytes} bytes) and {} done; {moved} bytes transferred in {:.2} s ({}){verified}",
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

pub(super) fn finish(failures: usize) -> Result<(), Failure> {
    match failures {
        0 => Ok(()),
        n => Err(Failure::Runtime(anyhow::anyhow!("{n} failed"))),
    }
}
