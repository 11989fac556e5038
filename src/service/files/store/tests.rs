//! The store against a real file system in a temporary directory: hostile layouts planted
//! inside the root, every policy, resume, and the checks made before data is accepted.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::fs::File;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tempfile::TempDir;

use super::batch::STORE_THREADS;
use super::incoming::numbered;
use super::*;

const META: FileMeta = FileMeta {
    mode: 0o644,
    mtime: 1_700_000_000,
    mtime_nsec: 0,
};

/// A store rooted at `<tmp>/root`, with `<tmp>/outside` beside it for symlinks to aim at.
struct Fixture {
    tmp: TempDir,
    store: Store,
}

impl Fixture {
    fn new(policy: Policy) -> Fixture {
        Fixture::with(StoreOptions {
            policy,
            ..StoreOptions::default()
        })
    }

    fn with(options: StoreOptions) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        let store = Store::open(&tmp.path().join("root"), options).unwrap();
        Fixture { tmp, store }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    /// Receives `bytes` as `path` in two chunks and commits with their digest.
    fn put(&self, path: &str, bytes: &[u8]) -> Result<Stored, StoreError> {
        let mut incoming = self.create(path, bytes.len() as u64)?;
        let (a, b) = bytes.split_at(bytes.len() / 2);
        incoming.write(a)?;
        incoming.write(b)?;
        incoming.commit(&digest(bytes))
    }

    fn create(&self, path: &str, size: u64) -> Result<Incoming, StoreError> {
        self.store
            .create(&rel(path), size, META, HashAlg::Blake3, None)
    }

    /// How many partial files are kept.
    fn partials(&self) -> usize {
        match fs::read_dir(self.root().join(PARTIAL_DIR)) {
            Ok(dir) => dir.count(),
            Err(_) => 0,
        }
    }

    /// The one partial file kept.
    fn partial_file(&self) -> PathBuf {
        let mut dir = fs::read_dir(self.root().join(PARTIAL_DIR)).unwrap();
        let file = dir.next().unwrap().unwrap().path();
        assert!(dir.next().is_none());
        file
    }
}

fn rel(path: &str) -> RelPath {
    RelPath::parse(path).unwrap()
}

fn digest(bytes: &[u8]) -> String {
    let mut hasher = Hasher::new(HashAlg::Blake3);
    hasher.update(bytes);
    hasher.hex()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn open_creates_a_missing_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a/b");
    let store = Store::open(&root, StoreOptions::default()).unwrap();
    assert!(root.is_dir());
    assert_eq!(store.root(), root);
    fs::write(tmp.path().join("file"), "x").unwrap();
    let err = Store::open(&tmp.path().join("file"), StoreOptions::default()).unwrap_err();
    assert_eq!(err.code(), "io_error");
}

#[test]
fn a_file_is_stored_with_its_parents_and_nothing_else_is_left() {
    let fx = Fixture::new(Policy::Refuse);
    let stored = fx.put("d/e/a.txt", b"hello").unwrap();
    assert_eq!(
        stored,
        Stored {
            name: "d/e/a.txt".into(),
            size: 5,
            unchanged: false,
        }
    );
    assert_eq!(fs::read(fx.root().join("d/e/a.txt")).unwrap(), b"hello");
    assert_eq!(fx.partials(), 0);
    assert_eq!(names(&fx.root()), [PARTIAL_DIR, "d"]);
    let partial_dir = fs::metadata(fx.root().join(PARTIAL_DIR)).unwrap();
    assert_eq!(partial_dir.mode() & 0o077, 0);
    // An empty file has no data chunks at all.
    let empty = fx.create("empty", 0).unwrap();
    assert_eq!(empty.commit(&digest(b"")).unwrap().size, 0);
    assert_eq!(fs::read(fx.root().join("empty")).unwrap(), b"");
}

#[test]
fn a_symlinked_parent_is_refused_everywhere_and_nothing_is_written_outside() {
    let fx = Fixture::new(Policy::Overwrite);
    fs::write(fx.outside().join("f"), "outside").unwrap();
    symlink(fx.outside(), fx.root().join("link")).unwrap();
    fs::create_dir(fx.root().join("real")).unwrap();
    symlink(fx.outside(), fx.root().join("real/link")).unwrap();
    symlink("../outside", fx.root().join("rel")).unwrap();

    for path in ["link", "real/link", "rel"] {
        let symlinked = |e: StoreError| match e {
            StoreError::Symlink(shown) => assert_eq!(shown, path),
            other => panic!("{path}: {other:?}"),
        };
        symlinked(fx.put(&format!("{path}/new"), b"x").unwrap_err());
        symlinked(fx.put(&format!("{path}/f"), b"x").unwrap_err());
        symlinked(fx.put(&format!("{path}/sub/new"), b"x").unwrap_err());
        symlinked(
            fx.store
                .mkdir(&rel(&format!("{path}/d")), 0o755)
                .unwrap_err(),
        );
        symlinked(fx.store.open_file(&rel(&format!("{path}/f"))).unwrap_err());
        symlinked(fx.store.list(Some(&rel(path))).unwrap_err());
        symlinked(fx.store.walk(Some(&rel(path))).unwrap_err());
        symlinked(
            fx.store
                .partial(&rel(&format!("{path}/f")), HashAlg::Blake3)
                .unwrap_err(),
        );
    }
    assert_eq!(names(&fx.outside()), ["f"]);
    assert_eq!(fs::read(fx.outside().join("f")).unwrap(), b"outside");
    assert_eq!(fx.partials(), 0);
}

#[test]
fn a_symlink_at_the_final_name_counts_as_existing_under_refuse() {
    let fx = Fixture::new(Policy::Refuse);
    fs::write(fx.outside().join("target"), "secret").unwrap();
    symlink(fx.outside().join("target"), fx.root().join("a.txt")).unwrap();
    symlink(fx.outside().join("missing"), fx.root().join("dangling")).unwrap();
    for path in ["a.txt", "dangling"] {
        assert!(matches!(fx.put(path, b"x"), Err(StoreError::Exists(_))));
        assert!(matches!(
            fx.store.partial(&rel(path), HashAlg::Blake3),
            Err(StoreError::Exists(_))
        ));
        assert!(matches!(
            fx.store.open_file(&rel(path)),
            Err(StoreError::Symlink(_))
        ));
    }
    assert_eq!(fs::read(fx.outside().join("target")).unwrap(), b"secret");
    assert_eq!(names(&fx.outside()), ["target"]);
}

#[test]
fn overwrite_replaces_a_planted_symlink_itself_not_its_target() {
    let fx = Fixture::new(Policy::Overwrite);
    fs::write(fx.outside().join("target"), "secret").unwrap();
    symlink(fx.outside().join("target"), fx.root().join("a.txt")).unwrap();
    fx.put("a.txt", b"mine").unwrap();
    let meta = fs::symlink_metadata(fx.root().join("a.txt")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(fs::read(fx.root().join("a.txt")).unwrap(), b"mine");
    assert_eq!(fs::read(fx.outside().join("target")).unwrap(), b"secret");
}

#[test]
fn refuse_leaves_the_existing_file_byte_identical() {
    let fx = Fixture::new(Policy::Refuse);
    fx.put("a.txt", b"first").unwrap();
    let before = fs::metadata(fx.root().join("a.txt")).unwrap();
    let err = fx.put("a.txt", b"second, longer").unwrap_err();
    assert!(
        matches!(&err, StoreError::Exists(name) if name == "a.txt"),
        "{err:?}"
    );
    assert_eq!(err.code(), "exists");
    assert_eq!(fs::read(fx.root().join("a.txt")).unwrap(), b"first");
    let after = fs::metadata(fx.root().join("a.txt")).unwrap();
    assert_eq!((before.ino(), before.mtime()), (after.ino(), after.mtime()));
    assert_eq!(fx.partials(), 0);
}

#[test]
fn overwrite_replaces_an_existing_file() {
    let fx = Fixture::new(Policy::Overwrite);
    fx.put("a.txt", b"first").unwrap();
    fx.put("a.txt", b"second").unwrap();
    assert_eq!(fs::read(fx.root().join("a.txt")).unwrap(), b"second");
    assert_eq!(names(&fx.root()), [PARTIAL_DIR, "a.txt"]);
}

#[test]
fn a_directory_at_the_name_is_the_wrong_kind_unless_renaming() {
    for policy in [Policy::Refuse, Policy::Overwrite] {
        let fx = Fixture::new(policy);
        fs::create_dir(fx.root().join("d")).unwrap();
        let err = fx.put("d", b"x").unwrap_err();
        assert!(matches!(err, StoreError::WrongKind(_, _)), "{err:?}");
        assert!(fx.root().join("d").is_dir());
    }
    // Created after the checks: the rename itself refuses to replace a directory.
    let fx = Fixture::new(Policy::Overwrite);
    let mut incoming = fx.create("d", 1).unwrap();
    incoming.write(b"x").unwrap();
    fs::create_dir(fx.root().join("d")).unwrap();
    let err = incoming.commit(&digest(b"x")).unwrap_err();
    assert!(matches!(err, StoreError::WrongKind(_, _)), "{err:?}");
    assert_eq!(fx.partials(), 0);

    let fx = Fixture::new(Policy::Rename);
    fs::create_dir(fx.root().join("d")).unwrap();
    assert_eq!(fx.put("d", b"x").unwrap().name, "d (1)");
}

#[test]
fn rename_keeps_both_as_numbered_copies() {
    let fx = Fixture::with(StoreOptions {
        policy: Policy::Rename,
        allow_hidden_names: true,
        ..StoreOptions::default()
    });
    assert_eq!(fx.put("a.txt", b"0").unwrap().name, "a.txt");
    assert_eq!(fx.put("a.txt", b"1").unwrap().name, "a (1).txt");
    assert_eq!(fx.put("a.txt", b"2").unwrap().name, "a (2).txt");
    assert_eq!(fx.put("d/.bashrc", b"0").unwrap().name, "d/.bashrc");
    assert_eq!(fx.put("d/.bashrc", b"1").unwrap().name, "d/.bashrc (1)");
    for (name, bytes) in [("a.txt", "0"), ("a (1).txt", "1"), ("a (2).txt", "2")] {
        assert_eq!(fs::read_to_string(fx.root().join(name)).unwrap(), bytes);
    }
}

#[test]
fn numbered_names_put_the_number_before_the_last_extension() {
    assert_eq!(numbered("a.txt", 1), "a (1).txt");
    assert_eq!(numbered("archive.tar.gz", 2), "archive.tar (2).gz");
    assert_eq!(numbered(".bashrc", 1), ".bashrc (1)");
    assert_eq!(numbered("README", 10), "README (10)");
    let long = format!("{}.txt", "é".repeat(125));
    let renamed = numbered(&long, 9999);
    assert!(renamed.len() <= MAX_COMPONENT_BYTES, "{}", renamed.len());
    assert!(renamed.ends_with("é (9999).txt"), "{renamed}");
    let long_ext = format!("a.{}", "x".repeat(250));
    let renamed = numbered(&long_ext, 3);
    assert!(renamed.len() <= MAX_COMPONENT_BYTES && renamed.ends_with(" (3)"));
}

#[test]
fn a_wrong_hash_leaves_neither_the_file_nor_the_partial() {
    let fx = Fixture::new(Policy::Refuse);
    let mut incoming = fx.create("a.txt", 5).unwrap();
    incoming.write(b"hello").unwrap();
    let err = incoming.commit(&digest(b"hellO")).unwrap_err();
    assert!(
        matches!(&err, StoreError::HashMismatch(name, HashAlg::Blake3) if name == "a.txt"),
        "{err:?}"
    );
    assert_eq!(err.code(), "hash_mismatch");
    assert!(!fx.root().join("a.txt").exists());
    assert_eq!(fx.partials(), 0);
    // Not hex at all, or a prefix of the right digest.
    for bad in ["", "zz", &digest(b"hello")[..10]] {
        let mut incoming = fx.create("a.txt", 5).unwrap();
        incoming.write(b"hello").unwrap();
        assert!(matches!(
            incoming.commit(bad),
            Err(StoreError::HashMismatch(..))
        ));
    }
    assert_eq!(fx.partials(), 0);
}

#[test]
fn short_and_long_bodies_are_size_mismatches_and_leave_nothing() {
    let fx = Fixture::new(Policy::Refuse);
    let mut short = fx.create("short", 10).unwrap();
    short.write(b"12345").unwrap();
    let err = short.commit(&digest(b"12345")).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SizeMismatch {
                got: 5,
                declared: 10,
                ..
            }
        ),
        "{err:?}"
    );

    let mut long = fx.create("long", 4).unwrap();
    long.write(b"123").unwrap();
    let err = long.write(b"45").unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SizeMismatch {
                got: 5,
                declared: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(long.received(), 3);
    assert_eq!(fx.partials(), 0);
    // Whatever the caller does next, the transfer stays over.
    assert_eq!(long.write(b"4").unwrap_err().code(), "io_error");
    assert_eq!(
        long.commit(&digest(b"1234")).unwrap_err().code(),
        "io_error"
    );

    assert_eq!(names(&fx.root()), [PARTIAL_DIR]);
}

#[test]
fn an_interrupted_transfer_resumes_from_its_verified_prefix() {
    let fx = Fixture::new(Policy::Refuse);
    let data = body(1_000_000);
    let (head, tail) = data.split_at(600_000);
    assert!(fx
        .store
        .partial(&rel("big"), HashAlg::Blake3)
        .unwrap()
        .is_none());

    let mut first = fx.create("big", data.len() as u64).unwrap();
    first.write(&head[..300_000]).unwrap();
    first.write(&head[300_000..]).unwrap();
    drop(first); // the connection broke
    assert!(!fx.root().join("big").exists());

    let partial = fx
        .store
        .partial(&rel("big"), HashAlg::Blake3)
        .unwrap()
        .unwrap();
    assert_eq!(partial.len, head.len() as u64);
    assert_eq!(partial.hasher.hex(), digest(head));

    let mut second = fx
        .store
        .create(
            &rel("big"),
            data.len() as u64,
            META,
            HashAlg::Blake3,
            Some(partial),
        )
        .unwrap();
    assert_eq!(second.received(), head.len() as u64);
    second.write(tail).unwrap();
    second.commit(&digest(&data)).unwrap();
    assert_eq!(fs::read(fx.root().join("big")).unwrap(), data);
    assert_eq!(fx.partials(), 0);
}

#[test]
fn a_resume_claim_other_than_the_probed_one_is_checked_against_the_data() {
    let fx = Fixture::new(Policy::Refuse);
    let data = body(1000);
    let mut first = fx.create("f", 1000).unwrap();
    first.write(&data[..800]).unwrap();
    drop(first);
    let probed = fx
        .store
        .partial(&rel("f"), HashAlg::Sha256)
        .unwrap()
        .unwrap();
    assert_eq!(probed.len, 800);

    // A digest of other bytes than those held: refused, the partial kept as it was.
    let mut forged = probed.clone();
    forged.hasher = Hasher::new(HashAlg::Sha256);
    forged.hasher.update(&[0; 800]);
    let err = fx
        .store
        .create(&rel("f"), 1000, META, HashAlg::Sha256, Some(forged))
        .unwrap_err();
    assert_eq!(err.code(), "busy");
    assert_eq!(fs::read(fx.partial_file()).unwrap(), &data[..800]);

    // A shorter prefix that does match what is held is fine.
    let mut shorter = probed;
    shorter.len = 500;
    shorter.hasher = Hasher::new(HashAlg::Sha256);
    shorter.hasher.update(&data[..500]);
    let mut incoming = fx
        .store
        .create(&rel("f"), 1000, META, HashAlg::Sha256, Some(shorter))
        .unwrap();
    assert_eq!(incoming.received(), 500);
    incoming.write(&data[500..]).unwrap();
    let mut whole = Hasher::new(HashAlg::Sha256);
    whole.update(&data);
    incoming.commit(&whole.hex()).unwrap();
    assert_eq!(fs::read(fx.root().join("f")).unwrap(), data);
}

#[test]
fn a_tampered_partial_gives_a_different_prefix_digest() {
    let fx = Fixture::new(Policy::Refuse);
    let data = body(4096);
    let mut first = fx.create("f", 8192).unwrap();
    first.write(&data).unwrap();
    drop(first);
    let mut bytes = fs::read(fx.partial_file()).unwrap();
    bytes[100] ^= 1;
    fs::write(fx.partial_file(), &bytes).unwrap();
    let partial = fx
        .store
        .partial(&rel("f"), HashAlg::Blake3)
        .unwrap()
        .unwrap();
    assert_eq!(partial.len, 4096);
    // The sender compares with its own prefix digest, sees a difference, and restarts at 0.
    assert_ne!(partial.hasher.hex(), digest(&data));
}

#[test]
fn a_partial_changed_after_the_probe_is_not_resumed() {
    let fx = Fixture::new(Policy::Refuse);
    let mut first = fx.create("f", 100).unwrap();
    first.write(&[b'a'; 50]).unwrap();
    drop(first);
    let probed = fx
        .store
        .partial(&rel("f"), HashAlg::Blake3)
        .unwrap()
        .unwrap();
    // Another sender of the same name runs between the probe and the resumed put.
    let mut other = fx.create("f", 100).unwrap();
    other.write(&[b'b'; 60]).unwrap();
    drop(other);
    let err = fx
        .store
        .create(&rel("f"), 100, META, HashAlg::Blake3, Some(probed))
        .unwrap_err();
    assert!(matches!(err, StoreError::Busy(_)), "{err:?}");
    // The other sender's partial is still there to resume.
    let partial = fx
        .store
        .partial(&rel("f"), HashAlg::Blake3)
        .unwrap()
        .unwrap();
    assert_eq!(partial.hasher.hex(), digest(&[b'b'; 60]));
}

#[test]
fn a_second_concurrent_create_of_one_name_is_busy() {
    let fx = Fixture::new(Policy::Refuse);
    let mut first = fx.create("a.txt", 4).unwrap();
    first.write(b"ab").unwrap();
    let err = fx.create("a.txt", 4).unwrap_err();
    assert!(
        matches!(&err, StoreError::Busy(name) if name == "a.txt"),
        "{err:?}"
    );
    assert!(matches!(
        fx.store.partial(&rel("a.txt"), HashAlg::Blake3),
        Err(StoreError::Busy(_))
    ));
    // The refused one did not truncate the first one's data.
    first.write(b"cd").unwrap();
    first.commit(&digest(b"abcd")).unwrap();
    assert_eq!(fs::read(fx.root().join("a.txt")).unwrap(), b"abcd");
    // Other names are not affected.
    fx.put("b.txt", b"b").unwrap();
}

#[test]
fn a_name_taken_before_commit_under_refuse_is_exists_and_the_first_file_stays() {
    let fx = Fixture::new(Policy::Refuse);
    let mut incoming = fx.create("a.txt", 6).unwrap();
    incoming.write(b"second").unwrap();
    // The other client's file lands between this one's checks and its rename.
    fs::write(fx.root().join("a.txt"), "first").unwrap();
    let err = incoming.commit(&digest(b"second")).unwrap_err();
    assert!(matches!(err, StoreError::Exists(_)), "{err:?}");
    assert_eq!(fs::read(fx.root().join("a.txt")).unwrap(), b"first");
    assert_eq!(fx.partials(), 0);
    assert_eq!(names(&fx.root()), [PARTIAL_DIR, "a.txt"]);
}

#[test]
fn special_permission_bits_are_never_kept_the_umask_applies_and_mtime_is_kept() {
    let mut fx = Fixture::new(Policy::Refuse);
    // The umask the store read when it opened, fixed here so the test does not depend on the
    // environment's.
    fx.store.umask = 0o022;
    for (name, mode, kept) in [
        ("suid", 0o4755, 0o755),
        ("sticky", 0o1777, 0o755),
        ("world-writable", 0o666, 0o644),
        ("ro", 0o400, 0o400),
        ("private", 0o600, 0o600),
    ] {
        let meta = FileMeta {
            mode,
            mtime: 1_234_567_890,
            mtime_nsec: 123_456_789,
        };
        let mut incoming = fx
            .store
            .create(&rel(name), 1, meta, HashAlg::Blake3, None)
            .unwrap();
        incoming.write(b"x").unwrap();
        incoming.commit(&digest(b"x")).unwrap();
        let stored = fs::metadata(fx.root().join(name)).unwrap();
        assert_eq!(stored.permissions().mode() & 0o7777, kept, "{name}");
        assert_eq!(
            (stored.mtime(), stored.mtime_nsec()),
            (1_234_567_890, 123_456_789)
        );
    }
    // A peer's absurd timestamp does not fail the transfer.
    let meta = FileMeta {
        mode: 0o644,
        mtime: -1,
        mtime_nsec: u32::MAX,
    };
    let mut incoming = fx
        .store
        .create(&rel("old"), 1, meta, HashAlg::Blake3, None)
        .unwrap();
    incoming.write(b"x").unwrap();
    incoming.commit(&digest(b"x")).unwrap();
}

#[test]
fn sizes_over_the_limit_or_the_free_space_are_refused_before_any_data() {
    let fx = Fixture::with(StoreOptions {
        policy: Policy::Refuse,
        max_file_size: 1000,
        ..StoreOptions::default()
    });
    let err = fx.create("big", 1001).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                size: 1001,
                limit: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    fx.create("fits", 1000).unwrap().discard();

    let fx = Fixture::with(StoreOptions {
        policy: Policy::Refuse,
        max_file_size: u64::MAX,
        ..StoreOptions::default()
    });
    let free = at::free_bytes(fx.store.root_fd.as_fd()).unwrap();
    let err = fx
        .create("d/huge", free.saturating_mul(2).max(1 << 50))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NoSpace(name) if name == "d/huge"),
        "{err:?}"
    );
    assert_eq!(err.code(), "no_space");
    // Nothing at all was made for it.
    assert!(names(&fx.root()).is_empty());
}

#[test]
fn a_full_disk_mid_file_removes_the_partial() {
    let fx = Fixture::new(Policy::Refuse);
    let mut incoming = fx.create("f", 10).unwrap();
    incoming.write(b"12345").unwrap();
    assert_eq!(fx.partials(), 1);
    // Writes to /dev/full fail with ENOSPC, as a full disk's do.
    let Ok(full) = fs::OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    let full = nix::fcntl::Flock::lock(full, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    incoming.file = full;
    let err = incoming.write(b"67890").unwrap_err();
    assert!(matches!(err, StoreError::NoSpace(_)), "{err:?}");
    assert_eq!(fx.partials(), 0);
    assert_eq!(names(&fx.root()), [PARTIAL_DIR]);
}

#[test]
fn discard_removes_the_partial_and_drop_keeps_it() {
    let fx = Fixture::new(Policy::Refuse);
    let mut incoming = fx.create("a", 4).unwrap();
    incoming.write(b"ab").unwrap();
    incoming.discard();
    assert_eq!(fx.partials(), 0);
    let mut incoming = fx.create("a", 4).unwrap();
    incoming.write(b"ab").unwrap();
    drop(incoming);
    assert_eq!(fs::read(fx.partial_file()).unwrap(), b"ab");
    assert!(!fx.root().join("a").exists());
    // A fresh transfer of the name starts over and does not trip on the lock.
    fx.put("a", b"wxyz").unwrap();
    assert_eq!(fs::read(fx.root().join("a")).unwrap(), b"wxyz");
    assert_eq!(fx.partials(), 0);
}

#[test]
fn list_is_sorted_hides_reserved_names_and_shows_symlinks_unfollowed() {
    let fx = Fixture::new(Policy::Refuse);
    fx.put("b.txt", b"four").unwrap();
    drop(fx.create("pending", 9).unwrap()); // leaves .sockit-partial behind
    fs::create_dir(fx.root().join("a")).unwrap();
    symlink(fx.outside(), fx.root().join("c")).unwrap();
    fs::write(fx.root().join(".sockit-other"), "").unwrap();
    let listed = fx.store.list(None).unwrap();
    let summary: Vec<(&str, Kind, u64)> = listed
        .iter()
        .map(|e| (e.path.as_str(), e.kind, e.size))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", Kind::Dir, 0),
            ("b.txt", Kind::File, 4),
            ("c", Kind::Symlink, 0)
        ]
    );
    assert_eq!(listed[1].mode, 0o644);
    assert_eq!(listed[1].mtime, META.mtime);

    fx.put("a/x", b"").unwrap();
    let inner = fx.store.list(Some(&rel("a"))).unwrap();
    assert_eq!(inner.len(), 1);
    assert_eq!(inner[0].path, "x");
    assert!(matches!(
        fx.store.list(Some(&rel("b.txt"))),
        Err(StoreError::WrongKind(_, "directory"))
    ));
    assert!(matches!(
        fx.store.list(Some(&rel("nope"))),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn walk_yields_parents_before_children_and_skips_symlinks_and_fifos() {
    let fx = Fixture::new(Policy::Refuse);
    for path in ["docs/b.txt", "docs/a/z.txt", "docs/a/deep/y", "top"] {
        fx.put(path, path.as_bytes()).unwrap();
    }
    fx.store.mkdir(&rel("docs/empty"), 0o755).unwrap();
    symlink(fx.outside(), fx.root().join("docs/link")).unwrap();
    symlink(fx.root().join("top"), fx.root().join("docs/filelink")).unwrap();
    nix::unistd::mkfifo(
        &fx.root().join("docs/fifo"),
        Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    fs::write(fx.root().join("docs/bad\nname"), "").unwrap();

    let paths = |entries: Vec<Entry>| -> Vec<(String, Kind)> {
        entries.into_iter().map(|e| (e.path, e.kind)).collect()
    };
    let expected_docs = [
        ("docs", Kind::Dir),
        ("docs/a", Kind::Dir),
        ("docs/a/deep", Kind::Dir),
        ("docs/a/deep/y", Kind::File),
        ("docs/a/z.txt", Kind::File),
        ("docs/b.txt", Kind::File),
        ("docs/empty", Kind::Dir),
    ]
    .map(|(p, k)| (p.to_string(), k));
    assert_eq!(
        paths(fx.store.walk(Some(&rel("docs"))).unwrap()),
        expected_docs
    );

    let relative = paths(fx.store.walk(Some(&rel("docs/a"))).unwrap());
    assert_eq!(relative[0], ("a".to_string(), Kind::Dir));
    assert_eq!(relative.len(), 4);

    let whole = paths(fx.store.walk(None).unwrap());
    let mut expected_root = expected_docs.to_vec();
    expected_root.push(("top".to_string(), Kind::File));
    assert_eq!(whole, expected_root);

    let file = fx.store.walk(Some(&rel("docs/a/z.txt"))).unwrap();
    assert_eq!(file.len(), 1);
    assert_eq!((file[0].path.as_str(), file[0].size), ("z.txt", 12));
    assert!(matches!(
        fx.store.walk(Some(&rel("docs/fifo"))),
        Err(StoreError::WrongKind(..))
    ));
    assert!(matches!(
        fx.store.walk(Some(&rel("docs/filelink"))),
        Err(StoreError::Symlink(_))
    ));
    assert!(matches!(
        fx.store.walk(Some(&rel("gone"))),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn mkdir_is_idempotent_and_refuses_a_file_in_the_way() {
    let fx = Fixture::new(Policy::Refuse);
    fx.store.mkdir(&rel("a/b/c"), 0o700).unwrap();
    fx.store.mkdir(&rel("a/b/c"), 0o700).unwrap();
    fx.store.mkdir(&rel("a"), 0o700).unwrap();
    let mode = |p: &str| fs::metadata(fx.root().join(p)).unwrap().mode() & 0o777;
    assert_eq!(mode("a/b/c"), 0o700);
    assert_eq!(mode("a/b") & 0o700, 0o700);
    fx.put("a/file", b"x").unwrap();
    for path in ["a/file", "a/file/sub"] {
        let err = fx.store.mkdir(&rel(path), 0o755).unwrap_err();
        assert!(
            matches!(&err, StoreError::WrongKind(name, "directory") if name == "a/file"),
            "{err:?}"
        );
    }
    let err = fx.put("a/file/x", b"x").unwrap_err();
    assert!(matches!(err, StoreError::WrongKind(..)), "{err:?}");
}

#[test]
fn open_file_serves_regular_files_only() {
    let fx = Fixture::new(Policy::Refuse);
    fx.put("d/a.txt", b"abc").unwrap();
    let (mut file, entry) = fx.store.open_file(&rel("d/a.txt")).unwrap();
    let mut read = String::new();
    std::io::Read::read_to_string(&mut file, &mut read).unwrap();
    assert_eq!(read, "abc");
    assert_eq!(
        entry,
        Entry {
            path: "d/a.txt".into(),
            kind: Kind::File,
            size: 3,
            mode: 0o644,
            mtime: META.mtime,
        }
    );
    nix::unistd::mkfifo(&fx.root().join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    // A fifo must be refused, not waited on for a writer.
    for (path, code) in [
        ("d", "wrong_kind"),
        ("fifo", "wrong_kind"),
        ("nope", "not_found"),
    ] {
        assert_eq!(
            fx.store.open_file(&rel(path)).unwrap_err().code(),
            code,
            "{path}"
        );
    }
}

#[test]
fn incoming_and_store_cross_threads() {
    fn send<T: Send>() {}
    fn shared<T: Send + Sync>() {}
    send::<Incoming>();
    send::<Partial>();
    shared::<Store>();
}

/// A file standing for a partial, and an exclusive lock on it as a running transfer holds.
fn held_partial() -> (TempDir, PathBuf, Flock<File>) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("p.part");
    fs::write(&path, b"x").unwrap();
    let held = Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
    (dir, path, held)
}

#[test]
fn a_partial_lock_held_throughout_is_busy_only_after_the_wait() {
    let (_dir, path, _held) = held_partial();
    let wait = Duration::from_millis(200);
    let started = Instant::now();
    let got = receive::lock_waiting(
        File::open(&path).unwrap(),
        FlockArg::LockExclusiveNonblock,
        wait,
    );
    assert_eq!(got.err(), Some(Errno::EWOULDBLOCK));
    assert!(
        started.elapsed() >= wait,
        "gave up after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_partial_lock_released_while_waiting_is_taken() {
    let (_dir, path, held) = held_partial();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let path = path.clone();
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            tx.send(()).unwrap();
            receive::lock_waiting(file, FlockArg::LockSharedNonblock, Duration::from_secs(30))
                .map(drop)
        })
    };
    rx.recv().unwrap();
    drop(held);
    assert_eq!(waiter.join().unwrap(), Ok(()));
}

#[test]
fn names_a_home_directory_or_a_windows_share_should_not_get_are_refused_by_default() {
    let fx = Fixture::new(Policy::Refuse);
    let classes: [(&str, &[&str]); 5] = [
        (
            "hidden",
            &[
                ".bashrc",
                ".ssh/authorized_keys",
                ".git/hooks/pre-commit",
                ".config/autostart/x.desktop",
            ],
        ),
        ("`-`", &["-rf", " lead", "trail ", "trail.", "d/-x"]),
        (
            "Windows reserves",
            &["CON", "nul", "COM1", "prn.txt", "lpt9.log", "d/aux"],
        ),
        (
            "Windows forbids",
            &["a<b", "a>b", "ab:c", "a\"b", "a|b", "a?b", "a*b"],
        ),
        (
            "invisible",
            &[
                "a\u{200b}b",
                "evil\u{202e}txt.exe",
                "soft\u{ad}hyphen",
                "\u{feff}bom",
            ],
        ),
    ];
    for (reason, names) in classes {
        for name in names {
            let err = fx.create(name, 1).expect_err(name);
            assert!(err.to_string().contains(reason), "{name}: {err}");
            assert_eq!(err.code(), "invalid_path");
            let dir = RelPath::parse(name).unwrap();
            assert!(fx.store.mkdir(&dir, 0o755).is_err(), "mkdir {name}");
        }
    }
    let left: Vec<_> = fs::read_dir(fx.root()).unwrap().collect();
    assert!(left.is_empty(), "nothing was created: {left:?}");
    // Ordinary names, including emoji joined by U+200D and `COM10`, `CONSOLE`, `a.b.c`.
    for name in [
        "report.pdf",
        "a b.txt",
        "\u{1f468}\u{200d}\u{1f469}.jpg",
        "COM10",
        "CONSOLE",
        "a.b.c",
        "d/e-f",
    ] {
        fx.create(name, 0).expect(name).discard();
    }
}

#[test]
fn the_flags_allow_hidden_and_unportable_names() {
    let fx = Fixture::with(StoreOptions {
        allow_hidden_names: true,
        ..StoreOptions::default()
    });
    fx.create(".bashrc", 0).unwrap().discard();
    assert!(
        fx.create("CON", 0).is_err(),
        "only hidden names are allowed"
    );
    let fx = Fixture::with(StoreOptions {
        allow_unportable_names: true,
        ..StoreOptions::default()
    });
    for name in ["CON", "-rf", "ab:c", "trail.", "a\u{200b}b"] {
        fx.create(name, 0).expect(name).discard();
    }
    assert!(
        fx.create(".bashrc", 0).is_err(),
        "only unportable names are allowed"
    );
}

#[test]
fn the_same_bytes_under_a_taken_name_are_unchanged_and_other_bytes_conflict() {
    for policy in [Policy::Refuse, Policy::Rename] {
        let fx = Fixture::new(policy);
        assert!(!fx.put("a.txt", b"same").unwrap().unchanged);
        let again = fx.put("a.txt", b"same").unwrap();
        assert_eq!(
            again,
            Stored {
                name: "a.txt".into(),
                size: 4,
                unchanged: true
            },
            "{policy:?}"
        );
        assert_eq!(
            fx.partials(),
            0,
            "{policy:?}: the copy received was dropped"
        );
        let other = fx.put("a.txt", b"diff");
        match policy {
            Policy::Refuse => assert_eq!(other.unwrap_err().code(), "exists"),
            _ => assert_eq!(other.unwrap().name, "a (1).txt"),
        }
        assert_eq!(fs::read(fx.root().join("a.txt")).unwrap(), b"same");
    }
}

#[test]
fn a_taken_name_of_another_size_is_refused_before_any_data() {
    let fx = Fixture::new(Policy::Refuse);
    fx.put("a.txt", b"four").unwrap();
    assert_eq!(fx.create("a.txt", 5).unwrap_err().code(), "exists");
    let size_matches = fx.create("a.txt", 4);
    assert!(size_matches.is_ok(), "decided at the commit, by digest");
}

#[test]
fn a_store_offers_the_digest_of_a_file_of_the_asked_size_only() {
    let fx = Fixture::new(Policy::Refuse);
    fx.put("d/a.txt", b"four").unwrap();
    let offered = fx.store.digest_if_size(&rel("d/a.txt"), 4, HashAlg::Blake3);
    assert_eq!(offered.unwrap(), Some(digest(b"four")));
    let other_size = fx.store.digest_if_size(&rel("d/a.txt"), 5, HashAlg::Blake3);
    assert_eq!(other_size.unwrap(), None);
    assert_eq!(
        fx.store
            .digest_if_size(&rel("nope"), 4, HashAlg::Blake3)
            .unwrap(),
        None
    );
    assert_eq!(
        fx.store
            .digest_if_size(&rel("d"), 0, HashAlg::Blake3)
            .unwrap(),
        None
    );
}

#[test]
fn an_unusable_partial_directory_says_what_it_is_and_what_to_do() {
    let fx = Fixture::new(Policy::Refuse);
    fs::write(fx.root().join(PARTIAL_DIR), b"in the way").unwrap();
    let message = fx.put("a.txt", b"data").unwrap_err().to_string();
    assert!(message.contains("not a directory"), "{message}");
    assert!(message.contains("holds unfinished transfers"), "{message}");
    assert!(message.contains("remove or fix"), "{message}");
}

fn batch_file(path: &str, bytes: &[u8]) -> BatchFile {
    BatchFile {
        path: rel(path),
        meta: META,
        alg: HashAlg::Blake3,
        data: bytes.to_vec(),
        hash: digest(bytes),
    }
}

#[test]
fn a_batch_stores_each_file_as_a_commit_would_and_answers_in_order() {
    let fx = Fixture::new(Policy::Refuse);
    fx.put("same.txt", b"same").unwrap();
    fx.put("taken.txt", b"mine").unwrap();
    let mut corrupt = batch_file("corrupt.txt", b"data");
    corrupt.hash = digest(b"other");
    let results = fx.store.store_batch(vec![
        batch_file("d/a.txt", b"alpha"),
        batch_file("same.txt", b"same"),
        batch_file("taken.txt", b"diff"),
        corrupt,
        batch_file("d/e/b.txt", b"beta"),
    ]);
    let shown: Vec<_> = results
        .iter()
        .map(|r| match r {
            Ok(stored) => format!("{} {}", stored.name, stored.unchanged),
            Err(e) => e.code().to_string(),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "d/a.txt false",
            "same.txt true",
            "exists",
            "hash_mismatch",
            "d/e/b.txt false"
        ]
    );
    assert_eq!(fs::read(fx.root().join("d/a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read(fx.root().join("d/e/b.txt")).unwrap(), b"beta");
    assert_eq!(fs::read(fx.root().join("taken.txt")).unwrap(), b"mine");
    assert!(!fx.root().join("corrupt.txt").exists());
    let mode = fs::metadata(fx.root().join("d/a.txt")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(fx.partials(), 0, "nothing is left behind");
}

#[test]
fn a_large_batch_made_on_several_threads_fails_only_its_bad_files_and_answers_in_order() {
    let fx = Fixture::new(Policy::Refuse);
    fx.put("d1/taken.txt", b"mine").unwrap();
    let count = 4 * STORE_THREADS * 10;
    let body = |i: usize| format!("file {i}").into_bytes();
    let mut files: Vec<BatchFile> = (0..count)
        .map(|i| batch_file(&format!("d{}/f{i}.txt", i % 3), &body(i)))
        .collect();
    files[37].hash = digest(b"other bytes");
    files[120] = batch_file("d1/taken.txt", b"theirs");
    files[200] = batch_file("d1/f10.txt", b"again");
    files[count - 1].hash = digest(b"other bytes");
    let results = fx.store.store_batch(files);
    assert_eq!(results.len(), count);
    for (i, result) in results.iter().enumerate() {
        let expected = match i {
            37 => Some("hash_mismatch"),
            120 => Some("exists"),
            200 => Some("busy"),
            i if i == count - 1 => Some("hash_mismatch"),
            _ => None,
        };
        match (result, expected) {
            (Ok(stored), None) => {
                let name = format!("d{}/f{i}.txt", i % 3);
                assert_eq!(stored.name, name, "answer {i} is its own file's");
                assert_eq!(fs::read(fx.root().join(&name)).unwrap(), body(i), "{name}");
            }
            (Err(e), Some(code)) => assert_eq!(e.code(), code, "file {i}: {e}"),
            (result, expected) => panic!("file {i}: {result:?}, expected {expected:?}"),
        }
    }
    assert!(!fx.root().join("d1/f37.txt").exists());
    assert_eq!(fs::read(fx.root().join("d1/taken.txt")).unwrap(), b"mine");
    assert_eq!(fs::read(fx.root().join("d1/f10.txt")).unwrap(), body(10));
    assert_eq!(fx.partials(), 0, "nothing is left behind");
}

#[test]
fn a_batch_file_takes_over_the_partial_left_by_an_interrupted_transfer_of_its_name() {
    let fx = Fixture::new(Policy::Refuse);
    let mut cut = fx.create("a.txt", 100).unwrap();
    cut.write(&[b'x'; 60]).unwrap();
    drop(cut);
    assert_eq!(fx.partials(), 1);
    let results = fx.store.store_batch(vec![
        batch_file("a.txt", b"whole"),
        batch_file("b.txt", b"other"),
    ]);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(fs::read(fx.root().join("a.txt")).unwrap(), b"whole");
    assert_eq!(
        fx.partials(),
        0,
        "the old partial was reused, then renamed into place"
    );
}

#[test]
fn a_batch_file_whose_partial_another_transfer_holds_is_busy_and_the_others_are_stored() {
    let fx = Fixture::new(Policy::Refuse);
    let held = fx.create("a.txt", 100).unwrap();
    let results = fx.store.store_batch(vec![
        batch_file("b.txt", b"bee"),
        batch_file("a.txt", b"whole"),
        batch_file("c.txt", b"sea"),
    ]);
    let codes: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code(), |_| "stored"))
        .collect();
    assert_eq!(codes, ["stored", "busy", "stored"]);
    assert!(!fx.root().join("a.txt").exists());
    drop(held);
}
