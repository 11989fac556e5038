//! The file clients: `put` (and `send`), `get` and `ls`.

use super::args::{GetArgs, LsArgs, PutArgs};
use super::report::{finish, print_failures, print_renamed, progress_bar, summary_line, Receiver};
use crate::cli::output::{eprint_line, print_line};
use crate::cli::Failure;
use std::path::Path;

use sockit::service::files::{self, GetOptions, Policy, Progress, PutOptions};

/// `sockit put` / `sockit send`.
pub(crate) async fn run_put(args: PutArgs, verb: &str, quiet: bool) -> Result<(), Failure> {
    if args.compat.is_some() {
        return super::compat::run_send_compat(args).await;
    }
    let remote = args.client.remote(&args.addr).await?;
    let options = PutOptions {
        follow: args.follow,
        hash: args.hash,
        progress: progress_bar(quiet),
    };
    let putting = files::put(&remote, &args.paths, args.to.as_deref(), &options);
    let report = tokio::select! {
        report = putting => report,
        _ = tokio::signal::ctrl_c() => return Err(interrupted(verb, &options.progress, None)),
    };
    options.progress.finish_and_clear();
    let report = report.map_err(|e| Failure::Runtime(e.into()))?;
    for warning in &report.warnings {
        eprint_line(&format!("sockit: {verb}: warning: {warning}"));
    }
    print_renamed(verb, &report.files, Receiver::Remote);
    print_failures(verb, &report.files);
    let moved = (report.bytes_sent, report.elapsed, report.hash);
    summary_line(verb, &report.files, moved);
    finish(report.failures())
}

/// `sockit get`.
pub(crate) async fn run_get(args: GetArgs, quiet: bool) -> Result<(), Failure> {
    let remote = args.client.remote(&args.addr).await?;
    let policy = match (args.overwrite, args.rename) {
        (true, _) => Policy::Overwrite,
        (_, true) => Policy::Rename,
        _ => Policy::Refuse,
    };
    let options = GetOptions {
        policy,
        hash: args.hash,
        progress: progress_bar(quiet),
    };
    let getting = files::get(&remote, &args.paths, &args.output, &options);
    let report = tokio::select! {
        report = getting => report,
        _ = tokio::signal::ctrl_c() => {
            return Err(interrupted("get", &options.progress, Some(&args.output)))
        }
    };
    options.progress.finish_and_clear();
    let report = report.map_err(|e| Failure::Runtime(e.into()))?;
    print_renamed("get", &report.files, Receiver::Local);
    print_failures("get", &report.files);
    let moved = (report.bytes_received, report.elapsed, report.hash);
    summary_line("get", &report.files, moved);
    finish(report.failures())
}

/// Ctrl-C during a transfer: the bar is cleared and one line says what was kept, then exit
/// 130 (128 + SIGINT, as a shell reports it). `local_dir` is where `get` keeps its partials;
/// `None` for `put`, whose partials the server keeps (and resumes for large files only).
fn interrupted(verb: &str, progress: &Progress, local_dir: Option<&Path>) -> Failure {
    progress.finish_and_clear();
    let done_word = if local_dir.is_some() {
        "fetched"
    } else {
        "stored"
    };
    let cut = progress
        .under_way()
        .filter(|u| u.bytes > 0 && u.bytes < u.size);
    let line = match (cut, local_dir) {
        (Some(cut), None) if cut.size >= files::RESUME_PROBE_MIN_BYTES => format!(
            "sockit: {verb}: interrupted: {} was cut off after {} of {} bytes; the server \
             keeps what it received: run the same {verb} again to resume it (files already \
             stored are found unchanged)",
            cut.name, cut.bytes, cut.size
        ),
        (Some(cut), Some(dir)) => format!(
            "sockit: {verb}: interrupted: {} was cut off after {} of {} bytes, kept in {}: \
             run the same {verb} again to resume it (files already fetched are found \
             unchanged)",
            cut.name,
            cut.bytes,
            cut.size,
            sockit::text::escape_one_line(
                &dir.join(files::store::PARTIAL_DIR_NAME).to_string_lossy(),
                files::store::MAX_PATH_BYTES
            ),
        ),
        _ => format!(
            "sockit: {verb}: interrupted: files already {done_word} stay; run the same {verb} \
             again to finish (they are found unchanged)"
        ),
    };
    eprint_line(&line);
    Failure::Exit {
        code: 130,
        error: None,
    }
}

/// `sockit ls`: one line per entry on stdout, names escaped.
pub(crate) async fn run_ls(args: LsArgs) -> Result<(), Failure> {
    let remote = args.client.remote(&args.addr).await?;
    let entries = files::list(&remote, &args.dir)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    for entry in entries {
        let (kind, suffix) = match entry.kind {
            files::Kind::Dir => ('d', "/"),
            files::Kind::Symlink => ('l', ""),
            files::Kind::Other => ('?', ""),
            files::Kind::File => ('-', ""),
        };
        let name = sockit::text::escape_one_line(&entry.path, files::store::MAX_PATH_BYTES);
        print_line(&format!(
            "{kind}{} {:>14} {name}{suffix}",
            mode_string(entry.mode),
            entry.size
        ));
    }
    Ok(())
}

fn mode_string(mode: u32) -> String {
    (0..9)
        .map(|i| {
            let bit = 1 << (8 - i);
            match (mode & bit != 0, i % 3) {
                (false, _) => '-',
                (true, 0) => 'r',
                (true, 1) => 'w',
                (true, _) => 'x',
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_render_like_ls() {
        assert_eq!(mode_string(0o754), "rwxr-xr--");
    }
}
