//! What a `put` sends: the local paths walked into directories and files, each with the remote
//! name it gets (the top-level name kept, the structure below it mirrored).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::super::error::Rejection;
use super::super::store::{RelPath, MAX_LISTING_ENTRIES, MAX_PATH_DEPTH};
use super::shown;

/// One thing to send.
#[derive(Debug)]
pub(super) enum Item {
    /// Create this remote directory.
    Dir {
        local: PathBuf,
        remote: String,
        mode: u32,
    },
    /// Send this file, of `size` bytes when it was walked.
    File {
        local: PathBuf,
        remote: String,
        size: u64,
    },
    /// Cannot be sent (a bad name, an unreadable directory); reported as a failure.
    Failed {
        local: PathBuf,
        rejection: Rejection,
    },
}

/// The walk's result: items in sending order (parents first), and warnings for what was
/// skipped on purpose (symlinks without `--follow`, special files).
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub items: Vec<Item>,
    pub warnings: Vec<String>,
}

/// Walks `paths` into a [`Plan`]; remote names go under `to` (validated, like every name,
/// before anything is sent).
///
/// # Errors
/// A sentence if `to` is invalid or the walk passes [`MAX_LISTING_ENTRIES`].
pub(super) fn plan(paths: &[PathBuf], to: Option<&str>, follow: bool) -> Result<Plan, String> {
    let base = match to.map(|t| t.trim_matches('/')).filter(|t| !t.is_empty()) {
        Some(to) => Some(RelPath::parse(to).map_err(|e| e.to_string())?.as_wire()),
        None => None,
    };
    let mut walker = Walker {
        plan: Plan::default(),
        follow,
    };
    for path in paths {
        let Some(name) = top_name(path) else {
            walker.fail(path, "no_name", "has no file name to send it under");
            continue;
        };
        let Some(name) = name.to_str() else {
            walker.fail(
                path,
                "invalid_path",
                "is not valid UTF-8, so it cannot be sent",
            );
            continue;
        };
        let remote = match &base {
            Some(base) => format!("{base}/{name}"),
            None => name.to_owned(),
        };
        walker.visit(path, remote, 1)?;
    }
    Ok(walker.plan)
}

struct Walker {
    plan: Plan,
    follow: bool,
}

impl Walker {
    fn visit(&mut self, local: &Path, remote: String, depth: usize) -> Result<(), String> {
        if self.plan.items.len() >= MAX_LISTING_ENTRIES {
            return Err(format!(
                "more than {MAX_LISTING_ENTRIES} files and directories to send"
            ));
        }
        if let Err(e) = RelPath::parse(&remote) {
            self.plan.items.push(Item::Failed {
                local: local.to_owned(),
                rejection: Rejection::from(e),
            });
            return Ok(());
        }
        let meta = match fs::symlink_metadata(local) {
            Ok(meta) if meta.file_type().is_symlink() && self.follow => fs::metadata(local),
            other => other,
        };
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) => {
                self.fail(local, "local_io", &format!("cannot be read: {e}"));
                return Ok(());
            }
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let warning = format!(
                "skipped symbolic link {} (--follow sends its target)",
                shown_path(local)
            );
            self.plan.warnings.push(warning);
        } else if kind.is_file() {
            self.plan.items.push(Item::File {
                local: local.to_owned(),
                remote,
                size: meta.len(),
            });
        } else if kind.is_dir() {
            if depth > MAX_PATH_DEPTH {
                self.fail(local, "too_deep", "is nested too deeply");
                return Ok(());
            }
            self.plan.items.push(Item::Dir {
                local: local.to_owned(),
                remote: remote.clone(),
                mode: meta.mode() & 0o777,
            });
            self.visit_children(local, &remote, depth)?;
        } else {
            let warning = format!(
                "skipped {}: not a regular file or directory",
                shown_path(local)
            );
            self.plan.warnings.push(warning);
        }
        Ok(())
    }

    fn visit_children(&mut self, dir: &Path, remote: &str, depth: usize) -> Result<(), String> {
        let listing = fs::read_dir(dir).and_then(|entries| entries.collect::<Result<Vec<_>, _>>());
        let mut children = match listing {
            Ok(children) => children,
            Err(e) => {
                self.fail(dir, "local_io", &format!("cannot be listed: {e}"));
                return Ok(());
            }
        };
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let path = child.path();
            match child.file_name().to_str() {
                Some(name) => self.visit(&path, format!("{remote}/{name}"), depth + 1)?,
                None => self.fail(
                    &path,
                    "invalid_path",
                    "is not valid UTF-8, so it cannot be sent",
                ),
            }
        }
        Ok(())
    }

    fn fail(&mut self, local: &Path, code: &str, why: &str) {
        self.plan.items.push(Item::Failed {
            local: local.to_owned(),
            rejection: Rejection::new(code, format!("{} {why}", shown_path(local))),
        });
    }
}

/// The name a top-level path is sent under: its last component, or for `.` and the like the
/// name of the directory it resolves to.
fn top_name(path: &Path) -> Option<std::ffi::OsString> {
    match path.file_name() {
        Some(name) => Some(name.to_owned()),
        None => fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_owned())),
    }
}

/// A local path escaped for display.
pub(super) fn shown_path(path: &Path) -> String {
    shown(&path.to_string_lossy())
}
