//! Reading directories for `ls` (one level) and `get` (a whole tree, as a manifest), through
//! directory handles only, symlinks never followed.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::sys::stat::FileStat;

use super::super::messages::{Entry, Kind};
use super::at::{entry, io_error, kind_of, open_dir, stat_at};
use super::path::{check_name, shown_raw};
use super::{
    RelPath, Store, StoreError, MAX_LISTING_ENTRIES, MAX_LISTING_PATH_BYTES, MAX_PATH_BYTES,
    MAX_PATH_DEPTH, RESERVED_PREFIX,
};

impl Store {
    /// One directory level (`None` is the root), sorted by name, reserved names hidden.
    /// Symlinks are listed as such, not followed. A name that is not UTF-8 is shown lossily
    /// (it cannot be fetched, but `ls` should not hide that it is there).
    ///
    /// # Errors
    /// Not found, symlink, wrong kind, too many entries, I/O.
    pub fn list(&self, dir: Option<&RelPath>) -> Result<Vec<Entry>, StoreError> {
        let shown = || dir_shown(dir);
        let fd = self.open_dirs(dir.map_or(&[], |d| d.parts()), None)?;
        let (dir_fd, names) = read_names(fd, MAX_LISTING_ENTRIES, shown)?;
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            if let Some(st) = stat_entry(dir_fd.as_fd(), &name, shown)? {
                entries.push(entry(
                    String::from_utf8_lossy(name.as_bytes()).into_owned(),
                    &st,
                ));
            }
        }
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// What a `get` of `path` fetches (`None` is the root): a file gives itself; a directory
    /// gives itself and, recursively, its directories and regular files (symlinks and special
    /// files skipped), parents before children. Entry paths are relative to `path`'s parent,
    /// so the requested name is kept: `get docs` yields `docs`, `docs/a.txt`, ...
    ///
    /// Depth first, by name within a directory. Only what can be fetched back is offered:
    /// names a peer could not send (not UTF-8, control characters, backslashes, reserved,
    /// beyond [`MAX_PATH_DEPTH`] or [`MAX_PATH_BYTES`] from the root) are skipped with a
    /// warning in the log.
    ///
    /// # Errors
    /// Not found, symlink, too many entries, I/O.
    pub(crate) fn walk(&self, path: Option<&RelPath>) -> Result<Vec<Entry>, StoreError> {
        let mut walk = Walk {
            out: Vec::new(),
            path_bytes: 0,
            shown: dir_shown(path),
        };
        let Some(path) = path else {
            let root = self
                .root_fd
                .try_clone()
                .map_err(|e| io_error(".".to_string(), e))?;
            walk.descend(root, "", 0, 0)?;
            return Ok(walk.out);
        };
        let (parents, name) = path.split_last();
        let parent = self.open_dirs(parents, None)?;
        let st = match stat_at(parent.as_fd(), name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Err(StoreError::NotFound(path.to_string())),
            Err(e) => return Err(io_error(path.to_string(), e)),
        };
        match kind_of(&st) {
            Kind::File => walk.push(entry(name.to_string(), &st))?,
            Kind::Dir => {
                let dir = open_dir(parent.as_fd(), name, None, || path.to_string())?;
                walk.push(entry(name.to_string(), &st))?;
                let wire = path.as_wire();
                walk.descend(dir, name, path.parts().len(), wire.len())?;
            }
            Kind::Symlink => return Err(StoreError::Symlink(path.to_string())),
            Kind::Other => {
                return Err(StoreError::WrongKind(
                    path.to_string(),
                    "regular file or directory",
                ))
            }
        }
        Ok(walk.out)
    }
}

/// A manifest being collected.
struct Walk {
    out: Vec<Entry>,
    /// The length of all paths in `out`.
    path_bytes: usize,
    /// The requested path, escaped, for errors.
    shown: String,
}

impl Walk {
    fn push(&mut self, entry: Entry) -> Result<(), StoreError> {
        if self.out.len() >= MAX_LISTING_ENTRIES {
            return Err(StoreError::TooManyEntries(
                self.shown.clone(),
                MAX_LISTING_ENTRIES,
            ));
        }
        self.path_bytes += entry.path.len();
        if self.path_bytes > MAX_LISTING_PATH_BYTES {
            return Err(StoreError::ListingTooLarge(
                self.shown.clone(),
                MAX_LISTING_PATH_BYTES,
            ));
        }
        self.out.push(entry);
        Ok(())
    }

    /// Adds what `dir` holds. `prefix` is its path in the manifest; `depth` and `bytes` are
    /// the component count and length of its path from the root.
    fn descend(
        &mut self,
        dir: OwnedFd,
        prefix: &str,
        depth: usize,
        bytes: usize,
    ) -> Result<(), StoreError> {
        let shown = || self.shown.clone();
        let budget = MAX_LISTING_ENTRIES - self.out.len();
        let (dir, names) = read_names(dir, budget, shown)?;
        let mut children: Vec<(String, FileStat)> = Vec::with_capacity(names.len());
        for name in names {
            let Some(st) = stat_entry(dir.as_fd(), &name, shown)? else {
                continue;
            };
            if !matches!(kind_of(&st), Kind::File | Kind::Dir) {
                continue;
            }
            let name = match name.into_string() {
                Ok(name) => name,
                Err(e) => {
                    let lossy = String::from_utf8_lossy(e.into_cstring().as_bytes()).into_owned();
                    skipped(prefix, &lossy, "the name is not UTF-8");
                    continue;
                }
            };
            let child_bytes = if depth == 0 {
                name.len()
            } else {
                bytes + 1 + name.len()
            };
            let refusal = check_name(&name, depth == 0)
                .err()
                .or(if depth + 1 > MAX_PATH_DEPTH {
                    Some("the path has too many components")
                } else if child_bytes > MAX_PATH_BYTES {
                    Some("the path is too long")
                } else {
                    None
                });
            if let Some(reason) = refusal {
                skipped(prefix, &name, reason);
                continue;
            }
            children.push((name, st));
        }
        children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (name, st) in children {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let is_dir = kind_of(&st) == Kind::Dir;
            self.push(entry(path.clone(), &st))?;
            if !is_dir {
                continue;
            }
            let child_bytes = if depth == 0 {
                name.len()
            } else {
                bytes + 1 + name.len()
            };
            match open_dir(dir.as_fd(), &name, None, || shown_raw(&path)) {
                Ok(child) => self.descend(child, &path, depth + 1, child_bytes)?,
                // Replaced since it was listed: skip it, as if listed a moment later.
                Err(
                    StoreError::Symlink(_) | StoreError::NotFound(_) | StoreError::WrongKind(..),
                ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn skipped(prefix: &str, name: &str, reason: &str) {
    let path = if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    };
    tracing::warn!(path = %shown_raw(&path), reason, "not offered for fetching");
}

/// The names in `dir` but `.`, `..` and reserved ones, at most `limit` of them; the handle
/// comes back for looking them up.
fn read_names(
    dir: OwnedFd,
    limit: usize,
    shown: impl Fn() -> String,
) -> Result<(Dir, Vec<CString>), StoreError> {
    let mut dir = Dir::from_fd(dir).map_err(|e| io_error(shown(), e))?;
    let mut names = Vec::new();
    for item in dir.iter() {
        let item = item.map_err(|e| io_error(shown(), e))?;
        let name = item.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." || bytes.starts_with(RESERVED_PREFIX.as_bytes()) {
            continue;
        }
        if names.len() >= limit {
            return Err(StoreError::TooManyEntries(shown(), MAX_LISTING_ENTRIES));
        }
        names.push(name.to_owned());
    }
    Ok((dir, names))
}

/// The `lstat` of a listed name; `None` if it vanished since.
fn stat_entry(
    dir: BorrowedFd<'_>,
    name: &CString,
    shown: impl Fn() -> String,
) -> Result<Option<FileStat>, StoreError> {
    match stat_at(dir, name.as_c_str()) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(io_error(shown(), e)),
    }
}

fn dir_shown(dir: Option<&RelPath>) -> String {
    dir.map_or_else(|| "the root directory".to_string(), RelPath::to_string)
}
