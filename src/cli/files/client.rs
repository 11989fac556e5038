//! The file clients: `put` (and `send`), `get` and `ls`.

use super::args::{GetArgs, LsArgs, PutArgs};
use super::report::{finish, print_failures, print_renamed, progress_bar, summary_line, Receiver};
use crate::cli::output::{eprint_line, print_line};
use crate::cli::Failure;
use sockit::service::files::{self, GetOptions, Policy, PutOptions};

/// `sockit put` / `sockit send`.
pub(crate) async fn run_put(args: PutArgs, verb: &str, quiet: bool) -> Result<(), Failure> {
    let remote = args.client.remote(&args.addr)?;
    let options = PutOptions {
        follow: args.follow,
        hash: args.hash,
        progress: progress_bar(quiet),
    };
    let report = files::put(&remote, &args.paths, args.to.as_deref(), &options).await;
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
    let remote = args.client.remote(&args.addr)?;
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
    let report = files::get(&remote, &args.paths, &args.output, &options).await;
    options.progress.finish_and_clear();
    let report = report.map_err(|e| Failure::Runtime(e.into()))?;
    print_renamed("get", &report.files, Receiver::Local);
    print_failures("get", &report.files);
    let moved = (report.bytes_received, report.elapsed, report.hash);
    summary_line("get", &report.files, moved);
    finish(report.failures())
}

/// `sockit ls`: one line per entry on stdout, names escaped.
pub(crate) async fn run_ls(args: LsArgs) -> Result<(), Failure> {
    let remote = args.client.remote(&args.addr)?;
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
