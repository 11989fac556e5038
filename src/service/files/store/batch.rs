//! Storing many small files at once: each is received into its partial, checked and sealed,
//! then each one's data is synced and it is renamed into place, and each directory they landed
//! in is synced once. The guarantees are a single file's (nothing under its final name before
//! its data is durable, every name durable before it is reported stored); what changes is
//! that the disk commits its journal a few times per batch rather than twice per file.

use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::sys::stat::fstat;

use super::super::hash::HashAlg;
use super::at::io_error;
use super::receive::DirHandles;
use super::{FileMeta, Incoming, RelPath, Store, StoreError, Stored};

/// One whole small file, as received, to be stored by [`Store::store_batch`].
#[derive(Debug)]
pub(crate) struct BatchFile {
    /// Where it goes.
    pub path: RelPath,
    /// Mode and mtime to give it.
    pub meta: FileMeta,
    /// The digest `hash` is in.
    pub alg: HashAlg,
    /// All its bytes.
    pub data: Vec<u8>,
    /// The sender's digest of them, hex.
    pub hash: String,
}

/// A file of a batch received and checked: ready to be placed, already held unchanged, or
/// failed.
type Sealed = Result<Result<Incoming, Stored>, StoreError>;

/// Whether sealing failed for want of file descriptors (which placing others frees).
fn out_of_descriptors(sealed: &Sealed) -> bool {
    matches!(sealed, Err(StoreError::Io { source, .. })
        if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)))
}

/// A directory synced in this batch (by device and inode) and how that went.
type Synced = Vec<((u64, u64), Result<(), Errno>)>;

impl Store {
    /// Stores `files`, each with the checks, policy and atomicity of [`Store::create`] and a
    /// commit, and returns one result per file, in order; a file that fails does not hold up
    /// the others. Blocking: call it on a blocking thread. Holds one open partial per file
    /// (and one handle per directory) until the batch is done, so callers bound its length.
    pub(crate) fn store_batch(&self, files: Vec<BatchFile>) -> Vec<Result<Stored, StoreError>> {
        let mut results = Vec::with_capacity(files.len());
        let mut dirs = DirHandles::default();
        let mut group = Vec::new();
        for file in &files {
            let mut sealed = self.seal_one(file, &mut dirs);
            if out_of_descriptors(&sealed) && !group.is_empty() {
                // Each sealed file holds a descriptor: store those, then go on.
                results.extend(self.finish_group(std::mem::take(&mut group)));
                dirs = DirHandles::default();
                sealed = self.seal_one(file, &mut dirs);
            }
            group.push(sealed);
        }
        results.extend(self.finish_group(group));
        results
    }

    /// Syncs and places the sealed files of `group`, then syncs each of their directories
    /// once; one result per file, in order.
    fn finish_group(&self, group: Vec<Sealed>) -> Vec<Result<Stored, StoreError>> {
        // One `syncfs` per file system makes every sealed file durable at once: a sync per
        // new file would each wait for a journal commit of its own (most of a small file's
        // cost). If one fails, each file is synced on its own, which names any that failed.
        let already_synced = sync_file_systems(&group);
        let placed: Vec<(Option<Incoming>, Result<Stored, StoreError>)> = group
            .into_iter()
            .map(|sealed| match sealed {
                Ok(Ok(mut incoming)) => {
                    let placed = incoming.place_sealed(already_synced);
                    (Some(incoming), placed)
                }
                Ok(Err(unchanged)) => (None, Ok(unchanged)),
                Err(e) => (None, Err(e)),
            })
            .collect();
        let mut synced = Synced::new();
        placed
            .into_iter()
            .map(|(incoming, placed)| match (incoming, placed) {
                (Some(incoming), Ok(stored)) => match sync_once(incoming.parent(), &mut synced) {
                    Ok(()) => Ok(stored),
                    Err(e) => Err(io_error(stored.name, e)),
                },
                (_, result) => result,
            })
            .collect()
    }

    fn seal_one(&self, file: &BatchFile, dirs: &mut DirHandles) -> Sealed {
        let size = file.data.len() as u64;
        let mut incoming = self.create_in(&file.path, size, file.meta, file.alg, None, dirs)?;
        if let Err(e) = incoming.write(&file.data) {
            incoming.discard();
            return Err(e);
        }
        incoming.seal(&file.hash)
    }
}

/// Syncs the file system of every sealed file in `group` once (`syncfs`), after which their
/// data and inodes are on disk; whether every one of those syncs succeeded.
fn sync_file_systems(group: &[Sealed]) -> bool {
    let mut synced: Vec<u64> = Vec::new();
    for sealed in group {
        let Ok(Ok(incoming)) = sealed else {
            continue;
        };
        let fd = incoming.partial_fd();
        let Ok(st) = fstat(fd) else {
            return false;
        };
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // widths differ by unix
        let dev = st.st_dev as u64;
        if synced.contains(&dev) {
            continue;
        }
        if nix::unistd::syncfs(fd).is_err() {
            return false;
        }
        synced.push(dev);
    }
    true
}

/// Syncs `dir` unless this batch already did (then its outcome again).
fn sync_once(dir: BorrowedFd<'_>, synced: &mut Synced) -> Result<(), Errno> {
    let st = fstat(dir)?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // widths differ by unix
    let key = (st.st_dev as u64, st.st_ino as u64);
    if let Some((_, done)) = synced.iter().find(|(k, _)| *k == key) {
        return *done;
    }
    let done = nix::unistd::fsync(dir);
    synced.push((key, done));
    done
}
