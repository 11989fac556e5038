//! The receiving and serving side's file system: every peer-named path is validated and opened
//! relative to the root directory's handle (openat, `O_NOFOLLOW`), data lands in a partial
//! file and is renamed into place only once its size and digest match.
//!
//! Blocking by design: callers run it on a blocking thread.
//!
//! API CONTRACT (stub; being implemented): signatures here are what the protocol layer codes
//! against.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::hash::{HashAlg, Hasher};
use super::messages::Entry;

mod path;

pub use path::RelPath;

/// Directory under the root holding partial files kept for resume; hidden from listings.
pub const PARTIAL_DIR: &str = ".sockit-partial";

/// Names starting with this are reserved for sockit's own use and refused from peers.
pub const RESERVED_PREFIX: &str = ".sockit-";

/// Longest path component accepted, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Longest whole relative path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Most components a relative path may have.
pub const MAX_PATH_DEPTH: usize = 64;

/// Default cap on one file's size (`--max-file-size`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 40;

/// Most entries one listing or `get` manifest may hold.
pub const MAX_LISTING_ENTRIES: usize = 1_000_000;

/// Most `name (N).ext` candidates tried by the rename policy.
pub const MAX_RENAME_ATTEMPTS: u32 = 10_000;

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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            policy: Policy::default(),
            max_file_size: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Permission bits and modification time to give a stored file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileMeta {
    /// Permission bits; only `0o777` is applied.
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds.
    pub mtime_nsec: u32,
}

/// A partial file that a resumed transfer may continue.
#[derive(Debug, Clone)]
pub struct Partial {
    /// Bytes held.
    pub len: u64,
    /// The digest state over those bytes (its `hex()` is the prefix proof).
    pub hasher: Hasher,
}

/// A file that has landed under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The relative path it was stored under (differs from the requested one with
    /// [`Policy::Rename`]).
    pub name: String,
    /// Its size.
    pub size: u64,
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
    /// The name is taken and the policy is [`Policy::Refuse`].
    #[error("{0} already exists (the server refuses to overwrite)")]
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
            StoreError::TooManyEntries(..) => "too_many_entries",
            StoreError::Io { .. } => "io_error",
        }
    }
}

/// A directory that files are received into and served from.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating it if missing) the root directory.
    ///
    /// # Errors
    /// [`StoreError::Io`] if it cannot be created or opened, or is not a directory.
    pub fn open(root: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let _ = (root, options);
        unimplemented!("store")
    }

    /// The root directory as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The partial copy of `path` kept from an interrupted transfer, hashed with `alg`, if
    /// any (none when `path` itself is invalid or refused by the policy: [`Store::create`]
    /// reports those).
    ///
    /// # Errors
    /// Validation and policy errors as [`Store::create`]; I/O errors reading the partial.
    pub fn partial(&self, path: &RelPath, alg: HashAlg) -> Result<Option<Partial>, StoreError> {
        let _ = (path, alg);
        unimplemented!("store")
    }

    /// Starts receiving `path` of `size` bytes. With `resume`, the partial file is kept up
    /// to `resume.len` bytes (which must be what [`Store::partial`] returned) and the data
    /// continues from there; otherwise it starts empty. Missing parent directories are
    /// created; a symlinked parent is refused. The policy, the size cap and free space are
    /// checked here, before any data is accepted; a partial file is locked so a second
    /// transfer of the same name gets [`StoreError::Busy`].
    ///
    /// # Errors
    /// Any [`StoreError`] but the mismatches.
    pub fn create(
        &self,
        path: &RelPath,
        size: u64,
        meta: FileMeta,
        alg: HashAlg,
        resume: Option<Partial>,
    ) -> Result<Incoming, StoreError> {
        let _ = (path, size, meta, alg, resume);
        unimplemented!("store")
    }

    /// Creates a directory and its missing parents; an existing directory is fine.
    ///
    /// # Errors
    /// Validation, symlink, wrong-kind and I/O errors.
    pub fn mkdir(&self, path: &RelPath, mode: u32) -> Result<(), StoreError> {
        let _ = (path, mode);
        unimplemented!("store")
    }

    /// Opens a regular file for reading (never through a symlink), with its entry.
    ///
    /// # Errors
    /// Not found, symlink, wrong kind, I/O.
    pub fn open_file(&self, path: &RelPath) -> Result<(File, Entry), StoreError> {
        let _ = path;
        unimplemented!("store")
    }

    /// One directory level (`None` is the root), sorted by name, reserved names hidden.
    ///
    /// # Errors
    /// Not found, symlink, wrong kind, too many entries, I/O.
    pub fn list(&self, dir: Option<&RelPath>) -> Result<Vec<Entry>, StoreError> {
        let _ = dir;
        unimplemented!("store")
    }

    /// What a `get` of `path` fetches (`None` is the root): a file gives itself; a directory
    /// gives itself and, recursively, its directories and regular files (symlinks and special
    /// files skipped), parents before children. Entry paths are relative to `path`'s parent,
    /// so the requested name is kept: `get docs` yields `docs`, `docs/a.txt`, ...
    ///
    /// # Errors
    /// Not found, symlink, too many entries, I/O.
    pub fn walk(&self, path: Option<&RelPath>) -> Result<Vec<Entry>, StoreError> {
        let _ = path;
        unimplemented!("store")
    }
}

/// A file being received: bytes are hashed and written as they come.
#[derive(Debug)]
pub struct Incoming {
    received: u64,
}

impl Incoming {
    /// Bytes held so far (the resumed prefix included).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Appends and hashes a chunk.
    ///
    /// # Errors
    /// [`StoreError::SizeMismatch`] past the declared size; [`StoreError::NoSpace`] when the
    /// disk or a file-size limit is hit (the partial is removed); I/O errors.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let _ = chunk;
        unimplemented!("store")
    }

    /// Checks size and digest, syncs, applies mode and mtime, and renames into place by the
    /// policy (then syncs the directory). On a mismatch the partial is removed.
    ///
    /// # Errors
    /// Size or hash mismatch, a name taken meanwhile under [`Policy::Refuse`], I/O.
    pub fn commit(self, hash_hex: &str) -> Result<Stored, StoreError> {
        let _ = hash_hex;
        unimplemented!("store")
    }

    /// Removes the partial data (a refused or corrupt transfer).
    pub fn discard(self) {
        unimplemented!("store")
    }
}

/// Dropping an `Incoming` without `commit` or `discard` keeps the partial file (synced) for a
/// later resume: that is what an interrupted transfer leaves, never under the final name.
impl Drop for Incoming {
    fn drop(&mut self) {}
}
