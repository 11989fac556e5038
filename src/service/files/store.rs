//! The receiving and serving side's file system: every peer-named path is validated and opened
//! relative to the root directory's handle (openat, `O_NOFOLLOW`), data lands in a partial
//! file and is renamed into place only once its size and digest match.
//!
//! Blocking by design: callers run it on a blocking thread.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode};

use super::hash::{HashAlg, Hasher};
use super::messages::{Entry, Kind};

mod at;
mod batch;
mod expire;
mod incoming;
mod listing;
mod path;
mod receive;
#[cfg(test)]
mod tests;

use at::{io_error, kind_of, open_dir, stat_at};
pub(crate) use batch::BatchFile;
pub use expire::DEFAULT_PARTIAL_MAX_AGE;
pub use incoming::Incoming;
use path::shown_parts;
pub use path::RelPath;

/// Directory under the root holding partial files kept for resume; hidden from listings.
pub(crate) const PARTIAL_DIR: &str = PARTIAL_DIR_NAME;

/// The name of the directory, inside a store's root, that holds the partial files of
/// unfinished transfers (what a user is told to look at or clean).
pub const PARTIAL_DIR_NAME: &str = ".sockit-partial";

/// Names starting with this are reserved for sockit's own use and refused from peers.
pub(crate) const RESERVED_PREFIX: &str = ".sockit-";

/// Longest path component accepted, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Longest whole relative path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Most components a relative path may have.
pub(crate) const MAX_PATH_DEPTH: usize = 64;

/// Default cap on one file's size (`--max-file-size`).
pub(crate) const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 40;

/// Default cap on the bytes kept in partial files of transfers cut off mid-body, all together
/// (`--partial-max-total`): room for one interrupted transfer of a large disk image, and a
/// bound on what peers who hang up can leave behind.
pub const DEFAULT_PARTIAL_MAX_TOTAL_BYTES: u64 = 16 << 30;

/// Most entries one listing or `get` manifest may hold: a manifest is held whole on both ends,
/// so this and [`MAX_LISTING_PATH_BYTES`] keep it to some tens of MiB.
pub(crate) const MAX_LISTING_ENTRIES: usize = 200_000;

/// Most path bytes, all entries together, one listing or `get` manifest may hold.
pub(crate) const MAX_LISTING_PATH_BYTES: usize = 64 * 1024 * 1024;

/// Most `name (N).ext` candidates tried by the rename policy.
pub(crate) const MAX_RENAME_ATTEMPTS: u32 = 10_000;

/// What happens when a received file's name is already taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Refuse with an `exists` error naming the file; the existing file is untouched.
    #[default]
    Refuse,
    /// Replace it atomically.
    Overwrite,
    /// Keep both: store under `name (1).ext`, `name (2).ext`, ...
    Rename,
}

/// Settings of a [`Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Name-collision policy.
    pub policy: Policy,
    /// Largest file accepted.
    pub max_file_size: u64,
    /// Accept hidden (dot) names: `.bashrc`, `.ssh/…`, `.git/hooks/…`.
    pub allow_hidden_names: bool,
    /// Accept names Windows or a shell would trip on: a leading `-` or space, a trailing
    /// space or dot, `CON`/`NUL`/`COM1`-style names, `< > : " | ? *`.
    pub allow_unportable_names: bool,
    /// Most bytes the partial files of transfers cut off may hold together. When a cut-off
    /// transfer leaves more, the least recently written partials not in use are dropped (a
    /// partial alone over this is dropped itself): new uploads are never refused over them.
    pub partial_max_total: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            policy: Policy::default(),
            max_file_size: DEFAULT_MAX_FILE_BYTES,
            allow_hidden_names: false,
            allow_unportable_names: false,
            partial_max_total: DEFAULT_PARTIAL_MAX_TOTAL_BYTES,
        }
    }
}

/// Permission bits and modification time to give a stored file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileMeta {
    /// Permission bits; only `0o777`, within the process umask, is applied.
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds.
    pub mtime_nsec: u32,
}

/// A partial file that a resumed transfer may continue: what [`Store::partial`] found, to be
/// handed back to [`Store::create`].
#[derive(Debug, Clone)]
pub struct Partial {
    /// Bytes held.
    pub len: u64,
    /// The digest state over those bytes (its `hex()` is the prefix proof).
    pub hasher: Hasher,
    /// What was hashed: `create` trusts `hasher` without reading the prefix again only if
    /// neither the file nor these fields changed since.
    seen: Seen,
}

/// The partial file and digest as [`Store::partial`] found them.
#[derive(Debug, Clone)]
struct Seen {
    stat: FileStat,
    len: u64,
    hex: String,
}

/// A file that has landed under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The relative path it was stored under (differs from the requested one with
    /// [`Policy::Rename`]).
    pub name: String,
    /// Its size.
    pub size: u64,
    /// The name already held these very bytes (same size and digest): nothing was written and
    /// the existing file was left as it was. Identical content is never a name conflict.
    pub unchanged: bool,
}

/// Everything a store operation can refuse or fail with; `code()` is the wire code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The peer's path broke a naming rule (escaped text).
    #[error("invalid path {path}: {reason}")]
    InvalidPath {
        /// The offending path, escaped.
        path: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The name is taken by something other than the same bytes and the policy is
    /// [`Policy::Refuse`].
    #[error("{0} already exists with other content and was left untouched (--overwrite or --rename on the receiving side change that)")]
    Exists(String),
    /// A component of the path is a symlink, or the file itself is one.
    #[error("{0} goes through a symbolic link")]
    Symlink(String),
    /// No such file or directory.
    #[error("{0} does not exist")]
    NotFound(String),
    /// It is not a regular file (or not a directory, where one is needed).
    #[error("{0} is not a {1}")]
    WrongKind(String, &'static str),
    /// Larger than `max_file_size`.
    #[error("{path} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The path, escaped.
        path: String,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not enough free space (checked before accepting, or the disk filled up mid-file).
    #[error("no space left for {0}")]
    NoSpace(String),
    /// Another transfer of the same name is in progress.
    #[error("{0} is being received by another transfer")]
    Busy(String),
    /// More or fewer bytes than declared.
    #[error("{path}: received {got} bytes, the header declared {declared}")]
    SizeMismatch {
        /// The path, escaped.
        path: String,
        /// Bytes received.
        got: u64,
        /// Bytes declared.
        declared: u64,
    },
    /// The digest did not match; the data was discarded.
    #[error("{0}: {1} digest mismatch, the data was discarded")]
    HashMismatch(String, HashAlg),
    /// Too many entries to list or fetch at once.
    #[error("{0} has more than {1} entries")]
    TooManyEntries(String, usize),
    /// The entries' paths together are too long to list or fetch at once.
    #[error("{0} holds more than {1} bytes of paths")]
    ListingTooLarge(String, usize),
    /// Any other I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// The path, escaped.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
}

impl StoreError {
    /// The snake_case wire code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::InvalidPath { .. } => "invalid_path",
            StoreError::Exists(_) => "exists",
            StoreError::Symlink(_) => "symlink",
            StoreError::NotFound(_) => "not_found",
            StoreError::WrongKind(..) => "wrong_kind",
            StoreError::TooLarge { .. } => "too_large",
            StoreError::NoSpace(_) => "no_space",
            StoreError::Busy(_) => "busy",
            StoreError::SizeMismatch { .. } => "size_mismatch",
            StoreError::HashMismatch(..) => "hash_mismatch",
            StoreError::TooManyEntries(..) | StoreError::ListingTooLarge(..) => "too_many_entries",
            StoreError::Io { .. } => "io_error",
        }
    }
}

/// A directory that files are received into and served from.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Every operation starts from this handle, so renaming or replacing the root's path
    /// later cannot redirect it.
    root_fd: OwnedFd,
    options: StoreOptions,
    /// The process umask when the store was opened: it masks the modes peers ask for.
    umask: u32,
}

/// This process's umask. Linux shows it in `/proc/self/status`; elsewhere it is read by
/// setting it and putting it back, which is only safe before other threads create files, so
/// that is the fallback.
#[allow(clippy::unnecessary_cast)] // mode_t is u16 on some unixes
fn process_umask() -> u32 {
    let shown = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
            u32::from_str_radix(line.trim(), 8).ok()
        });
    shown.unwrap_or_else(|| {
        let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
        nix::sys::stat::umask(old);
        old.bits() as u32
    })
}

impl Store {
    /// Opens (creating it if missing) the root directory.
    ///
    /// # Errors
    /// [`StoreError::Io`] if it cannot be created or opened, or is not a directory.
    pub fn open(root: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let shown = || crate::text::escape_one_line(&root.to_string_lossy(), MAX_PATH_BYTES);
        if root.exists() && !root.is_dir() {
            let e = std::io::Error::other("not a directory");
            return Err(io_error(shown(), e));
        }
        std::fs::create_dir_all(root).map_err(|e| io_error(shown(), e))?;
        // The root is the user's own path: following a symlink there is their choice.
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(root)
            .map_err(|e| io_error(shown(), e))?;
        Ok(Store {
            root: root.to_path_buf(),
            root_fd: dir.into(),
            options,
            umask: process_umask(),
        })
    }

    /// The root directory as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The settings it was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// Creates a directory and its missing parents; an existing directory is fine.
    ///
    /// # Errors
    /// Validation, symlink, wrong-kind and I/O errors.
    pub fn mkdir(&self, path: &RelPath, mode: u32) -> Result<(), StoreError> {
        path::check_writable(path, &self.options)?;
        self.open_dirs(path.parts(), Some(mode)).map(drop)
    }

    /// Opens a regular file for reading (never through a symlink), with its entry.
    ///
    /// # Errors
    /// Not found, symlink, wrong kind, I/O.
    pub(crate) fn open_file(&self, path: &RelPath) -> Result<(File, Entry), StoreError> {
        let (parents, name) = path.split_last();
        let parent = self.open_dirs(parents, None)?;
        // O_NONBLOCK: opening a fifo for reading must not wait for a writer.
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY;
        let fd = match openat(&parent, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(StoreError::NotFound(path.to_string())),
            Err(e) => {
                return Err(match stat_at(parent.as_fd(), name).map(|st| kind_of(&st)) {
                    Ok(Kind::Symlink) => StoreError::Symlink(path.to_string()),
                    Ok(Kind::Other | Kind::Dir) => {
                        StoreError::WrongKind(path.to_string(), "regular file")
                    }
                    _ => io_error(path.to_string(), e),
                })
            }
        };
        let st = fstat(&fd).map_err(|e| io_error(path.to_string(), e))?;
        if kind_of(&st) != Kind::File {
            return Err(StoreError::WrongKind(path.to_string(), "regular file"));
        }
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(|e| io_error(path.to_string(), e))?;
        Ok((File::from(fd), at::entry(path.as_wire(), &st)))
    }

    /// Opens the directory made of `parts` below the root, one component at a time; with
    /// `create`, missing ones are made (0o755, the last one with `create`'s mode).
    fn open_dirs(&self, parts: &[String], create: Option<u32>) -> Result<OwnedFd, StoreError> {
        let mut dir = self
            .root_fd
            .try_clone()
            .map_err(|e| io_error(".".to_string(), e))?;
        for (i, name) in parts.iter().enumerate() {
            let mode = create.map(|mode| if i + 1 == parts.len() { mode } else { 0o755 });
            dir = open_dir(dir.as_fd(), name, mode, || shown_parts(&parts[..=i]))?;
        }
        Ok(dir)
    }

    /// Refuses what the policy refuses about the final name as it stands: a directory there
    /// (but under [`Policy::Rename`] that is just a taken name), and under [`Policy::Refuse`]
    /// anything at all, a dangling symlink included — except a regular file of `size` bytes
    /// when a size is given: it may hold the same bytes, which the commit finds out by digest.
    fn check_final(
        &self,
        parent: BorrowedFd<'_>,
        name: &str,
        path: &RelPath,
        size: Option<u64>,
    ) -> Result<(), StoreError> {
        let st = match stat_at(parent, name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(io_error(path.to_string(), e)),
        };
        let same_size =
            size.is_some_and(|size| u64::try_from(st.st_size).is_ok_and(|held| held == size));
        match (self.options.policy, kind_of(&st)) {
            (Policy::Rename, _) => Ok(()),
            (_, Kind::Dir) => Err(StoreError::WrongKind(path.to_string(), "regular file")),
            (Policy::Refuse, Kind::File) if same_size => Ok(()),
            (Policy::Refuse, _) => Err(StoreError::Exists(path.to_string())),
            (Policy::Overwrite, _) => Ok(()),
        }
    }

    /// The digest (with `alg`) of the regular file at `path` if it has exactly `size` bytes;
    /// `None` when there is no such file. What a sender compares with its own file to skip
    /// one the store already holds, as `rsync` skips unchanged files.
    ///
    /// # Errors
    /// Symlink and wrong-kind errors on the way, I/O errors reading it.
    pub fn digest_if_size(
        &self,
        path: &RelPath,
        size: u64,
        alg: HashAlg,
    ) -> Result<Option<String>, StoreError> {
        let (file, entry) = match self.open_file(path) {
            Ok(opened) => opened,
            Err(StoreError::NotFound(_) | StoreError::WrongKind(..)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if entry.size != size {
            return Ok(None);
        }
        match receive::hash_whole(&file, size, alg) {
            Ok(Some(hex)) => Ok(Some(hex)),
            Ok(None) => Ok(None),
            Err(e) => Err(io_error(path.to_string(), e)),
        }
    }

    /// Removes the partial-data directory if it is empty, so a client's download directory
    /// is not left with it; partial files kept for a resume keep it. Best effort.
    pub(crate) fn tidy_partial_dir(&self) {
        let _ = nix::unistd::unlinkat(
            &self.root_fd,
            PARTIAL_DIR,
            nix::unistd::UnlinkatFlags::RemoveDir,
        );
    }

    /// The directory holding partial files (made 0o700 with `create`), `None` if missing.
    fn partial_dir(&self, create: bool) -> Result<Option<OwnedFd>, StoreError> {
        match open_dir(
            self.root_fd.as_fd(),
            PARTIAL_DIR,
            create.then_some(0o700),
            || PARTIAL_DIR.to_string(),
        ) {
            Ok(dir) => Ok(Some(dir)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Store::partial_dir`] for a transfer: a failure says what the directory is and what
    /// to do about it, as the name alone means nothing to someone who never made it.
    fn partial_dir_for_transfer(&self, create: bool) -> Result<Option<OwnedFd>, StoreError> {
        self.partial_dir(create).map_err(|e| partial_dir_error(&e))
    }
}

/// A failure to use [`PARTIAL_DIR`], with what it is and what to do about it.
fn partial_dir_error(e: &StoreError) -> StoreError {
    let why = match e {
        StoreError::Io { source, .. } => source.to_string(),
        StoreError::Symlink(_) => "it is a symbolic link".to_string(),
        StoreError::WrongKind(..) => "it is not a directory".to_string(),
        other => other.to_string(),
    };
    io_error(
        PARTIAL_DIR.to_string(),
        std::io::Error::other(format!(
            "{why}; this directory, inside the receiving directory, holds unfinished \
             transfers: it must be a directory the receiving user can write (remove or fix \
             what is there)"
        )),
    )
}

/// Runs store work on a blocking thread (the store's calls block on the disk); a panicked or
/// cancelled task is an I/O error.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(StoreError::Io {
            path: String::new(),
            source: std::io::Error::other(e),
        })
    })
}
