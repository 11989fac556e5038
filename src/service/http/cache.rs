//! Small files' contents kept in memory, each use checked first by one `fstatat` below the
//! root handle: a file is served from memory only while its device, inode, size, mode and
//! modification and change times to the nanosecond are all as they were when it was read.
//!
//! That turns a small file's open, stat, read and close into one stat. A file replaced by
//! an upload's rename has a new inode; one written in place has a new change time, unless
//! the write falls in the same timestamp tick as the read, which is why a file changed less
//! than [`CACHE_SETTLE`] ago is never kept (git's "racy clean" rule).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nix::sys::stat::FileStat;

use super::head::FileHead;
use super::mapped::{self, MIN_MAPPED_BYTES};

/// Largest file whose contents are kept.
pub const MAX_CACHED_FILE_BYTES: u64 = 1024 * 1024;

/// Most files kept at once.
pub const MAX_CACHED_FILES: usize = 1024;

/// Most bytes of contents kept at once.
pub const MAX_CACHED_BYTES: usize = 64 * 1024 * 1024;

/// A file changed less than this long ago is served from disk, not kept: well beyond any
/// file system's timestamp granularity.
pub const CACHE_SETTLE: Duration = Duration::from_secs(2);

/// What must be unchanged for kept contents to be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    size: i64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn of(st: &FileStat) -> Version {
        Version {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as i64,
            mode: st.st_mode as u32,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

/// A kept file: its contents and the head its responses carry, both made from the same
/// version.
#[derive(Debug, Clone)]
struct Kept {
    version: Version,
    bytes: Bytes,
    head: Arc<FileHead>,
}

#[derive(Debug, Default)]
struct Entries {
    by_path: HashMap<String, Kept>,
    bytes: usize,
}

/// The kept files, by their path below the root (components joined with `/`).
#[derive(Debug, Default)]
pub(crate) struct SmallFiles {
    entries: RwLock<Entries>,
}

impl SmallFiles {
    /// The kept contents of `rel`, the head made with them, and its status, if `stat` (taken
    /// only when something is kept) shows it unchanged; a changed or vanished file is
    /// forgotten.
    pub(crate) fn get(
        &self,
        rel: &str,
        stat: impl FnOnce() -> Option<FileStat>,
    ) -> Option<(Bytes, Arc<FileHead>, FileStat)> {
        // A read lock: the two workers look up side by side (a mutex here showed as futex
        // waits under load).
        let kept = self.entries.read().ok()?.by_path.get(rel).cloned()?;
        if let Some(now) = stat().filter(|now| Version::of(now) == kept.version) {
            return Some((kept.bytes, kept.head, now));
        }
        if let Ok(mut entries) = self.entries.write() {
            if entries
                .by_path
                .get(rel)
                .is_some_and(|k| k.version == kept.version)
            {
                entries.by_path.remove(rel);
                entries.bytes -= kept.bytes.len();
            }
        }
        None
    }

    /// Whether a file with status `st` may be kept: small, and settled.
    pub(crate) fn wants(st: &FileStat) -> bool {
        let small = u64::try_from(st.st_size).is_ok_and(|size| size <= MAX_CACHED_FILE_BYTES);
        let changed = UNIX_EPOCH
            + Duration::new(
                u64::try_from(st.st_ctime).unwrap_or(0),
                u32::try_from(st.st_ctime_nsec).unwrap_or(0),
            );
        let settled = SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age >= CACHE_SETTLE);
        small && settled
    }

    /// Keeps `bytes`, read from `rel` after its status `st` was taken (a change after that
    /// shows in the next status, so it is never served), with `head`, made from `st`.
    /// Others are forgotten to make room. Returns the bytes to serve: those kept, which for
    /// a file of [`MIN_MAPPED_BYTES`] or more are in a sealed memory file, sent with
    /// sendfile ([`mapped`]).
    pub(crate) fn put(&self, rel: &str, st: &FileStat, bytes: Bytes, head: Arc<FileHead>) -> Bytes {
        if !SmallFiles::wants(st) || bytes.len() > MAX_CACHED_BYTES {
            return bytes;
        }
        let bytes = if bytes.len() >= MIN_MAPPED_BYTES {
            mapped::map(&bytes).unwrap_or(bytes)
        } else {
            bytes
        };
        let Ok(mut entries) = self.entries.write() else {
            return bytes;
        };
        if let Some(old) = entries.by_path.remove(rel) {
            entries.bytes -= old.bytes.len();
        }
        while entries.by_path.len() >= MAX_CACHED_FILES
            || entries.bytes + bytes.len() > MAX_CACHED_BYTES
        {
            // Any one: the map's order is the hashes', as good as a random choice.
            let Some(victim) = entries.by_path.keys().next().cloned() else {
                break;
            };
            if let Some(old) = entries.by_path.remove(&victim) {
                entries.bytes -= old.bytes.len();
            }
        }
        entries.bytes += bytes.len();
        let kept = Kept {
            version: Version::of(st),
            bytes: bytes.clone(),
            head,
        };
        entries.by_path.insert(rel.to_owned(), kept);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::stat;

    fn head(st: &FileStat) -> Arc<FileHead> {
        Arc::new(FileHead::new(
            http::HeaderValue::from_static("text/plain"),
            st,
        ))
    }

    fn aged(path: &std::path::Path) {
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn a_file_changed_in_place_with_the_same_size_is_not_served_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, "one").unwrap();
        let cache = SmallFiles::default();
        let st = stat(&path).unwrap();
        // Just written: not settled, not kept.
        cache.put("a", &st, Bytes::from_static(b"one"), head(&st));
        assert!(
            cache.get("a", || Some(st)).is_none(),
            "kept before it settled"
        );
        // Its change time is now, whatever its modification time says; keep it regardless
        // by backdating what the cache believes, then rewrite it in place.
        let mut old = st;
        old.st_ctime -= 60;
        cache.put("a", &old, Bytes::from_static(b"one"), head(&old));
        let kept = cache.get("a", || Some(old)).map(|(bytes, _, _)| bytes);
        assert_eq!(kept.as_deref(), Some(&b"one"[..]));
        std::fs::write(&path, "two").unwrap();
        aged(&path);
        assert!(cache.get("a", || stat(&path).ok()).is_none());
        let entries = cache.entries.read().unwrap();
        assert!(entries.by_path.is_empty(), "a changed file is forgotten");
        assert_eq!(entries.bytes, 0);
    }

    #[test]
    fn the_cache_stays_within_its_bounds() {
        let cache = SmallFiles::default();
        let mut st = stat(".").unwrap();
        st.st_ctime -= 60;
        st.st_size = 1;
        for i in 0..MAX_CACHED_FILES + 10 {
            st.st_ino = i as _;
            cache.put(&i.to_string(), &st, Bytes::from_static(b"x"), head(&st));
        }
        let entries = cache.entries.read().unwrap();
        assert_eq!(entries.by_path.len(), MAX_CACHED_FILES);
        assert_eq!(entries.bytes, MAX_CACHED_FILES);
    }
}
