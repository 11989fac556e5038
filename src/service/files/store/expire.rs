//! Expiring partial files: an interrupted transfer that is never resumed would otherwise keep
//! its partial data in [`PARTIAL_DIR`] forever.
//!
//! Only names the store itself gives partials are considered, only regular files, never
//! through a symlink, and never one a transfer holds: writers keep an exclusive `flock` on
//! their partial, so a partial that cannot be locked at once is in use and is left alone.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, Flock, FlockArg, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::super::messages::Kind;
use super::at::{io_error, kind_of, stat_at};
use super::{Store, StoreError, PARTIAL_DIR};

/// Partials untouched this long are removed (`FilesConfig::partial_max_age`).
pub const DEFAULT_PARTIAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Most partial-directory entries one sweep looks at; the rest wait for the next sweep.
pub(crate) const MAX_PARTIALS_PER_SWEEP: usize = 100_000;

/// Hex digits in a partial's name, before [`PARTIAL_SUFFIX`] (see `receive::partial_name`).
const PARTIAL_HEX_CHARS: usize = 32;
const PARTIAL_SUFFIX: &str = ".part";

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Expired {
    /// Partials removed.
    pub removed: usize,
    /// Old partials left alone because a transfer holds them.
    pub busy: usize,
}

enum Outcome {
    Removed,
    Busy,
    Kept,
}

impl Store {
    /// Removes the partial files in [`PARTIAL_DIR`] last modified more than `max_age` ago,
    /// except those a transfer is writing or probing. Looks at most at
    /// [`MAX_PARTIALS_PER_SWEEP`] entries. Nothing outside [`PARTIAL_DIR`] is touched, and a
    /// symlinked [`PARTIAL_DIR`] is refused, not followed.
    ///
    /// # Errors
    /// [`StoreError::Symlink`] or [`StoreError::WrongKind`] for what stands at
    /// [`PARTIAL_DIR`]; I/O errors reading it. An entry that fails on its own is skipped.
    pub(crate) fn expire_partials(&self, max_age: Duration) -> Result<Expired, StoreError> {
        let mut expired = Expired::default();
        let Some(partials) = self.partial_dir(false)? else {
            return Ok(expired);
        };
        let cutoff = SystemTime::now()
            .checked_sub(max_age)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let names =
            partial_names(partials.as_fd()).map_err(|e| io_error(PARTIAL_DIR.to_string(), e))?;
        for name in &names {
            match expire_one(partials.as_fd(), name, cutoff) {
                Ok(Outcome::Removed) => expired.removed += 1,
                Ok(Outcome::Busy) => expired.busy += 1,
                Ok(Outcome::Kept) => {}
                Err(e) => tracing::warn!(partial = ?name, error = %e, "could not expire a partial"),
            }
        }
        Ok(expired)
    }

    /// Drops the least recently written partial files not in use until those left hold at
    /// most [`StoreOptions::partial_max_total`](super::StoreOptions) bytes (what a transfer cut
    /// off also does as it ends, see `Incoming`'s `Drop`). Looks at most at
    /// [`MAX_PARTIALS_PER_SWEEP`] entries.
    ///
    /// # Errors
    /// As [`Store::expire_partials`].
    pub(crate) fn cap_partials(&self) -> Result<Expired, StoreError> {
        match self.partial_dir(false)? {
            None => Ok(Expired::default()),
            Some(partials) => Ok(cap_partials_in(
                partials.as_fd(),
                self.options.partial_max_total,
            )),
        }
    }
}

/// The names in the partial directory `dir` that the store gives partials, at most
/// [`MAX_PARTIALS_PER_SWEEP`].
fn partial_names(dir: BorrowedFd<'_>) -> Result<Vec<CString>, Errno> {
    let listed = dir
        .try_clone_to_owned()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    let mut dir = Dir::from_fd(listed)?;
    let mut names = Vec::new();
    for item in dir.iter().take(MAX_PARTIALS_PER_SWEEP) {
        let item = item?;
        if is_partial_name(item.file_name()) {
            names.push(item.file_name().to_owned());
        }
    }
    Ok(names)
}

/// Removes the least recently written partials in `dir` that no transfer holds until those
/// at rest hold at most `budget` bytes. Partials in use (locked) neither count nor go. A
/// partial that fails on its own is skipped, with a warning.
pub(super) fn cap_partials_in(dir: BorrowedFd<'_>, budget: u64) -> Expired {
    let mut capped = Expired::default();
    let names = match partial_names(dir) {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "could not list partial files");
            return capped;
        }
    };
    let mut held: Vec<((i64, i64), u64, CString)> = names
        .into_iter()
        .filter_map(|name| {
            let st = stat_at(dir, name.as_c_str()).ok()?;
            let size = u64::try_from(st.st_size).ok()?;
            #[allow(clippy::unnecessary_cast)] // time_t differs between unixes
            let written = (st.st_mtime as i64, st.st_mtime_nsec as i64);
            (kind_of(&st) == Kind::File && !in_use(dir, &name)).then_some((written, size, name))
        })
        .collect();
    held.sort_unstable();
    let mut total = held.iter().map(|h| h.1).fold(0u64, u64::saturating_add);
    for (_, size, name) in &held {
        if total <= budget {
            break;
        }
        // Whatever happens to it, this one no longer counts: gone, in use since, or changed.
        total = total.saturating_sub(*size);
        match expire_one(dir, name, i64::MAX) {
            Ok(Outcome::Removed) => capped.removed += 1,
            Ok(Outcome::Busy) => {
                capped.busy += 1;
            }
            Ok(Outcome::Kept) => {}
            Err(e) => tracing::warn!(partial = ?name, error = %e, "could not drop a partial"),
        }
    }
    capped
}

/// Whether a transfer holds the partial `name` in `dir` (a writer's exclusive lock or a
/// probe's shared one); one that cannot be opened is left out as if it were.
fn in_use(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock).is_err(),
        Err(_) => true,
    }
}

/// Whether `name` is one `receive::partial_name` gives: 32 lowercase hex digits and `.part`.
fn is_partial_name(name: &CStr) -> bool {
    let bytes = name.to_bytes();
    bytes.len() == PARTIAL_HEX_CHARS + PARTIAL_SUFFIX.len()
        && bytes.ends_with(PARTIAL_SUFFIX.as_bytes())
        && bytes[..PARTIAL_HEX_CHARS]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `st` is a regular file last modified before `cutoff` (Unix seconds).
#[allow(clippy::unnecessary_cast)] // time_t differs between unixes
fn is_stale_file(st: &FileStat, cutoff: i64) -> bool {
    kind_of(st) == Kind::File && (st.st_mtime as i64) < cutoff
}

fn expire_one(dir: BorrowedFd<'_>, name: &CStr, cutoff: i64) -> Result<Outcome, Errno> {
    let listed = match stat_at(dir, name) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(Outcome::Kept),
        Err(e) => return Err(e),
    };
    if !is_stale_file(&listed, cutoff) {
        return Ok(Outcome::Kept);
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let file = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        // Replaced by a symlink or removed since the stat: not ours to judge now.
        Err(Errno::ELOOP | Errno::ENOENT) => return Ok(Outcome::Kept),
        Err(e) => return Err(e),
    };
    // A writer holds an exclusive lock, a resume probe a shared one: either means in use.
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(file) => file,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(Outcome::Busy),
        Err((_, e)) => return Err(e),
    };
    let locked = fstat(&*file)?;
    if !is_stale_file(&locked, cutoff) {
        return Ok(Outcome::Kept);
    }
    // Still the name of the file we locked (a transfer may have replaced it meanwhile).
    match stat_at(dir, name) {
        Ok(now) if (now.st_dev, now.st_ino) == (locked.st_dev, locked.st_ino) => {}
        Ok(_) | Err(Errno::ENOENT) => return Ok(Outcome::Kept),
        Err(e) => return Err(e),
    }
    unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    Ok(Outcome::Removed)
}

#[cfg(test)]
#[path = "expire_tests.rs"]
mod tests;
