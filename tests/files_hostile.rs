//! Bad input to the file server from hand-written clients that bypass the library's checks:
//! each gets a clear answer, leaves the directory as it was (plus only verified files), and
//! the server goes on serving.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{raw_files, snapshot, start_files, TestServer, TEST_TIMEOUT};
use sockit::net::Stream;
use sockit::service::files::{
    put, ClientMessage, FileHeader, FilesConfig, HashAlg, Hasher, PutOptions, Remote, ServerMessage,
};
use sockit::wire::Connection;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

type Snapshot = BTreeMap<PathBuf, Option<Vec<u8>>>;

struct Fixture {
    root: tempfile::TempDir,
    server: TestServer,
    before: Snapshot,
}

async fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("keep.txt"), b"0123456789").unwrap();
    std::fs::create_dir(root.path().join("d")).unwrap();
    let server = start_files(FilesConfig::new(root.path()), None).await;
    let before = snapshot(root.path());
    Fixture {
        root,
        server,
        before,
    }
}

impl Fixture {
    /// Nothing but verified files was added, and a fresh client is still served.
    async fn assert_unchanged_and_serving(&mut self) {
        assert_eq!(snapshot(self.root.path()), self.before);
        let src = tempfile::tempdir().unwrap();
        let file = src.path().join("next.txt");
        std::fs::write(&file, b"next").unwrap();
        let remote = Remote::new(self.server.addr.clone());
        let report = timeout(
            TEST_TIMEOUT,
            put(&remote, &[file], None, &PutOptions::default()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(report.failures(), 0, "{:?}", report.files);
        std::fs::remove_file(self.root.path().join("next.txt")).unwrap();
    }
}

async fn next(conn: &mut Connection<Stream>) -> Option<ServerMessage> {
    timeout(TEST_TIMEOUT, conn.read_frame())
        .await
        .expect("an answer in time")
        .expect("a valid frame")
}

/// Writes a frame whose header is exactly `json`, followed by `body`.
async fn write_raw(conn: &mut Connection<Stream>, json: &str, body: &[u8]) {
    let stream = conn.get_mut();
    stream
        .write_all(&(json.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(json.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
}

fn header(path: &str, size: u64, offset: u64) -> FileHeader {
    FileHeader {
        path: path.into(),
        size,
        offset,
        mode: 0o644,
        mtime: 0,
        mtime_nsec: 0,
        hash: HashAlg::Blake3,
    }
}

fn blake3(bytes: &[u8]) -> String {
    let mut h = Hasher::new(HashAlg::Blake3);
    h.update(bytes);
    h.hex()
}

/// A whole `put`: header, body, `end` with `hash`.
async fn send_put(conn: &mut Connection<Stream>, head: FileHeader, body: &[u8], hash: &str) {
    conn.write_frame(&ClientMessage::Put(head), body)
        .await
        .unwrap();
    let end = ClientMessage::End { hash: hash.into() };
    conn.write_frame(&end, &[]).await.unwrap();
}

fn code_of(frame: Option<ServerMessage>) -> String {
    match frame {
        Some(ServerMessage::Rejected { code, message, .. }) => {
            assert!(
                !message.chars().any(char::is_control),
                "escaped: {message:?}"
            );
            code
        }
        Some(ServerMessage::Error { code, .. }) => format!("error:{code}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn every_hostile_name_is_rejected_as_an_invalid_path() {
    let mut f = fixture().await;
    let long = "x".repeat(256);
    let names = [
        "../escape",
        "a/../../escape",
        "d/../../escape",
        "/etc/passwd",
        "C:\\evil",
        "C:evil",
        "\\\\server\\share\\x",
        "",
        ".",
        "..",
        "a//b",
        "a/",
        "./a",
        "a\0b",
        "bell\x07",
        "esc\x1b[31m",
        "new\nline",
        "tab\there",
        long.as_str(),
        ".sockit-partial/x",
    ];
    let mut conn = raw_files(&f.server.addr).await;
    for name in names {
        send_put(&mut conn, header(name, 3, 0), b"abc", &blake3(b"abc")).await;
        assert_eq!(code_of(next(&mut conn).await), "invalid_path", "{name:?}");
        let mkdir = ClientMessage::Mkdir {
            path: name.into(),
            mode: 0o755,
        };
        conn.write_frame(&mkdir, &[]).await.unwrap();
        assert_eq!(
            code_of(next(&mut conn).await),
            "invalid_path",
            "mkdir {name:?}"
        );
    }
    f.assert_unchanged_and_serving().await;
}

#[tokio::test]
async fn sizes_that_are_not_a_u64_end_the_session_with_invalid_header() {
    let mut f = fixture().await;
    for size in ["-1", "1e30", "\"10\"", "18446744073709551616"] {
        let mut conn = raw_files(&f.server.addr).await;
        let json = format!(r#"{{"type":"put","path":"s.bin","size":{size},"mode":420,"mtime":0}}"#);
        write_raw(&mut conn, &json, b"").await;
        assert_eq!(
            code_of(next(&mut conn).await),
            "error:invalid_header",
            "{size}"
        );
        assert_eq!(next(&mut conn).await, None);
        f.assert_unchanged_and_serving().await;
    }
}

#[tokio::test]
async fn the_largest_u64_size_is_refused_before_its_body_and_the_connection_closed() {
    let mut f = fixture().await;
    let mut conn = raw_files(&f.server.addr).await;
    let head = header("huge.bin", u64::MAX, 0);
    conn.write_header(&ClientMessage::Put(head)).await.unwrap();
    assert_eq!(code_of(next(&mut conn).await), "too_large");
    assert_eq!(code_of(next(&mut conn).await), "error:discard_limit");
    f.assert_unchanged_and_serving().await;
}

#[tokio::test]
async fn the_largest_u64_size_after_a_stored_file_is_still_refused_cleanly() {
    // The session's byte tally already holds the first file: adding the refused size must
    // not overflow (a panic would end the session without an answer).
    let mut f = fixture().await;
    let mut conn = raw_files(&f.server.addr).await;
    send_put(
        &mut conn,
        header("first.txt", 3, 0),
        b"abc",
        &blake3(b"abc"),
    )
    .await;
    assert!(matches!(
        next(&mut conn).await,
        Some(ServerMessage::Stored { .. })
    ));
    let head = header("huge.bin", u64::MAX, 0);
    conn.write_header(&ClientMessage::Put(head)).await.unwrap();
    assert_eq!(code_of(next(&mut conn).await), "too_large");
    assert_eq!(code_of(next(&mut conn).await), "error:discard_limit");
    std::fs::remove_file(f.root.path().join("first.txt")).unwrap();
    f.assert_unchanged_and_serving().await;
}

#[tokio::test]
async fn a_duplicate_key_ends_the_session_with_invalid_header() {
    let mut f = fixture().await;
    let mut conn = raw_files(&f.server.addr).await;
    let json = r#"{"type":"put","path":"a.txt","path":"b.txt","size":3,"mode":420,"mtime":0}"#;
    write_raw(&mut conn, json, b"abc").await;
    assert_eq!(code_of(next(&mut conn).await), "error:invalid_header");
    f.assert_unchanged_and_serving().await;
}

#[tokio::test]
async fn a_body_shorter_than_declared_then_a_disconnect_leaves_nothing_visible() {
    let mut f = fixture().await;
    let mut conn = raw_files(&f.server.addr).await;
    conn.write_header(&ClientMessage::Put(header("short.bin", 1000, 0)))
        .await
        .unwrap();
    conn.write_body(&[1; 10]).await.unwrap();
    conn.get_mut().shutdown().await.unwrap();
    assert_eq!(next(&mut conn).await, None);
    f.assert_unchanged_and_serving().await;
}

#[tokio::test]
async fn a_body_longer_than_declared_is_a_broken_frame() {
    let mut f = fixture().await;
    let mut conn = raw_files(&f.server.addr).await;
    let json = r#"{"type":"put","path":"long.bin","size":3,"mode":420,"mtime":0}"#;
    write_raw(&mut conn, json, b"abcdefgh").await;
    let end = ClientMessage::End {
        hash: blake3(b"abc"),
    };
    conn.write_frame(&end, &[]).await.unwrap();
    assert!(code_of(next(&mut conn).await).starts_with("error:"));
    f.assert_unchanged_and_serving().await;
}

#[tokio::test]
async fn a_wrong_hash_is_rejected_and_the_connection_goes_on() {
    let mut f = fixture().await;
    let mut conn = raw_files(&f.server.addr).await;
    send_put(&mut conn, header("w.txt", 3, 0), b"abc", &"0".repeat(64)).await;
    assert_eq!(code_of(next(&mut conn).await), "hash_mismatch");
    send_put(&mut conn, header("end.txt", 0, 0), b"", "").await;
    assert_eq!(code_of(next(&mut conn).await), "sender_failed");
    send_put(&mut conn, header("w.txt", 3, 0), b"abc", &blake3(b"abc")).await;
    assert!(matches!(
        next(&mut conn).await,
        Some(ServerMessage::Stored { .. })
    ));
    std::fs::remove_file(f.root.path().join("w.txt")).unwrap();
    f.assert_unchanged_and_serving().await;
}

#[tokio::test]
async fn a_resume_offset_without_a_matching_probe_is_a_bad_offset() {
    let mut f = fixture().await;
    let mut conn = raw_files(&f.server.addr).await;
    send_put(&mut conn, header("o.txt", 5, 2), b"cde", &blake3(b"abcde")).await;
    assert_eq!(code_of(next(&mut conn).await), "bad_offset");
    let probe = ClientMessage::Probe {
        path: "o.txt".into(),
        size: 5,
        hash: HashAlg::Blake3,
    };
    conn.write_frame(&probe, &[]).await.unwrap();
    match next(&mut conn).await {
        Some(ServerMessage::Partial {
            offset: 0,
            prefix: None,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    send_put(&mut conn, header("o.txt", 5, 2), b"cde", &blake3(b"abcde")).await;
    assert_eq!(code_of(next(&mut conn).await), "bad_offset");
    let end = ClientMessage::End {
        hash: String::new(),
    };
    conn.write_frame(&end, &[]).await.unwrap();
    assert_eq!(code_of(next(&mut conn).await), "error:unexpected_message");
    f.assert_unchanged_and_serving().await;
}

#[tokio::test]
async fn a_fetch_whose_prefix_does_not_match_gets_the_whole_file() {
    let mut f = fixture().await;
    let mut conn = raw_files(&f.server.addr).await;
    let mut good = Hasher::new(HashAlg::Blake3);
    good.update(b"0123");
    for (prefix, start, body) in [
        (blake3(b"xxxx"), 0, &b"0123456789"[..]),
        (good.hex(), 4, &b"456789"[..]),
    ] {
        let fetch = ClientMessage::Fetch {
            path: "keep.txt".into(),
            offset: 4,
            prefix: Some(prefix),
            hash: HashAlg::Blake3,
        };
        conn.write_frame(&fetch, &[]).await.unwrap();
        match next(&mut conn).await {
            Some(ServerMessage::File(h)) => assert_eq!((h.offset, h.size), (start, 10)),
            other => panic!("{other:?}"),
        }
        let mut got = Vec::new();
        while let Some(chunk) = conn.read_body_chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, body);
        match next(&mut conn).await {
            Some(ServerMessage::End { hash }) => assert_eq!(hash, blake3(b"0123456789")),
            other => panic!("{other:?}"),
        }
    }
    f.assert_unchanged_and_serving().await;
}

#[tokio::test]
async fn nc_typing_at_the_file_port_is_told_which_commands_speak_it() {
    let mut f = fixture().await;
    let port = common::port(&f.server.addr);
    let mut nc = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    nc.write_all(b"ls\n").await.unwrap();
    let mut said = String::new();
    timeout(
        TEST_TIMEOUT,
        tokio::io::AsyncReadExt::read_to_string(&mut nc, &mut said),
    )
    .await
    .expect("answered in time")
    .unwrap();
    assert!(
        said.starts_with("error: this port speaks sockit's framed protocol (service files)")
            && said.contains("`sockit put`, `sockit get` or `sockit ls`"),
        "{said:?}"
    );
    f.assert_unchanged_and_serving().await;
}

/// The path of a `stored` answer.
fn stored_path(frame: Option<ServerMessage>) -> String {
    match frame {
        Some(ServerMessage::Stored { path, .. }) => path,
        other => panic!("expected stored, got {other:?}"),
    }
}

#[tokio::test]
async fn small_puts_back_to_back_are_answered_in_order_and_kept_when_the_connection_breaks() {
    let f = fixture().await;
    let mut conn = raw_files(&f.server.addr).await;
    // Sent without waiting: held in one batch, answered in request order.
    send_put(&mut conn, header("b1.txt", 3, 0), b"one", &blake3(b"one")).await;
    send_put(&mut conn, header("../b.txt", 3, 0), b"bad", &blake3(b"bad")).await;
    send_put(&mut conn, header("b2.txt", 3, 0), b"two", &blake3(b"two")).await;
    assert_eq!(stored_path(next(&mut conn).await), "b1.txt");
    assert_eq!(code_of(next(&mut conn).await), "invalid_path");
    assert_eq!(stored_path(next(&mut conn).await), "b2.txt");

    // A whole file, then one cut off mid-body: the whole one is still stored, unanswered.
    send_put(
        &mut conn,
        header("b3.txt", 5, 0),
        b"three",
        &blake3(b"three"),
    )
    .await;
    conn.write_header(&ClientMessage::Put(header("b4.txt", 100, 0)))
        .await
        .unwrap();
    conn.write_body(&[4; 10]).await.unwrap();
    drop(conn);
    let b3 = f.root.path().join("b3.txt");
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    while !b3.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "b3.txt was not stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(std::fs::read(&b3).unwrap(), b"three");
    assert!(!f.root.path().join("b4.txt").exists());
    assert_eq!(std::fs::read(f.root.path().join("b1.txt")).unwrap(), b"one");
}
