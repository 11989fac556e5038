//! A file being received: appended and hashed chunk by chunk into its partial file, then
//! checked, synced and renamed into place by the store's policy.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, Flock, OFlag};
use nix::sys::stat::{fstat, Mode};
use nix::sys::time::TimeSpec;

use super::super::hash::Hasher;
use super::super::messages::Kind;
use super::at::{io_error, kind_of, perm, rename_noreplace, rename_replace};
use super::receive::hash_whole;
use super::{
    FileMeta, Policy, RelPath, StoreError, Stored, MAX_COMPONENT_BYTES, MAX_RENAME_ATTEMPTS,
};

/// Received bytes are handed to the disk in windows this size as they arrive.
pub(crate) const WRITEBACK_WINDOW_BYTES: u64 = 8 * 1024 * 1024;

/// A file being received: bytes are hashed and written as they come.
#[derive(Debug)]
pub struct Incoming {
    pub(super) path: RelPath,
    /// The partial file, exclusively locked until this is dropped.
    pub(super) file: Flock<File>,
    /// The partial directory and the partial's name in it.
    pub(super) partials: Arc<OwnedFd>,
    pub(super) partial_name: String,
    /// The final name's directory, opened (without symlinks) when the transfer started.
    pub(super) parent: Arc<OwnedFd>,
    pub(super) size: u64,
    pub(super) received: u64,
    /// Where the next early writeback starts (see [`Incoming::start_writeback`]).
    pub(super) writeback_from: u64,
    pub(super) hasher: Hasher,
    pub(super) meta: FileMeta,
    pub(super) policy: Policy,
    /// The store's cap on partial data at rest (see [`Drop`](#impl-Drop-for-Incoming)).
    pub(super) partial_max_total: u64,
    /// The partial's name no longer belongs to this transfer (removed, or renamed into
    /// place): it must not be touched again, another transfer may have taken it.
    pub(super) removed: bool,
}

impl Incoming {
    /// Bytes held so far (the resumed prefix included).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The hex digest of the bytes held so far: what [`Incoming::commit`] is given when the
    /// sender declared no digest of its own (an HTTP `PUT` without `Content-Digest`).
    pub(crate) fn digest_hex(&self) -> String {
        self.hasher.hex()
    }

    /// Takes what arrived as the size, for a sender that declared only an upper bound (the
    /// files of a browser form share one `Content-Length`): the caps and the free-space check
    /// were made against that bound when the file was created.
    pub(crate) fn settle_size(&mut self) {
        self.size = self.received;
    }

    /// Appends and hashes a chunk.
    ///
    /// # Errors
    /// [`StoreError::SizeMismatch`] past the declared size (nothing of the chunk is written
    /// and the partial is removed); [`StoreError::NoSpace`] when the disk, a quota or a
    /// file-size limit is hit (the partial is removed); I/O errors.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.check_live()?;
        let total = self.received.saturating_add(chunk.len() as u64);
        if total > self.size {
            self.remove();
            return Err(StoreError::SizeMismatch {
                path: self.path.to_string(),
                got: total,
                declared: self.size,
            });
        }
        if let Err(e) = (&*self.file).write_all(chunk) {
            return Err(self.write_error(e));
        }
        self.hasher.update(chunk);
        self.received = total;
        self.start_writeback();
        Ok(())
    }

    /// Starts writing back each completed [`WRITEBACK_WINDOW_BYTES`] to disk while the rest
    /// still arrives, so the fsync before the rename finds little left to do and the disk
    /// works in parallel with the network. Only initiates I/O: it does not wait for it.
    fn start_writeback(&mut self) {
        if self.received - self.writeback_from >= WRITEBACK_WINDOW_BYTES {
            self.start_writeback_all();
        }
    }

    /// Starts writing back everything from `writeback_from` on, without waiting for it.
    fn start_writeback_all(&mut self) {
        let pending = self.received - self.writeback_from;
        if pending == 0 {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            let (Ok(offset), Ok(len)) = (
                libc::off64_t::try_from(self.writeback_from),
                libc::off64_t::try_from(pending),
            ) else {
                return;
            };
            // SAFETY: a plain syscall on an fd this struct owns; no memory is passed.
            // A failure only loses the head start: the fsync at commit still syncs everything.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    offset,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.writeback_from = self.received;
    }

    /// Checks size and digest, applies mode and mtime, syncs, and renames into place by the
    /// policy (then syncs the directory). Any failure removes the partial.
    ///
    /// Under [`Policy::Rename`] the number goes before the last extension:
    /// `a.txt` → `a (1).txt`, `archive.tar.gz` → `archive.tar (1).gz`; a name without one,
    /// or whose only dot leads it (`.bashrc`), gets it at the end: `.bashrc (1)`.
    ///
    /// # Errors
    /// Size or hash mismatch, a name taken meanwhile under [`Policy::Refuse`], a directory
    /// at the name under [`Policy::Overwrite`], I/O (a mount point between the root and the
    /// target directory is one: the partial cannot be renamed across it).
    pub(crate) fn commit(mut self, hash_hex: &str) -> Result<Stored, StoreError> {
        self.check_live()?;
        let result = self.finish(hash_hex);
        if result.is_err() {
            self.remove();
        }
        result
    }

    /// Removes the partial data (a refused or corrupt transfer).
    pub(crate) fn discard(mut self) {
        self.remove();
    }

    fn finish(&mut self, hash_hex: &str) -> Result<Stored, StoreError> {
        if let Some(unchanged) = self.verify(hash_hex)? {
            return Ok(unchanged);
        }
        let name = self.sync_and_place(false)?;
        // The name is in place now; only its durability is in question from here.
        nix::unistd::fsync(self.parent.as_fd()).map_err(|e| self.io(e))?;
        Ok(name)
    }

    /// Checks size and digest and applies mode and mtime; `Some` when the final name already
    /// holds these very bytes (nothing more to do but drop the partial, done here).
    fn verify(&mut self, hash_hex: &str) -> Result<Option<Stored>, StoreError> {
        if self.received != self.size {
            return Err(StoreError::SizeMismatch {
                path: self.path.to_string(),
                got: self.received,
                declared: self.size,
            });
        }
        if !self.hasher.matches(hash_hex) {
            return Err(StoreError::HashMismatch(
                self.path.to_string(),
                self.hasher.alg(),
            ));
        }
        if self.policy != Policy::Overwrite && self.final_name_holds_the_same_bytes() {
            self.remove();
            return Ok(Some(Stored {
                name: self.path.to_string(),
                size: self.size,
                unchanged: true,
            }));
        }
        let fd = &*self.file;
        nix::sys::stat::fchmod(fd, perm(self.meta.mode)).map_err(|e| self.io(e))?;
        let mtime = TimeSpec::new(
            self.meta.mtime as _,
            self.meta.mtime_nsec.min(999_999_999) as _,
        );
        nix::sys::stat::futimens(fd, &TimeSpec::UTIME_NOW, &mtime).map_err(|e| self.io(e))?;
        Ok(None)
    }

    /// Syncs the data (unless `already_synced`: a `syncfs` of its file system covered it)
    /// and renames it into place by the policy; the directory is not synced.
    fn sync_and_place(&mut self, already_synced: bool) -> Result<Stored, StoreError> {
        if !already_synced {
            if let Err(e) = self.file.sync_all() {
                return Err(self.write_error(e));
            }
        }
        let name = self.place()?;
        let (parents, _) = self.path.split_last();
        let name = match parents {
            [] => name,
            _ => format!("{}/{name}", parents.join("/")),
        };
        Ok(Stored {
            name,
            size: self.size,
            unchanged: false,
        })
    }

    /// The first half of a commit made for many files at once (see `Store::store_batch`):
    /// checks size and digest and applies mode and mtime. `Ok(Err(stored))` when the name
    /// already holds these bytes. Any failure removes the partial. No writeback is started
    /// here: the batch's one `syncfs` writes all its files back together, which costs less
    /// than a writeback submitted for each small file.
    pub(super) fn seal(mut self, hash_hex: &str) -> Result<Result<Incoming, Stored>, StoreError> {
        self.check_live()?;
        match self.verify(hash_hex) {
            Ok(Some(unchanged)) => Ok(Err(unchanged)),
            Ok(None) => Ok(Ok(self)),
            Err(e) => {
                self.remove();
                Err(e)
            }
        }
    }

    /// The second half: syncs the data and renames it into place; the caller syncs the
    /// directory (once for all the files of a batch that share it). Any failure removes the
    /// partial.
    /// `already_synced`: a `syncfs` of the file's file system, after it was sealed,
    /// succeeded, so its data and inode are durable and it needs no sync of its own.
    pub(super) fn place_sealed(&mut self, already_synced: bool) -> Result<Stored, StoreError> {
        let placed = self.sync_and_place(already_synced);
        if placed.is_err() {
            self.remove();
        }
        placed
    }

    /// The partial file's descriptor (for `syncfs`).
    pub(super) fn partial_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Whether the final name already holds a regular file with exactly the bytes received
    /// (same size, same digest): then there is nothing to store, and under the refuse and
    /// rename policies no conflict either. Any doubt (an error, a symlink) is a no.
    fn final_name_holds_the_same_bytes(&self) -> bool {
        let (_, name) = self.path.split_last();
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let Ok(fd) = openat(self.parent.as_fd(), name, flags, Mode::empty()) else {
            return false;
        };
        let file = File::from(fd);
        let is_same_size_file = fstat(&file).is_ok_and(|st| {
            kind_of(&st) == Kind::File && u64::try_from(st.st_size).is_ok_and(|n| n == self.size)
        });
        is_same_size_file
            && hash_whole(&file, self.size, self.hasher.alg())
                .is_ok_and(|hex| hex.is_some_and(|hex| self.hasher.matches(&hex)))
    }

    /// Renames the partial to its final name by the policy; returns the name used.
    fn place(&mut self) -> Result<String, StoreError> {
        let (_, name) = self.path.split_last();
        let name = name.to_string();
        let (from_dir, to_dir) = (self.partials.as_fd(), self.parent.as_fd());
        let from = self.partial_name.as_str();
        let placed = match self.policy {
            Policy::Refuse => match rename_noreplace(from_dir, from, to_dir, &name) {
                Ok(()) => Ok(name),
                Err(Errno::EEXIST) => return Err(StoreError::Exists(self.path.to_string())),
                Err(e) => Err(e),
            },
            Policy::Overwrite => match rename_replace(from_dir, from, to_dir, &name) {
                Ok(()) => Ok(name),
                Err(Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST) => {
                    return Err(StoreError::WrongKind(self.path.to_string(), "regular file"))
                }
                Err(e) => Err(e),
            },
            Policy::Rename => {
                let mut placed = Err(Errno::EEXIST);
                for n in 0..=MAX_RENAME_ATTEMPTS {
                    let candidate = if n == 0 {
                        name.clone()
                    } else {
                        numbered(&name, n)
                    };
                    match rename_noreplace(from_dir, from, to_dir, &candidate) {
                        Err(Errno::EEXIST) => continue,
                        done => {
                            placed = done.map(|()| candidate);
                            break;
                        }
                    }
                }
                if placed == Err(Errno::EEXIST) {
                    return Err(StoreError::Exists(self.path.to_string()));
                }
                placed
            }
        };
        match placed {
            Ok(name) => {
                self.removed = true;
                Ok(name)
            }
            Err(Errno::EXDEV) => Err(io_error(
                self.path.to_string(),
                std::io::Error::other(
                    "its directory is on another file system than the store's root (a mount \
                     point inside it): the received data cannot be renamed there",
                ),
            )),
            Err(e) => Err(self.io(e)),
        }
    }

    fn check_live(&self) -> Result<(), StoreError> {
        if self.removed {
            return Err(io_error(
                self.path.to_string(),
                std::io::Error::other("the transfer already ended and its data was removed"),
            ));
        }
        Ok(())
    }

    /// A full disk, quota or file-size limit removes the partial; anything else keeps it.
    fn write_error(&mut self, e: std::io::Error) -> StoreError {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => {
                self.remove();
                StoreError::NoSpace(self.path.to_string())
            }
            _ => self.io(e),
        }
    }

    fn io(&self, e: impl Into<std::io::Error>) -> StoreError {
        io_error(self.path.to_string(), e)
    }

    /// Unlinks the partial; it is still ours (locked and checked at open), nobody else can
    /// have replaced it.
    fn remove(&mut self) {
        if std::mem::replace(&mut self.removed, true) {
            return;
        }
        if let Err(e) = nix::unistd::unlinkat(
            self.partials.as_fd(),
            self.partial_name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            tracing::warn!(path = %self.path, error = %e, "could not remove partial data");
        }
    }
}

/// Dropping an `Incoming` without `commit` or `discard` keeps the partial file for a later
/// resume (and releases its lock): that is what an interrupted transfer leaves, never under
/// the final name. It is not synced: a resume proves its prefix by digest anyway.
///
/// The partials at rest are then kept within the store's `partial_max_total`: the least
/// recently written ones not in use are dropped to make room for this one, and this one is
/// dropped if it alone is over the cap.
impl Drop for Incoming {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let limit = self.partial_max_total;
        let Some(budget) = limit.checked_sub(self.received) else {
            tracing::info!(path = %self.path, bytes = self.received, limit,
                "partial data over the partial total cap dropped: a later transfer starts over");
            self.remove();
            return;
        };
        // This partial is still locked by us, so it is not counted against the budget.
        let capped = super::expire::cap_partials_in(self.partials.as_fd(), budget);
        if capped.removed > 0 {
            tracing::info!(
                removed = capped.removed,
                limit,
                "oldest partial data dropped to keep partial files within their total cap"
            );
        }
    }
}

/// `name` with ` (n)` before its last extension, shortened to stay within
/// [`MAX_COMPONENT_BYTES`].
pub(super) fn numbered(name: &str, n: u32) -> String {
    let (mut stem, mut ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    let mut suffix = format!(" ({n}){ext}");
    if suffix.len() >= MAX_COMPONENT_BYTES / 2 {
        (stem, ext) = (name, "");
        suffix = format!(" ({n}){ext}");
    }
    let mut cut = stem.len().min(MAX_COMPONENT_BYTES - suffix.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &stem[..cut])
}
