//! Resume: an interrupted `put` or `get` continues from the verified prefix; a prefix that
//! does not match is sent again in full.

mod common;

use std::fs;

use common::{age_by, pattern, put_all, raw_files, start_files, write_file, TEST_TIMEOUT};
use indicatif::ProgressDrawTarget;
use sockit::net::Addr;
use sockit::service::files::{
    self, get, put, ClientMessage, FileHeader, FilesConfig, GetOptions, HashAlg, Progress,
    PutOptions, Remote, CHUNK_BYTES,
};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

/// Sends a `put` header and only `sent` bytes of the body, then disconnects and waits for the
/// server to close its side (it has then settled the partial data).
async fn interrupted_put(addr: &Addr, path: &str, data: &[u8], sent: usize) {
    let mut conn = raw_files(addr).await;
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
async fn progress_of_a_put_with_a_resumed_file_reaches_the_total() {
    let (src, root) = (tempdir(), tempdir());
    let size = 9 * 1024 * 1024;
    let data = pattern(size, 4);
    let (big, small) = (src.path().join("big.bin"), src.path().join("small.txt"));
    write_file(&big, &data, 0o644, 5);
    write_file(&small, b"small\n", 0o644, 5);
    let server = start_files(FilesConfig::new(root.path()), None).await;
    interrupted_put(&server.addr, "big.bin", &data, size / 2).await;

    let options = PutOptions {
        progress: Progress::new(ProgressDrawTarget::hidden()),
        ..PutOptions::default()
    };
    let remote = Remote::new(server.addr.clone());
    let report = put(&remote, &[big, small], None, &options).await.unwrap();
    assert_eq!(report.failures(), 0, "{:?}", report.files);
    let total = size as u64 + 6;
    assert!(report.bytes_sent < total - CHUNK_BYTES as u64, "it resumed");
    let progress = &options.progress;
    assert_eq!((progress.position(), progress.length()), (total, total));
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
async fn an_interrupted_get_resumes_from_the_local_partial() {
    use sockit::service::files::{FileMeta, RelPath, Store, StoreOptions};
    let (root, out) = (tempdir(), tempdir());
    let size = 4 * 1024 * 1024;
    let data = pattern(size, 9);
    fs::write(root.path().join("g.bin"), &data).unwrap();
    {
        // What an interrupted get leaves: half the file in the local store's partial.
        let store = Store::open(out.path(), StoreOptions::default()).unwrap();
        let rel = RelPath::parse("g.bin").unwrap();
        let meta = FileMeta::default();
        let mut incoming = store
            .create(&rel, size as u64, meta, HashAlg::Blake3, None)
            .unwrap();
        incoming.write(&data[..size / 2]).unwrap();
    }
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let remote = Remote::new(server.addr.clone());
    let wanted = ["g.bin".to_owned()];
    let options = GetOptions {
        progress: Progress::new(ProgressDrawTarget::hidden()),
        ..GetOptions::default()
    };
    let report = get(&remote, &wanted, out.path(), &options).await.unwrap();
    assert_eq!(report.failures(), 0, "{:?}", report.files);
    assert_eq!(report.bytes_received, (size - size / 2) as u64);
    let progress = &options.progress;
    assert_eq!(
        (progress.position(), progress.length()),
        (size as u64, size as u64)
    );
    assert_eq!(fs::read(out.path().join("g.bin")).unwrap(), data);
    server.stop().await.unwrap();
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The partial files kept under `root`, by name.
fn partials(root: &std::path::Path) -> std::collections::BTreeSet<std::path::PathBuf> {
    fs::read_dir(root.join(".sockit-partial"))
        .map(|dir| dir.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_starting_server_expires_stale_partials_and_keeps_fresh_ones() {
    let root = tempdir();
    // Larger than the batched small files, which leave no partial when cut off.
    let data = pattern(512 * 1024, 6);
    let server = start_files(FilesConfig::new(root.path()), None).await;
    interrupted_put(&server.addr, "old.bin", &data, 1000).await;
    let stale = partials(root.path()).pop_first().expect("a partial");
    age_by(&stale, files::DEFAULT_PARTIAL_MAX_AGE * 2);
    interrupted_put(&server.addr, "new.bin", &data, 1000).await;
    server.stop().await.unwrap();
    let fresh = partials(root.path()).into_iter().find(|p| *p != stale);
    let fresh = fresh.expect("the fresh partial");

    let keeping = FilesConfig {
        partial_max_age: None,
        ..FilesConfig::new(root.path())
    };
    start_files(keeping, None).await.stop().await.unwrap();
    assert!(stale.exists(), "partial_max_age: None keeps everything");

    let server = start_files(FilesConfig::new(root.path()), None).await;
    assert_eq!(
        partials(root.path()),
        [fresh].into(),
        "only the stale one went"
    );
    server.stop().await.unwrap();
}
