//! Storing many small files at once: each is received into its partial, checked and sealed,
//! then each one's data is synced and it is renamed into place, and each directory they landed
//! in is synced once. The guarantees are a single file's (nothing under its final name before
//! its data is durable, every name durable before it is reported stored); what changes is
//! that the disk commits its journal a few times per batch rather than twice per file, and
//! that the files are made and sealed on several threads at once.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::super::hash::HashAlg;
use super::at::io_error;
use super::receive::DirHandles;
use super::{FileMeta, Incoming, RelPath, Store, StoreError, Stored};

/// Most threads that make and seal the files of one batch together. Making a file is the
/// file system's slow part for small files (finding a free inode: on ext4 without a journal,
/// kernel CPU time that grows with the files deleted in the last minute; on a journaled file
/// system, waits for its commits), and files made unnamed (see `at::new_locked_file`) are
/// made side by side; a few threads keep the cores and the disk busy.
pub(crate) const STORE_THREADS: usize = 8;

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

impl Store {
    /// Stores `files`, each with the checks, policy and atomicity of [`Store::create`] and a
    /// commit, and returns one result per file, in order; a file that fails does not hold up
    /// the others. Files are made and sealed on up to [`STORE_THREADS`] threads, then synced
    /// and renamed in order. A path given twice is stored once: the later ones are
    /// [`StoreError::Busy`]. Blocking: call it on a blocking thread. Holds one open partial
    /// per file (and one handle per directory) until the batch is done, so callers bound its
    /// length.
    pub(crate) fn store_batch(&self, files: Vec<BatchFile>) -> Vec<Result<Stored, StoreError>> {
        let mut results: Vec<Option<Result<Stored, StoreError>>> =
            std::iter::repeat_with(|| None).take(files.len()).collect();
        let mut seen = HashSet::new();
        let mut pending = Vec::with_capacity(files.len());
        for (i, file) in files.iter().enumerate() {
            if seen.insert(file.path.as_wire()) {
                pending.push(i);
            } else {
                results[i] = Some(Err(StoreError::Busy(file.path.to_string())));
            }
        }
        while !pending.is_empty() {
            let dirs = DirHandles::default();
            let sealed = in_parallel(&pending, |&i| self.seal_one(&files[i], &dirs));
            let short: Vec<bool> = sealed.iter().map(out_of_descriptors).collect();
            // Each sealed file holds a descriptor: when some ran out, store the others (which
            // frees theirs) and try those again; when all did, they fail.
            let retry = short.iter().any(|&s| s) && !short.iter().all(|&s| s);
            let mut again = Vec::new();
            let mut group = Vec::with_capacity(sealed.len());
            for ((i, sealed), short) in pending.iter().zip(sealed).zip(short) {
                if retry && short {
                    again.push(*i);
                } else {
                    group.push((*i, sealed));
                }
            }
            let indexes: Vec<usize> = group.iter().map(|(i, _)| *i).collect();
            let done = self.finish_group(group.into_iter().map(|(_, s)| s).collect());
            for (i, result) in indexes.into_iter().zip(done) {
                results[i] = Some(result);
            }
            pending = again;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io_error(String::new(), lost()))))
            .collect()
    }

    /// Syncs and places the sealed files of `group`, then syncs each of their directories
    /// once; one result per file, in order.
    fn finish_group(&self, group: Vec<Sealed>) -> Vec<Result<Stored, StoreError>> {
        // One `syncfs` per file system makes every sealed file durable at once: a sync per
        // new file would each wait for a journal commit of its own (most of a small file's
        // cost). If one fails, each file is synced on its own, which names any that failed.
        let already_synced = sync_file_systems(&group);
        // Renamed one after another: renames between two directories take the file system's
        // rename lock, so threads would only queue for it.
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
                (Some(incoming), Ok(stored)) => match sync_once(&incoming.parent, &mut synced) {
                    Ok(()) => Ok(stored),
                    Err(e) => Err(io_error(stored.name, e)),
                },
                (_, result) => result,
            })
            .collect()
    }

    fn seal_one(&self, file: &BatchFile, dirs: &DirHandles) -> Sealed {
        let size = file.data.len() as u64;
        let mut incoming = self.create_in(&file.path, size, file.meta, file.alg, None, dirs)?;
        if let Err(e) = incoming.write(&file.data) {
            incoming.discard();
            return Err(e);
        }
        incoming.seal(&file.hash)
    }
}

/// The error for a file the batch lost track of (a bug, never expected).
fn lost() -> std::io::Error {
    std::io::Error::other("the batch lost this file")
}

/// `work` on each of `items`, on up to [`STORE_THREADS`] threads (this one included) taking
/// the next item as they finish one; the results in the items' order. Where a thread cannot
/// be started, the others do its share.
fn in_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = STORE_THREADS.min(items.len());
    if threads <= 1 {
        return items.iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let take_turns = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, work(item)));
        }
    };
    let mut done = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("sockit-store".to_string())
                    .spawn_scoped(scope, take_turns)
                    .ok()
            })
            .collect();
        let mut done = take_turns();
        for helper in helpers {
            match helper.join() {
                Ok(theirs) => done.extend(theirs),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Syncs the file system of every sealed file in `group` once (`syncfs`), after which their
/// data and inodes are on disk; whether every one of those syncs succeeded. The partials of
/// one batch share their directory, so this is one `syncfs`, found without a `stat` per file.
fn sync_file_systems(group: &[Sealed]) -> bool {
    let mut synced: Vec<*const OwnedFd> = Vec::new();
    for sealed in group {
        let Ok(Ok(incoming)) = sealed else {
            continue;
        };
        let dir = Arc::as_ptr(&incoming.partials);
        if synced.contains(&dir) {
            continue;
        }
        if nix::unistd::syncfs(incoming.partial_fd()).is_err() {
            return false;
        }
        synced.push(dir);
    }
    true
}

/// A directory synced in this batch (its handle, shared by the files in it) and how that went.
type Synced = Vec<(*const OwnedFd, Result<(), nix::errno::Errno>)>;

/// Syncs `dir` unless this batch already did (then its outcome again).
fn sync_once(dir: &Arc<OwnedFd>, synced: &mut Synced) -> Result<(), nix::errno::Errno> {
    let key = Arc::as_ptr(dir);
    if let Some((_, done)) = synced.iter().find(|(k, _)| *k == key) {
        return *done;
    }
    let done = nix::unistd::fsync(dir.as_fd());
    synced.push((key, done));
    done
}
