//! The receiving half of the store: partial files kept for resume, and starting a transfer
//! once everything that can be checked before the data arrives has been.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat, Flock, FlockArg, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode};

use super::super::hash::{HashAlg, Hasher};
use super::super::messages::Kind;
use super::at::{self, io_error, kind_of, stat_at};
use super::{FileMeta, Incoming, Partial, RelPath, Seen, Store, StoreError, PARTIAL_DIR};

/// Bytes read at a time when hashing a partial file.
const HASH_BUF_BYTES: usize = 256 * 1024;

/// How long taking a partial file's lock waits for the transfer holding it: long enough for
/// a session whose client has just vanished to settle its partial (so `put` run again right
/// after Ctrl-C resumes instead of finding the file busy), short enough that a transfer of
/// the same name that is really running is reported `busy` promptly.
pub(crate) const PARTIAL_LOCK_WAIT: Duration = Duration::from_secs(2);

/// How often a lock held by another transfer is tried again while waiting.
const PARTIAL_LOCK_POLL: Duration = Duration::from_millis(10);

impl Store {
    /// The partial copy of `path` kept from an interrupted transfer, hashed with `alg`, if
    /// any. Nothing is created. The same refusals as [`Store::create`] apply as far as they
    /// do not depend on the size, so a doomed `put` is refused at its probe.
    ///
    /// # Errors
    /// Symlink and wrong-kind errors on the way; [`StoreError::Exists`] (or
    /// [`StoreError::WrongKind`] for a directory) at the final name as [`Store::create`];
    /// [`StoreError::Busy`] while another transfer of `path` is writing it; I/O errors
    /// reading the partial.
    pub fn partial(&self, path: &RelPath, alg: HashAlg) -> Result<Option<Partial>, StoreError> {
        self.partial_for(path, alg, None)
    }

    /// [`Store::partial`] for a transfer of `size` bytes, when known: a regular file of that
    /// size under the final name is no refusal here, as with [`Store::create`] (it may hold
    /// the same bytes).
    pub(crate) fn partial_for(
        &self,
        path: &RelPath,
        alg: HashAlg,
        size: Option<u64>,
    ) -> Result<Option<Partial>, StoreError> {
        let (parents, name) = path.split_last();
        match self.open_dirs(parents, None) {
            Ok(parent) => self.check_final(parent.as_fd(), name, path, size)?,
            // No parent, no file under the final name; a partial may still be kept.
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let Some(partials) = self.partial_dir_for_transfer(false)? else {
            return Ok(None);
        };
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let file = match openat(partials, partial_name(path).as_str(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT | Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(io_error(partial_shown(path), e)),
        };
        // Shared: a writer (an exclusive lock) can neither hold it now nor start meanwhile.
        let file = lock_partial(file, FlockArg::LockSharedNonblock, path)?;
        let seen = fstat(&*file).map_err(|e| io_error(partial_shown(path), e))?;
        if kind_of(&seen) != Kind::File {
            return Ok(None);
        }
        let limit = u64::try_from(seen.st_size).unwrap_or(0);
        let (len, hasher) =
            hash_prefix(&file, limit, alg).map_err(|e| io_error(partial_shown(path), e))?;
        let seen = Seen {
            stat: seen,
            len,
            hex: hasher.hex(),
        };
        Ok((len > 0).then_some(Partial { len, hasher, seen }))
    }

    /// Starts receiving `path` of `size` bytes. With `resume`, the partial file is kept up
    /// to `resume.len` bytes (which must be what [`Store::partial`] returned) and the data
    /// continues from there; otherwise it starts empty. Missing parent directories are
    /// created; a symlinked parent is refused. The policy, the size cap and free space are
    /// checked here, before any data is accepted; a partial file is locked so a second
    /// transfer of the same name gets [`StoreError::Busy`].
    ///
    /// If the partial file changed since [`Store::partial`] hashed it (another transfer of
    /// the same name ran in between), its prefix is read again and must still match
    /// `resume.hasher`; otherwise this is [`StoreError::Busy`] and the sender should probe
    /// again — never a file mixing two senders' bytes.
    ///
    /// # Errors
    /// Any [`StoreError`] but the hash mismatch; [`StoreError::SizeMismatch`] only for a
    /// `resume.len` over `size`.
    pub fn create(
        &self,
        path: &RelPath,
        size: u64,
        meta: FileMeta,
        alg: HashAlg,
        resume: Option<Partial>,
    ) -> Result<Incoming, StoreError> {
        self.create_in(path, size, meta, alg, resume, &DirHandles::default())
    }

    /// [`Store::create`] reusing the directory handles `dirs` holds (and adding to them): many
    /// files received together, on one thread or several, hold one handle per directory, not
    /// two per file.
    pub(super) fn create_in(
        &self,
        path: &RelPath,
        size: u64,
        meta: FileMeta,
        alg: HashAlg,
        resume: Option<Partial>,
        dirs: &DirHandles,
    ) -> Result<Incoming, StoreError> {
        super::path::check_writable(path, &self.options)?;
        let start = self.admit(path, size, alg, resume.as_ref())?;
        let (parents, name) = path.split_last();
        let parent = {
            // Held while a missing one is opened, so threads sharing `dirs` open it once.
            let mut known = dirs.parents.lock().unwrap_or_else(PoisonError::into_inner);
            match known.iter().find(|(p, _)| p.as_slice() == parents) {
                Some((_, dir)) => Arc::clone(dir),
                None => {
                    let dir = Arc::new(self.open_dirs(parents, Some(0o755))?);
                    known.push((parents.to_vec(), Arc::clone(&dir)));
                    dir
                }
            }
        };
        self.check_final(parent.as_fd(), name, path, Some(size))?;
        let partials = {
            let mut known = dirs.partials.lock().unwrap_or_else(PoisonError::into_inner);
            match &*known {
                Some(dir) => Arc::clone(dir),
                None => {
                    let Some(dir) = self.partial_dir_for_transfer(true)? else {
                        return Err(StoreError::NotFound(PARTIAL_DIR.to_string()));
                    };
                    Arc::clone(known.insert(Arc::new(dir)))
                }
            }
        };
        let partial_name = partial_name(path);
        let fresh = match resume {
            None => at::new_locked_file(partials.as_fd(), &partial_name),
            Some(_) => None,
        };
        let (file, st) = match fresh {
            Some(fresh) => fresh,
            None => open_partial(partials.as_fd(), &partial_name, resume.is_none(), path)?,
        };
        let hasher = start_hasher(&file, &st, resume, alg, path)?;
        Ok(Incoming {
            path: path.clone(),
            file,
            partials,
            partial_name,
            parent,
            size,
            received: start,
            writeback_from: start,
            hasher,
            // The peer's mode within this process's umask, as `tar` does for ordinary users and
            // `cp` always: a peer cannot make a world-writable file here.
            meta: FileMeta {
                mode: meta.mode & !self.umask,
                ..meta
            },
            policy: self.options.policy,
            partial_max_total: self.options.partial_max_total,
            removed: false,
        })
    }

    /// The checks [`Store::create`] makes before touching the disk: the size cap, a resume
    /// within `size` and hashed with `alg`, and free space for the rest. Returns where the
    /// data starts.
    fn admit(
        &self,
        path: &RelPath,
        size: u64,
        alg: HashAlg,
        resume: Option<&Partial>,
    ) -> Result<u64, StoreError> {
        let limit = self.options.max_file_size;
        if size > limit {
            return Err(StoreError::TooLarge {
                path: path.to_string(),
                size,
                limit,
            });
        }
        let start = resume.map_or(0, |p| p.len);
        if start > size {
            return Err(StoreError::SizeMismatch {
                path: path.to_string(),
                got: start,
                declared: size,
            });
        }
        if resume.is_some_and(|p| p.hasher.alg() != alg) {
            return Err(io_error(
                path.to_string(),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the partial data was hashed with another digest",
                ),
            ));
        }
        let free =
            at::free_bytes(self.root_fd.as_fd()).map_err(|e| io_error(path.to_string(), e))?;
        if free < size - start {
            return Err(StoreError::NoSpace(path.to_string()));
        }
        Ok(start)
    }
}

/// Directory handles shared by the files of one batch (see [`Store::create_in`]).
#[derive(Debug, Default)]
pub(super) struct DirHandles {
    partials: Mutex<Option<Arc<OwnedFd>>>,
    parents: Mutex<Vec<(Vec<String>, Arc<OwnedFd>)>>,
}

/// The partial file's name for `path`: fixed length whatever the path, so any valid path
/// has one, and never a peer's string on disk.
fn partial_name(path: &RelPath) -> String {
    let digest = blake3::hash(path.as_wire().as_bytes());
    format!("{}.part", &digest.to_hex()[..32])
}

fn partial_shown(path: &RelPath) -> String {
    format!("{path} (partial data)")
}

/// Locks `path`'s partial file, waiting up to [`PARTIAL_LOCK_WAIT`] for a transfer that holds
/// it; [`StoreError::Busy`] if it still does.
fn lock_partial(file: File, arg: FlockArg, path: &RelPath) -> Result<Flock<File>, StoreError> {
    lock_waiting(file, arg, PARTIAL_LOCK_WAIT).map_err(|e| match e {
        Errno::EWOULDBLOCK => StoreError::Busy(path.to_string()),
        e => io_error(partial_shown(path), e),
    })
}

/// Takes the non-blocking lock `arg` on `file`, trying again for up to `wait` while another
/// transfer holds it; `EWOULDBLOCK` if it is still held then. Blocks the thread: call it on a
/// blocking or disk thread, as every store operation is.
pub(super) fn lock_waiting(
    file: File,
    arg: FlockArg,
    wait: Duration,
) -> Result<Flock<File>, Errno> {
    let deadline = Instant::now() + wait;
    let mut file = file;
    loop {
        match Flock::lock(file, arg) {
            Ok(locked) => return Ok(locked),
            Err((back, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = back;
                std::thread::sleep(PARTIAL_LOCK_POLL);
            }
            Err((_, e)) => return Err(e),
        }
    }
}

/// Opens and locks the partial file `name` in `dir` for writing (creating it with `create`).
/// The lock is taken before anything is truncated, and the name is checked to still be the
/// locked file afterwards: a transfer that removed it meanwhile must not leave us writing
/// an unlinked file, nor later renaming someone else's.
fn open_partial(
    dir: BorrowedFd<'_>,
    name: &str,
    create: bool,
    path: &RelPath,
) -> Result<(Flock<File>, FileStat), StoreError> {
    let mut flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    if create {
        flags |= OFlag::O_CREAT;
    }
    for _ in 0..at::RACE_RETRIES {
        let file = match openat(dir, name, flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => {
                // Resuming, and the partial is gone: another transfer completed or dropped it.
                return Err(StoreError::Busy(path.to_string()));
            }
            Err(e) => return Err(io_error(partial_shown(path), e)),
        };
        let file = lock_partial(file, FlockArg::LockExclusiveNonblock, path)?;
        let st = fstat(&*file).map_err(|e| io_error(partial_shown(path), e))?;
        if kind_of(&st) != Kind::File {
            return Err(StoreError::WrongKind(partial_shown(path), "regular file"));
        }
        match stat_at(dir, name) {
            Ok(now) if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) => {
                if st.st_nlink == 1 {
                    return Ok((file, st));
                }
                // A second name for it (a link fallback that could not unlink, or a planted
                // hard link): truncating would change that other file. Start a fresh one.
                let _ = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
                if !create {
                    return Err(StoreError::Busy(path.to_string()));
                }
            }
            Ok(_) | Err(Errno::ENOENT) if create => {}
            Ok(_) | Err(Errno::ENOENT) => return Err(StoreError::Busy(path.to_string())),
            Err(e) => return Err(io_error(partial_shown(path), e)),
        }
    }
    Err(StoreError::Busy(path.to_string()))
}

/// The hasher for the partial file just opened and locked: a fresh one after emptying it, or,
/// resuming, `resume`'s once the kept prefix is proven unchanged (read again if the file was
/// touched since [`Store::partial`]) and the file cut to it.
fn start_hasher(
    file: &Flock<File>,
    st: &FileStat,
    resume: Option<Partial>,
    alg: HashAlg,
    path: &RelPath,
) -> Result<Hasher, StoreError> {
    let shown_err = |e| io_error(partial_shown(path), e);
    match resume {
        None => {
            if st.st_size != 0 {
                file.set_len(0).map_err(shown_err)?;
            }
            Ok(Hasher::new(alg))
        }
        Some(p) => {
            let unchanged = same_contents(st, &p.seen.stat)
                && p.len == p.seen.len
                && p.hasher.hex() == p.seen.hex;
            if !unchanged {
                let (len, again) = hash_prefix(file, p.len, alg).map_err(shown_err)?;
                if len != p.len || again.hex() != p.hasher.hex() {
                    return Err(StoreError::Busy(path.to_string()));
                }
            }
            file.set_len(p.len).map_err(shown_err)?;
            (&**file).seek(SeekFrom::Start(p.len)).map_err(shown_err)?;
            Ok(p.hasher)
        }
    }
}

/// Whether `now` is the same file as `then`, unmodified since (size, change and
/// modification times).
fn same_contents(now: &FileStat, then: &FileStat) -> bool {
    let key = |st: &FileStat| {
        (
            st.st_dev,
            st.st_ino,
            st.st_size,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_ctime,
            st.st_ctime_nsec,
        )
    };
    key(now) == key(then)
}

/// The hex digest of `file` if it holds exactly `size` bytes (`None` if it holds fewer).
pub(super) fn hash_whole(file: &File, size: u64, alg: HashAlg) -> std::io::Result<Option<String>> {
    let (len, hasher) = hash_prefix(file, size, alg)?;
    Ok((len == size).then(|| hasher.hex()))
}

/// Hashes up to `limit` bytes from the start of `file` with a bounded buffer; returns how
/// many there were.
fn hash_prefix(file: &File, limit: u64, alg: HashAlg) -> std::io::Result<(u64, Hasher)> {
    let mut hasher = Hasher::new(alg);
    let mut buf = vec![0; HASH_BUF_BYTES];
    let mut reader = std::io::Read::take(file, limit);
    let mut len = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher))
}
