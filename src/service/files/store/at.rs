//! The openat-style primitives the store is built on: one name at a time relative to a
//! directory handle, never following a symlink, with errors that say what was found.

use std::fs::File;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, Flock, OFlag};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode};

use super::super::messages::{Entry, Kind};
use super::StoreError;

/// How often an open that lost a race (the name was replaced meanwhile) is retried.
pub(super) const RACE_RETRIES: usize = 8;

/// Directories are opened for reading, as directories, never through a symlink.
pub(super) const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Permission bits only: setuid, setgid and sticky are never applied.
#[allow(clippy::unnecessary_cast)] // mode_t is u16 on some unixes
pub(super) fn perm(mode: u32) -> Mode {
    Mode::from_bits_truncate((mode & 0o777) as libc::mode_t)
}

/// The `lstat` of `name` in `dir`.
pub(super) fn stat_at<P: ?Sized + nix::NixPath>(
    dir: BorrowedFd<'_>,
    name: &P,
) -> nix::Result<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// What a `stat` describes (an `lstat` reports symlinks as such).
pub(super) fn kind_of(st: &FileStat) -> Kind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// A listing entry for `path` from its `lstat`.
#[allow(clippy::unnecessary_cast)] // mode_t and time_t differ between unixes
pub(super) fn entry(path: String, st: &FileStat) -> Entry {
    let kind = kind_of(st);
    Entry {
        path,
        kind,
        size: match kind {
            Kind::File => u64::try_from(st.st_size).unwrap_or(0),
            _ => 0,
        },
        mode: st.st_mode as u32 & 0o777,
        mtime: st.st_mtime as i64,
    }
}

/// The I/O error for the path shown as `path`.
pub(super) fn io_error(path: String, source: impl Into<std::io::Error>) -> StoreError {
    StoreError::Io {
        path,
        source: source.into(),
    }
}

/// Opens the directory `name` in `dir` without following a symlink; with `create`, a missing
/// one is made with that mode (the umask applies) first. `shown` names it in errors.
///
/// # Errors
/// [`StoreError::Symlink`] for a symlink, [`StoreError::WrongKind`] for anything else that is
/// not a directory, [`StoreError::NotFound`] when missing and not created, I/O errors.
pub(super) fn open_dir(
    dir: BorrowedFd<'_>,
    name: &str,
    create: Option<u32>,
    shown: impl Fn() -> String,
) -> Result<OwnedFd, StoreError> {
    for _ in 0..RACE_RETRIES {
        match openat(dir, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => match create {
                None => return Err(StoreError::NotFound(shown())),
                Some(mode) => match mkdirat(dir, name, perm(mode)) {
                    // Made here or by a racing creator: open it (or find what it is) again.
                    Ok(()) | Err(Errno::EEXIST) => continue,
                    Err(e) => return Err(io_error(shown(), e)),
                },
            },
            // O_NOFOLLOW reports a symlink as ELOOP (EMLINK on FreeBSD), O_DIRECTORY a file as
            // ENOTDIR: look at the name itself to say which.
            Err(e @ (Errno::ELOOP | Errno::EMLINK | Errno::ENOTDIR)) => match stat_at(dir, name) {
                Ok(st) => match kind_of(&st) {
                    Kind::Symlink => return Err(StoreError::Symlink(shown())),
                    Kind::Dir => continue,
                    _ => return Err(StoreError::WrongKind(shown(), "directory")),
                },
                Err(Errno::ENOENT) => continue,
                Err(_) => return Err(io_error(shown(), e)),
            },
            Err(e) => return Err(io_error(shown(), e)),
        }
    }
    Err(io_error(
        shown(),
        std::io::Error::other("it kept changing while being opened"),
    ))
}

/// Bytes the file system holding `dir` still has for an unprivileged user.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // the widths differ between unixes
pub(super) fn free_bytes(dir: BorrowedFd<'_>) -> nix::Result<u64> {
    let vfs = nix::sys::statvfs::fstatvfs(dir)?;
    Ok((vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64))
}

/// Renames `from` in `from_dir` to `to` in `to_dir` unless `to` exists (then `EEXIST`),
/// atomically: `renameat2(RENAME_NOREPLACE)` where there is one, else `linkat` (which never
/// replaces) and `unlinkat`.
pub(super) fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
) -> nix::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    match nix::fcntl::renameat2(
        from_dir,
        from,
        to_dir,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        // A file system without RENAME_NOREPLACE: fall back to link + unlink.
        Err(Errno::EINVAL | Errno::ENOSYS) => {}
        done => return done,
    }
    nix::unistd::linkat(from_dir, from, to_dir, to, AtFlags::empty())?;
    nix::unistd::unlinkat(from_dir, from, nix::unistd::UnlinkatFlags::NoRemoveDir)
}

/// Renames `from` in `from_dir` to `to` in `to_dir`, replacing a file or symlink there (the
/// link itself, never its target).
pub(super) fn rename_replace(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
) -> nix::Result<()> {
    nix::fcntl::renameat(from_dir, from, to_dir, to)
}

/// Set once linking an unnamed file through `/proc/self/fd` failed for want of `/proc`.
#[cfg(target_os = "linux")]
static NO_PROC_LINKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A new, empty file `name` in `dir`, exclusively locked before it has a name: made unnamed
/// (`O_TMPFILE`), locked, then linked under `name`. Making a file is where a file system
/// spends its time (finding a free inode); done unnamed it does not hold the directory's lock,
/// so the files of a batch are made side by side (`Store::store_batch`). `None` if the name
/// is taken or this file system or kernel cannot (then the caller opens it by name).
#[cfg(target_os = "linux")]
pub(super) fn new_locked_file(dir: BorrowedFd<'_>, name: &str) -> Option<(Flock<File>, FileStat)> {
    if NO_PROC_LINKS.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
    let file = File::from(openat(dir, ".", flags, Mode::from_bits_truncate(0o600)).ok()?);
    let file = Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()?;
    let st = nix::sys::stat::fstat(&*file).ok()?;
    let unnamed = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&*file));
    let follow = AtFlags::AT_SYMLINK_FOLLOW;
    match nix::unistd::linkat(nix::fcntl::AT_FDCWD, unnamed.as_str(), dir, name, follow) {
        Ok(()) => Some((file, st)),
        Err(Errno::ENOENT) => {
            // No /proc to link through (not merely `dir` removed meanwhile): every file would
            // be made twice.
            if !std::path::Path::new("/proc/self/fd").is_dir() {
                NO_PROC_LINKS.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            None
        }
        Err(_) => None,
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn new_locked_file(
    _dir: BorrowedFd<'_>,
    _name: &str,
) -> Option<(Flock<File>, FileStat)> {
    None
}
