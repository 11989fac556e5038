//! The file service end to end through the library client: round trips, many files over one
//! connection, resume, policies, access modes, races and symlinks, on in-process servers.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{snapshot, start_files, TEST_TIMEOUT};
use sockit::net::{Addr, Stream};
use sockit::service::files::{
    self, get, list, put, Access, ClientMessage, FileHeader, FilesConfig, FilesError, GetOptions,
    HashAlg, Kind, Policy, PutOptions, PutReport, Remote, CHUNK_BYTES,
};
use sockit::session;
use sockit::wire::Connection;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

async fn put_all(addr: &Addr, paths: &[PathBuf], to: Option<&str>) -> PutReport {
    let remote = Remote::new(addr.clone());
    timeout(
        TEST_TIMEOUT,
        put(&remote, paths, to, &PutOptions::default()),
    )
    .await
    .expect("put in time")
    .expect("put runs")
}

fn write_file(path: &Path, bytes: &[u8], mode: u32, mtime_secs: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    let when = SystemTime::UNIX_EPOCH + Duration::new(mtime_secs, 123_456_789);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn assert_same_file(a: &Path, b: &Path) {
    assert_eq!(fs::read(a).unwrap(), fs::read(b).unwrap(), "{a:?} vs {b:?}");
    let (ma, mb) = (fs::metadata(a).unwrap(), fs::metadata(b).unwrap());
    assert_eq!(
        ma.mode() & 0o777,
        mb.mode() & 0o7777,
        "{b:?} keeps only the permission bits"
    );
    assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()));
}

#[tokio::test]
async fn put_ls_and_get_round_trip_a_nested_tree_with_modes_and_mtimes() {
    let (src, root, out) = (tempdir(), tempdir(), tempdir());
    let tree = src.path().join("tree");
    write_file(&tree.join("a.txt"), b"alpha\n", 0o640, 1_600_000_000);
    write_file(
        &tree.join("sub/b.bin"),
        &pattern(300_000, 7),
        0o4755,
        1_650_000_000,
    );
    fs::create_dir_all(tree.join("empty")).unwrap();
    write_file(&src.path().join("top.txt"), b"", 0o600, 1_700_000_000);
    let server = start_files(FilesConfig::new(root.path()), None).await;

    let report = put_all(
        &server.addr,
        &[tree.clone(), src.path().join("top.txt")],
        None,
    )
    .await;
    assert_eq!(report.failures(), 0, "{:?}", report.files);
    assert_eq!(report.bytes_sent, 6 + 300_000);
    assert_same_file(&tree.join("a.txt"), &root.path().join("tree/a.txt"));
    assert_same_file(&tree.join("sub/b.bin"), &root.path().join("tree/sub/b.bin"));
    assert_same_file(&src.path().join("top.txt"), &root.path().join("top.txt"));
    assert!(root.path().join("tree/empty").is_dir());

    let remote = Remote::new(server.addr.clone());
    let top = list(&remote, "").await.unwrap();
    let names: Vec<_> = top.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    assert_eq!(names, [("top.txt", Kind::File), ("tree", Kind::Dir)]);
    let inner = list(&remote, "tree").await.unwrap();
    let names: Vec<_> = inner.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, ["a.txt", "empty", "sub"]);

    let wanted = ["tree".to_owned(), "top.txt".to_owned()];
    let report = get(&remote, &wanted, out.path(), &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(report.failures(), 0, "{:?}", report.files);
    assert_same_file(
        &root.path().join("tree/a.txt"),
        &out.path().join("tree/a.txt"),
    );
    assert_same_file(
        &root.path().join("tree/sub/b.bin"),
        &out.path().join("tree/sub/b.bin"),
    );
    assert_same_file(&root.path().join("top.txt"), &out.path().join("top.txt"));
    assert!(out.path().join("tree/empty").is_dir());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn five_hundred_small_files_go_over_one_connection() {
    let (src, root) = (tempdir(), tempdir());
    let many = src.path().join("many");
    for i in 0..500 {
        write_file(
            &many.join(format!("f{i:03}.txt")),
            &pattern(100 + i, i as u8),
            0o644,
            1,
        );
    }
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let report = put_all(&server.addr, std::slice::from_ref(&many), Some("in")).await;
    assert_eq!(report.failures(), 0);
    assert_eq!(report.files.len(), 501);
    let got = snapshot(&root.path().join("in"));
    assert_eq!(got, snapshot(src.path()));
    server.stop().await.unwrap();
}

/// A handshaken connection for hand-written frames.
async fn raw(addr: &Addr) -> Connection<Stream> {
    let mut conn = Connection::new(Stream::connect(addr).await.unwrap());
    timeout(
        TEST_TIMEOUT,
        session::connect(&mut conn, &files::session_config(), None),
    )
    .await
    .unwrap()
    .expect("handshake");
    conn
}

/// Sends a `put` header and only `sent` bytes of the body, then disconnects and waits for the
/// server to close its side (it has then settled the partial data).
async fn interrupted_put(addr: &Addr, path: &str, data: &[u8], sent: usize) {
    let mut conn = raw(addr).await;
    let header = FileHeader {
        path: path.into(),
        size: data.len() as u64,
        offset: 0,
        mode: 0o644,
        mtime: 0,
        mtime_nsec: 0,
        hash: HashAlg::Blake3,
    };
    conn.write_header(&ClientMessage::Put(header))
        .await
        .unwrap();
    conn.write_body(&data[..sent]).await.unwrap();
    conn.get_mut().shutdown().await.unwrap();
    let end = timeout(TEST_TIMEOUT, conn.read_frame::<files::ServerMessage>()).await;
    assert!(matches!(end, Ok(Ok(None))), "{end:?}");
}

#[tokio::test]
async fn an_interrupted_put_resumes_and_sends_only_the_rest() {
    let (src, root) = (tempdir(), tempdir());
    let size = 12 * 1024 * 1024;
    let data = pattern(size, 3);
    let file = src.path().join("big.bin");
    write_file(&file, &data, 0o644, 5);
    let server = start_files(FilesConfig::new(root.path()), None).await;
    interrupted_put(&server.addr, "big.bin", &data, size / 2).await;
    assert!(!root.path().join("big.bin").exists());

    let report = put_all(&server.addr, &[file], None).await;
    assert_eq!(report.failures(), 0, "{:?}", report.files);
    let rest = (size - size / 2) as u64;
    assert!(
        report.bytes_sent >= rest && report.bytes_sent <= rest + CHUNK_BYTES as u64,
        "sent {} of {size}",
        report.bytes_sent
    );
    assert_eq!(fs::read(root.path().join("big.bin")).unwrap(), data);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_partial_that_does_not_match_is_sent_again_in_full() {
    let (src, root) = (tempdir(), tempdir());
    let size = 10 * 1024 * 1024;
    let old = pattern(size, 1);
    let server = start_files(FilesConfig::new(root.path()), None).await;
    interrupted_put(&server.addr, "big.bin", &old, size / 2).await;
    let new = pattern(size, 2);
    let file = src.path().join("big.bin");
    write_file(&file, &new, 0o644, 5);

    let report = put_all(&server.addr, &[file], None).await;
    assert_eq!(report.failures(), 0, "{:?}", report.files);
    assert_eq!(report.bytes_sent, size as u64);
    assert_eq!(fs::read(root.path().join("big.bin")).unwrap(), new);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn two_clients_putting_one_name_leave_one_whole_file() {
    let (a, b, root) = (tempdir(), tempdir(), tempdir());
    let size = 3 * 1024 * 1024;
    let (data_a, data_b) = (pattern(size, 10), pattern(size, 20));
    write_file(&a.path().join("same.bin"), &data_a, 0o644, 1);
    write_file(&b.path().join("same.bin"), &data_b, 0o644, 1);
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let (pa, pb) = ([a.path().join("same.bin")], [b.path().join("same.bin")]);
    let (ra, rb) = tokio::join!(
        put_all(&server.addr, &pa, None),
        put_all(&server.addr, &pb, None),
    );
    let results = [&ra.files[0].result, &rb.files[0].result];
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(
        ["exists", "busy"].contains(&loser.code.as_str()),
        "{loser:?}"
    );
    assert!(loser.message.contains("same.bin"), "{loser:?}");
    let stored = fs::read(root.path().join("same.bin")).unwrap();
    assert!(stored == data_a || stored == data_b);
    assert_eq!(snapshot(root.path()).len(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn policies_refuse_by_default_and_overwrite_or_rename_on_request() {
    let (src, root) = (tempdir(), tempdir());
    let file = src.path().join("n.txt");
    write_file(&file, b"first", 0o644, 1);
    for (policy, code, expect) in [
        (Policy::Refuse, Some("exists"), vec![("n.txt", "first")]),
        (Policy::Overwrite, None, vec![("n.txt", "second")]),
        (
            Policy::Rename,
            None,
            vec![("n (1).txt", "second"), ("n.txt", "first")],
        ),
    ] {
        fs::remove_dir_all(root.path()).unwrap();
        let mut config = FilesConfig::new(root.path());
        config.store.policy = policy;
        let server = start_files(config, None).await;
        write_file(&file, b"first", 0o644, 1);
        assert_eq!(
            put_all(&server.addr, std::slice::from_ref(&file), None)
                .await
                .failures(),
            0
        );
        write_file(&file, b"second", 0o644, 1);
        let report = put_all(&server.addr, std::slice::from_ref(&file), None).await;
        let got = report.files[0]
            .result
            .as_ref()
            .err()
            .map(|r| r.code.as_str());
        assert_eq!(got, code, "{policy:?}");
        let want: Vec<_> = expect
            .into_iter()
            .map(|(n, c)| (PathBuf::from(n), Some(c.as_bytes().to_vec())))
            .collect();
        assert_eq!(snapshot(root.path()).into_iter().collect::<Vec<_>>(), want);
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_symlink_inside_the_root_never_leads_outside() {
    let (src, root, outside) = (tempdir(), tempdir(), tempdir());
    symlink(outside.path(), root.path().join("link")).unwrap();
    fs::write(outside.path().join("secret"), b"s").unwrap();
    let file = src.path().join("x.txt");
    write_file(&file, b"payload", 0o644, 1);
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let before = snapshot(root.path());

    let report = put_all(&server.addr, std::slice::from_ref(&file), Some("link")).await;
    let rejection = report.files[0].result.as_ref().unwrap_err();
    assert_eq!(rejection.code, "symlink", "{rejection:?}");
    assert_eq!(snapshot(outside.path()).len(), 1);
    assert_eq!(snapshot(root.path()), before);

    let out = tempdir();
    let remote = Remote::new(server.addr.clone());
    let wanted = ["link/secret".to_owned()];
    let report = get(&remote, &wanted, out.path(), &GetOptions::default()).await;
    assert!(!matches!(report, Ok(r) if r.failures() == 0));
    assert!(snapshot(out.path()).is_empty());
    // Still serving.
    assert_eq!(put_all(&server.addr, &[file], None).await.failures(), 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn read_only_and_write_only_servers_refuse_the_other_direction() {
    let (src, root, out) = (tempdir(), tempdir(), tempdir());
    let file = src.path().join("f.txt");
    write_file(&file, b"data", 0o644, 1);
    fs::write(root.path().join("served.txt"), b"served").unwrap();

    let mut config = FilesConfig::new(root.path());
    config.access = Access::ReadOnly;
    let server = start_files(config, None).await;
    let report = put_all(&server.addr, std::slice::from_ref(&file), None).await;
    assert_eq!(
        report.files[0].result.as_ref().unwrap_err().code,
        "read_only"
    );
    let remote = Remote::new(server.addr.clone());
    let wanted = ["served.txt".to_owned()];
    let got = get(&remote, &wanted, out.path(), &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(got.failures(), 0);
    server.stop().await.unwrap();

    let mut config = FilesConfig::new(root.path());
    config.access = Access::WriteOnly;
    let server = start_files(config, None).await;
    let remote = Remote::new(server.addr.clone());
    match list(&remote, "").await {
        Err(FilesError::Rejected(r)) => assert_eq!(r.code, "write_only"),
        other => panic!("{other:?}"),
    }
    let got = get(&remote, &wanted, out.path(), &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(got.files[0].result.as_ref().unwrap_err().code, "write_only");
    assert_eq!(put_all(&server.addr, &[file], None).await.failures(), 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn sha256_round_trips_and_a_server_can_refuse_it() {
    let (src, root) = (tempdir(), tempdir());
    let file = src.path().join("s.txt");
    write_file(&file, b"sha", 0o644, 1);
    let mut config = FilesConfig::new(root.path());
    config.hashes = vec![HashAlg::Blake3];
    let server = start_files(config, None).await;
    let remote = Remote::new(server.addr.clone());
    let options = PutOptions {
        hash: HashAlg::Sha256,
        ..PutOptions::default()
    };
    let report = put(&remote, std::slice::from_ref(&file), None, &options)
        .await
        .unwrap();
    assert_eq!(
        report.files[0].result.as_ref().unwrap_err().code,
        "hash_not_allowed"
    );
    server.stop().await.unwrap();

    let server = start_files(FilesConfig::new(root.path()), None).await;
    let remote = Remote::new(server.addr.clone());
    let report = put(&remote, &[file], None, &options).await.unwrap();
    assert_eq!(report.failures(), 0);
    assert_eq!(fs::read(root.path().join("s.txt")).unwrap(), b"sha");
    server.stop().await.unwrap();
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
