//! The file service end to end through the library client: round trips, many files over one
//! connection, policies, access modes, TLS and tokens, races and symlinks, on in-process
//! servers (resume is in `files_resume.rs`, bad input in `files_hostile.rs`).

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use common::{pattern, put_all, snapshot, start_files, start_files_with, write_file};
use sockit::service::files::{
    self as files, get, list, put, Access, FilesConfig, FilesError, GetOptions, HashAlg, Hasher,
    Kind, Policy, PutOptions, Remote, CHANNEL_CHUNKS, CHUNK_BYTES,
};
use sockit::session::GateConfig;

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
    // Nothing but what was fetched: no empty partial-data directory is left behind.
    let mut left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["top.txt", "tree"]);
    server.stop().await.unwrap();
}

fn digest(alg: HashAlg, bytes: &[u8]) -> String {
    let mut hasher = Hasher::new(alg);
    hasher.update(bytes);
    hasher.hex()
}

#[tokio::test]
async fn a_file_of_many_reused_chunks_round_trips_byte_for_byte_with_either_digest() {
    // More chunks than a transfer has buffers, so each is reused, and a short last chunk.
    let size = 2 * CHANNEL_CHUNKS * CHUNK_BYTES + 12_345;
    let data = pattern(size, 11);
    let (src, root, out) = (tempdir(), tempdir(), tempdir());
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let remote = Remote::new(server.addr.clone());
    for (alg, name) in [(HashAlg::Blake3, "big-b3"), (HashAlg::Sha256, "big-sha")] {
        let local = src.path().join(name);
        fs::write(&local, &data).unwrap();
        let options = PutOptions {
            hash: alg,
            ..PutOptions::default()
        };
        let report = put(&remote, &[local], None, &options).await.unwrap();
        assert_eq!(report.failures(), 0, "{:?}", report.files);
        assert_eq!(report.bytes_sent, size as u64);
        let stored = fs::read(root.path().join(name)).unwrap();
        assert!(stored == data, "{name}: the stored bytes differ");
        assert_eq!(digest(alg, &stored), digest(alg, &data));

        let options = GetOptions {
            hash: alg,
            ..GetOptions::default()
        };
        let report = get(&remote, &[name.to_owned()], out.path(), &options)
            .await
            .unwrap();
        assert_eq!(report.failures(), 0, "{:?}", report.files);
        let got = fs::read(out.path().join(name)).unwrap();
        assert!(got == data, "{name}: the fetched bytes differ");
        assert_eq!(digest(alg, &got), digest(alg, &data));
    }
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

#[tokio::test]
async fn small_files_over_several_batches_and_between_large_ones_all_land_in_order() {
    // More small files than three server batches, read ahead by the client, with a large
    // (streamed) file and directories between them: every answer matches its request.
    let (src, root) = (tempdir(), tempdir());
    let tree = src.path().join("tree");
    for i in 0..600 {
        write_file(
            &tree.join(format!("a/f{i:03}")),
            &pattern(i, i as u8),
            0o644,
            1,
        );
    }
    write_file(&tree.join("b/large.bin"), &pattern(300_000, 9), 0o600, 2);
    for i in 0..700 {
        write_file(
            &tree.join(format!("c/g{i:03}")),
            &pattern(64, i as u8),
            0o640,
            3,
        );
    }
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let report = put_all(&server.addr, std::slice::from_ref(&tree), None).await;
    assert_eq!(
        report.failures(),
        0,
        "{:?}",
        report.files.iter().find(|f| f.result.is_err())
    );
    assert_eq!(report.files.len(), 600 + 700 + 1 + 4);
    for file in &report.files {
        assert_eq!(file.result.as_deref(), Ok(file.remote.as_str()), "{file:?}");
    }
    assert_eq!(snapshot(&root.path().join("tree")), snapshot(&tree));
    assert_same_file(
        &tree.join("b/large.bin"),
        &root.path().join("tree/b/large.bin"),
    );
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

/// The files of a report that landed, and how many of them were unchanged.
fn landed(report: &files::PutReport) -> (usize, usize) {
    let ok = report
        .files
        .iter()
        .filter(|f| f.kind == Kind::File && f.result.is_ok());
    (ok.clone().count(), ok.filter(|f| f.unchanged).count())
}

#[tokio::test]
async fn putting_identical_files_again_is_unchanged_and_only_other_bytes_conflict() {
    let (src, root) = (tempdir(), tempdir());
    let tree = src.path().join("t");
    // A pushed small file and a large one that is probed first.
    let big = 9 * 1024 * 1024;
    write_file(&tree.join("small.txt"), b"same", 0o644, 1);
    write_file(&tree.join("big.bin"), &pattern(big, 3), 0o644, 1);
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let paths = std::slice::from_ref(&tree);
    let first = put_all(&server.addr, paths, None).await;
    assert_eq!((first.failures(), landed(&first)), (0, (2, 0)));
    let stored = snapshot(root.path());

    let again = put_all(&server.addr, paths, None).await;
    assert_eq!(again.failures(), 0, "{:?}", again.files);
    assert_eq!(landed(&again), (2, 2), "{:?}", again.files);
    assert_eq!(
        again.bytes_sent, 4,
        "the large file's digest matched: not sent"
    );

    // Same sizes, other bytes: each is a conflict, and the large one costs no body.
    write_file(&tree.join("small.txt"), b"diff", 0o644, 1);
    write_file(&tree.join("big.bin"), &pattern(big, 4), 0o644, 1);
    let other = put_all(&server.addr, paths, None).await;
    assert_eq!(other.failures(), 2, "{:?}", other.files);
    for file in other.files.iter().filter(|f| f.kind == Kind::File) {
        let rejection = file.result.as_ref().unwrap_err();
        assert_eq!(rejection.code, "exists", "{rejection:?}");
        assert!(rejection.message.contains("other content"), "{rejection:?}");
    }
    assert_eq!(other.bytes_sent, 4);
    assert_eq!(snapshot(root.path()), stored, "nothing was replaced");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_rename_policy_keeps_no_second_copy_of_identical_bytes() {
    let (src, root) = (tempdir(), tempdir());
    let file = src.path().join("n.txt");
    write_file(&file, b"one", 0o644, 1);
    let mut config = FilesConfig::new(root.path());
    config.store.policy = Policy::Rename;
    let server = start_files(config, None).await;
    let paths = std::slice::from_ref(&file);
    assert_eq!(landed(&put_all(&server.addr, paths, None).await), (1, 0));
    let again = put_all(&server.addr, paths, None).await;
    assert_eq!(landed(&again), (1, 1));
    assert_eq!(again.files[0].result.as_deref(), Ok("n.txt"));
    write_file(&file, b"two", 0o644, 1);
    let renamed = put_all(&server.addr, paths, None).await;
    assert_eq!(renamed.files[0].result.as_deref(), Ok("n (1).txt"));
    let names: Vec<_> = snapshot(root.path()).into_keys().collect();
    assert_eq!(names, [PathBuf::from("n (1).txt"), PathBuf::from("n.txt")]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn getting_identical_files_again_is_unchanged_and_other_local_bytes_conflict() {
    let (root, out) = (tempdir(), tempdir());
    write_file(&root.path().join("d/a.txt"), b"alpha", 0o644, 1);
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let remote = Remote::new(server.addr.clone());
    let wanted = ["d".to_owned()];
    let options = GetOptions::default();
    let first = get(&remote, &wanted, out.path(), &options).await.unwrap();
    assert_eq!(first.failures(), 0, "{:?}", first.files);
    let again = get(&remote, &wanted, out.path(), &options).await.unwrap();
    assert_eq!(again.failures(), 0, "{:?}", again.files);
    assert!(again
        .files
        .iter()
        .any(|f| f.kind == Kind::File && f.unchanged));
    fs::write(out.path().join("d/a.txt"), b"local").unwrap();
    let other = get(&remote, &wanted, out.path(), &options).await.unwrap();
    assert_eq!(other.failures(), 1, "{:?}", other.files);
    assert_eq!(fs::read(out.path().join("d/a.txt")).unwrap(), b"local");
    server.stop().await.unwrap();
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
        Err(FilesError::Rejected(r)) => {
            assert_eq!(r.code, "write_only");
            assert!(
                r.message.contains("the top directory cannot be listed"),
                "{r}"
            );
        }
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

#[tokio::test]
async fn tls_with_a_token_carries_files_and_refuses_a_client_without_the_token() {
    use sockit::net::tls::{ServerIdentity, ServerTrust, TlsAcceptor, TlsConnector};
    use sockit::session::Token;
    let (src, root) = (tempdir(), tempdir());
    let file = src.path().join("t.txt");
    write_file(&file, b"over tls", 0o644, 1);
    let acceptor =
        TlsAcceptor::new(ServerIdentity::self_signed(&"127.0.0.1:0".parse().unwrap()).unwrap())
            .unwrap();
    let pin = acceptor.fingerprint();
    let config = FilesConfig::new(root.path());
    let token = Token::generate().unwrap();
    let gate = GateConfig {
        tls: Some(acceptor),
        ..files::gate(Some(token.clone()))
    };
    let server = start_files_with(config, gate).await;
    let connector = TlsConnector::new(&ServerTrust::Pin(pin)).unwrap();
    let remote = Remote {
        addr: server.addr.clone(),
        token: Some(token),
        tls: Some(connector.clone()),
    };
    let report = put(
        &remote,
        std::slice::from_ref(&file),
        None,
        &PutOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.failures(), 0);
    assert_eq!(fs::read(root.path().join("t.txt")).unwrap(), b"over tls");
    let anonymous = Remote {
        token: None,
        ..remote
    };
    match put(&anonymous, &[file], None, &PutOptions::default()).await {
        Err(FilesError::Client(e)) => assert_eq!(e.code(), "token_required"),
        other => panic!("{other:?}"),
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_local_name_that_is_not_utf8_fails_alone() {
    use std::os::unix::ffi::OsStrExt;
    let (src, root) = (tempdir(), tempdir());
    let dir = src.path().join("mixed");
    write_file(&dir.join("ok.txt"), b"fine", 0o644, 1);
    let bad = dir.join(std::ffi::OsStr::from_bytes(b"bad\xff.txt"));
    fs::write(&bad, b"x").unwrap();
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let report = put_all(&server.addr, &[dir], None).await;
    assert_eq!(report.failures(), 1, "{:?}", report.files);
    let failed = report
        .files
        .iter()
        .find_map(|f| f.result.as_ref().err())
        .unwrap();
    assert_eq!(failed.code, "invalid_path");
    assert!(failed.message.contains("UTF-8"), "{failed:?}");
    assert_eq!(fs::read(root.path().join("mixed/ok.txt")).unwrap(), b"fine");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_an_idle_session_at_once_instead_of_draining_it() {
    let root = tempdir();
    // A drain deadline far beyond the test's: only a session closed at once lets `stop` return.
    let engine = sockit::engine::Config {
        service: "files".into(),
        drain_timeout: std::time::Duration::from_secs(600),
        ..sockit::engine::Config::default()
    };
    let service = files::FilesService::new(FilesConfig::new(root.path())).unwrap();
    let server = common::start(files::FilesServer::new(files::gate(None), service), engine).await;
    let remote = Remote::new(server.addr.clone());
    let mut idle = sockit::session::open(&server.addr, &remote.client_options())
        .await
        .unwrap();
    server.stop().await.unwrap();
    match idle.read_frame::<files::ServerMessage>().await.unwrap() {
        Some(files::ServerMessage::Error { code, .. }) => assert_eq!(code, "shutting_down"),
        other => panic!("expected a shutting_down error, got {other:?}"),
    }
}
