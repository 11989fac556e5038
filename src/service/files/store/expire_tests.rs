use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tempfile::TempDir;

use super::super::super::hash::HashAlg;
use super::super::{FileMeta, Incoming, RelPath, StoreOptions};
use super::*;

const META: FileMeta = FileMeta {
    mode: 0o644,
    mtime: 1_700_000_000,
    mtime_nsec: 0,
};

/// Older than [`DEFAULT_PARTIAL_MAX_AGE`] by a day.
const STALE_AGE: Duration = Duration::from_secs(8 * 24 * 60 * 60);

/// A name shaped like a partial's, for things the store did not put there.
const PARTIAL_LIKE: &str = "0123456789abcdef0123456789abcdef.part";

struct Fixture {
    tmp: TempDir,
    store: Store,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        let store = Store::open(&tmp.path().join("root"), StoreOptions::default()).unwrap();
        Fixture { tmp, store }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn partials(&self) -> PathBuf {
        self.root().join(PARTIAL_DIR)
    }

    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    /// Starts receiving `path` and writes a few bytes; the partial stays while this lives.
    fn receive(&self, path: &str) -> Incoming {
        let path = RelPath::parse(path).unwrap();
        let mut incoming = self
            .store
            .create(&path, 100, META, HashAlg::Blake3, None)
            .unwrap();
        incoming.write(b"some of it").unwrap();
        incoming
    }

    /// An interrupted transfer of `path`: its partial is left behind. Returns the partial.
    fn interrupted(&self, path: &str) -> PathBuf {
        let before = self.partial_names();
        drop(self.receive(path));
        let after = self.partial_names();
        let new: Vec<_> = after.difference(&before).collect();
        assert_eq!(new.len(), 1, "one new partial");
        self.partials().join(new[0])
    }

    fn partial_names(&self) -> std::collections::BTreeSet<String> {
        match fs::read_dir(self.partials()) {
            Ok(dir) => dir
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect(),
            Err(_) => Default::default(),
        }
    }
}

/// Sets `path`'s own modification time (not a symlink's target's) `age` into the past.
fn age_by(path: &Path, age: Duration) {
    let then = SystemTime::now() - age;
    let secs = then.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mtime = TimeSpec::new(i64::try_from(secs).unwrap() as _, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

#[test]
fn partials_older_than_the_max_age_are_removed_and_fresh_ones_kept() {
    let fx = Fixture::new();
    let stale = fx.interrupted("old.bin");
    let fresh = fx.interrupted("new.bin");
    age_by(&stale, STALE_AGE);
    let expired = fx.store.expire_partials(DEFAULT_PARTIAL_MAX_AGE).unwrap();
    assert_eq!(
        expired,
        Expired {
            removed: 1,
            busy: 0
        }
    );
    assert!(!stale.exists(), "the stale partial is gone");
    assert!(fresh.exists(), "the fresh partial stays");
    let resumable = fx
        .store
        .partial(&RelPath::parse("new.bin").unwrap(), HashAlg::Blake3)
        .unwrap();
    assert_eq!(
        resumable.map(|p| p.len),
        Some(10),
        "and can still be resumed"
    );
}

#[test]
fn a_partial_being_written_is_kept_however_old() {
    let fx = Fixture::new();
    let mut writing = fx.receive("big.iso");
    let partial = fx.partials().join(fx.partial_names().pop_first().unwrap());
    age_by(&partial, STALE_AGE);
    let expired = fx.store.expire_partials(DEFAULT_PARTIAL_MAX_AGE).unwrap();
    assert_eq!(
        expired,
        Expired {
            removed: 0,
            busy: 1
        }
    );
    assert!(partial.exists());
    writing.write(b"more").unwrap();
    drop(writing);
    assert!(partial.exists(), "the transfer's data is intact");
}

#[test]
fn only_partial_files_are_expired_never_through_a_symlink_nor_outside() {
    let fx = Fixture::new();
    let stale = fx.interrupted("a.bin");
    age_by(&stale, STALE_AGE);
    // An old file outside the store, reachable through a symlink with a partial's name.
    let target = fx.outside().join("precious");
    fs::write(&target, b"keep me").unwrap();
    age_by(&target, STALE_AGE);
    let link = fx.partials().join(PARTIAL_LIKE);
    symlink(&target, &link).unwrap();
    age_by(&link, STALE_AGE);
    // Old things in the store that are not partials.
    let other = fx.partials().join("notes.txt");
    fs::write(&other, b"not a partial").unwrap();
    age_by(&other, STALE_AGE);
    let dir = fx.partials().join(PARTIAL_LIKE.replace('0', "f"));
    fs::create_dir(&dir).unwrap();
    age_by(&dir, STALE_AGE);
    let stored = fx.root().join("old.txt");
    fs::write(&stored, b"a stored file").unwrap();
    age_by(&stored, STALE_AGE);

    let expired = fx.store.expire_partials(DEFAULT_PARTIAL_MAX_AGE).unwrap();
    assert_eq!(
        expired,
        Expired {
            removed: 1,
            busy: 0
        }
    );
    assert!(!stale.exists());
    assert!(fs::symlink_metadata(&link).is_ok(), "the symlink is left");
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
    assert!(other.exists() && dir.exists() && stored.exists());
}

#[test]
fn a_symlinked_partial_dir_is_refused_not_followed() {
    let fx = Fixture::new();
    drop(fx.interrupted("a.bin"));
    fs::remove_dir_all(fx.partials()).unwrap();
    let victim = fx.outside().join(PARTIAL_LIKE);
    fs::write(&victim, b"outside").unwrap();
    age_by(&victim, STALE_AGE);
    symlink(fx.outside(), fx.partials()).unwrap();
    let err = fx
        .store
        .expire_partials(DEFAULT_PARTIAL_MAX_AGE)
        .unwrap_err();
    assert!(matches!(err, StoreError::Symlink(_)), "{err:?}");
    assert!(victim.exists());
}

#[test]
fn a_store_without_partials_has_nothing_to_expire() {
    let fx = Fixture::new();
    let expired = fx.store.expire_partials(DEFAULT_PARTIAL_MAX_AGE).unwrap();
    assert_eq!(expired, Expired::default());
}

/// A store whose partials at rest may hold at most `cap` bytes.
fn capped(cap: u64) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("outside")).unwrap();
    let options = StoreOptions {
        partial_max_total: cap,
        ..StoreOptions::default()
    };
    let store = Store::open(&tmp.path().join("root"), options).unwrap();
    Fixture { tmp, store }
}

#[test]
fn a_cut_off_transfer_drops_the_oldest_partials_beyond_the_total_cap() {
    // Each interrupted transfer leaves 10 bytes; the cap holds two.
    let fx = capped(25);
    let first = fx.interrupted("a.bin");
    age_by(&first, Duration::from_secs(60));
    let second = fx.interrupted("b.bin");
    assert!(first.exists(), "20 bytes fit: {first:?}");
    assert!(second.exists(), "20 bytes fit: {second:?}");
    let third = fx.interrupted("c.bin");
    assert!(!first.exists(), "the least recently written went");
    assert!(second.exists() && third.exists());
}

#[test]
fn a_partial_in_use_is_never_dropped_for_the_cap_and_does_not_count() {
    let fx = capped(15);
    let writing = fx.receive("busy.bin");
    let old = fx.interrupted("a.bin");
    age_by(&old, Duration::from_secs(60));
    let new = fx.interrupted("b.bin");
    assert!(!old.exists() && new.exists());
    assert_eq!(fx.partial_names().len(), 2, "the one being written stays");
    drop(writing);
}

#[test]
fn a_cut_off_transfer_alone_over_the_cap_keeps_nothing() {
    let fx = capped(5);
    let kept = fx.partial_names();
    drop(fx.receive("big.bin"));
    assert_eq!(
        fx.partial_names(),
        kept,
        "10 bytes over a 5-byte cap are dropped"
    );
}

#[test]
fn a_lowered_cap_is_applied_to_what_is_already_kept() {
    let fx = Fixture::new();
    let old = fx.interrupted("a.bin");
    age_by(&old, Duration::from_secs(60));
    let new = fx.interrupted("b.bin");
    let root = fx.root();
    let options = StoreOptions {
        partial_max_total: 10,
        ..StoreOptions::default()
    };
    let reopened = Store::open(&root, options).unwrap();
    let capped = reopened.cap_partials().unwrap();
    assert_eq!(capped.removed, 1);
    assert!(!old.exists() && new.exists());
}
