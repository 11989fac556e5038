//! `sockit http serve` end to end: an in-process server on port 0, driven by raw sockets (so
//! the bytes on the wire are exactly the test's) and by curl where it is installed.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{have, start, TestServer, TEST_TIMEOUT};
use sha2::Digest as _;
use sockit::engine::Config;
use sockit::service::http::{HttpConfig, HttpServer, MAX_LISTING_ENTRIES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as read off the wire.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// Everything read, for counting responses.
    raw: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` as is and reads until the server closes (requests say
/// `Connection: close`).
async fn exchange(server: &TestServer, request: &[u8]) -> Reply {
    exchange_at(&server.addr.to_string(), request).await
}

/// [`exchange`] with a server at `addr`.
async fn exchange_at(addr: &str, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.split();
    let mut bytes = Vec::new();
    // Read while writing: a server refusing a huge request answers before it is all sent.
    let write = async {
        let _ = wr.write_all(request).await;
    };
    let read = async {
        let _ = rd.read_to_end(&mut bytes).await;
    };
    tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(write, read) })
        .await
        .expect("the server did not answer and close");
    drop(stream);
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head,
        body: bytes[split..].to_vec(),
        raw,
    }
}

/// `GET path` with extra header lines.
async fn get(server: &TestServer, path: &str, headers: &str) -> Reply {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n");
    exchange(server, request.as_bytes()).await
}

/// The test tree: a.txt, a hidden file, a directory with an index, one without, odd names.
fn tree(root: &Path) {
    fs::write(root.join("a.txt"), "hello world\n").unwrap();
    fs::write(root.join("page.html"), "<p>hi</p>").unwrap();
    fs::write(root.join(".secret"), "hidden").unwrap();
    fs::create_dir(root.join("site")).unwrap();
    fs::write(root.join("site/index.html"), "<h1>site</h1>").unwrap();
    fs::create_dir(root.join("plain")).unwrap();
    fs::write(root.join("plain/<script>.txt"), "x").unwrap();
    fs::write(root.join("plain/a b#c?d%e é.txt"), "y").unwrap();
}

async fn serve(config: HttpConfig) -> TestServer {
    start(HttpServer::new(config).unwrap(), Config::default()).await
}

async fn serve_tree() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let server = serve(HttpConfig::new(dir.path())).await;
    (dir, server)
}

/// After bad input the server still answers a plain GET.
async fn still_serving(server: &TestServer) {
    let reply = get(server, "/a.txt", "").await;
    assert_eq!(reply.status, 200, "{}", reply.raw);
    assert_eq!(reply.text(), "hello world\n");
}

#[tokio::test]
async fn get_and_head_serve_a_file_with_its_type_and_length() {
    let (_dir, server) = serve_tree().await;
    let reply = get(&server, "/a.txt", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello world\n");
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(reply.header("content-length").as_deref(), Some("12"));
    let html = get(&server, "/page.html", "").await;
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let head = exchange(
        &server,
        b"HEAD /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").as_deref(), Some("12"));
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn the_lessons_hello_world_client_gets_a_page_from_one_recv() {
    let (_dir, server) = serve_tree().await;
    let mut stream = TcpStream::connect(server.addr.to_string()).await.unwrap();
    stream
        .write_all(b"GET /a.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The head and the body may arrive in two segments: read as a loop of recv(1024)
    // would, up to 1024 bytes in all.
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < buf.len() && !buf[..n].ends_with(b"hello world\n") {
        let got = tokio::time::timeout(TEST_TIMEOUT, stream.read(&mut buf[n..]))
            .await
            .unwrap()
            .unwrap();
        assert!(got > 0, "closed early");
        n += got;
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("hello world\n"), "{text}");
}

#[tokio::test]
async fn methods_other_than_get_and_head_are_405_and_put_needs_upload() {
    let (_dir, server) = serve_tree().await;
    for method in ["DELETE", "POST", "PUT", "OPTIONS", "BREW"] {
        let request = format!(
            "{method} /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let reply = exchange(&server, request.as_bytes()).await;
        assert_eq!(reply.status, 405, "{method}: {}", reply.raw);
        assert_eq!(reply.header("allow").as_deref(), Some("GET, HEAD"));
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn a_directory_serves_its_index_or_redirects_to_its_slash() {
    let (_dir, server) = serve_tree().await;
    let index = get(&server, "/site/", "").await;
    assert_eq!(index.status, 200);
    assert_eq!(index.text(), "<h1>site</h1>");
    let bare = get(&server, "/plain?x=1", "").await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location").as_deref(), Some("/plain/?x=1"));
}

#[tokio::test]
async fn a_listing_escapes_names_and_links_them_percent_encoded() {
    let (_dir, server) = serve_tree().await;
    let page = get(&server, "/plain/", "").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = page.text();
    assert!(html.contains("&lt;script&gt;.txt"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("href=\"./a%20b%23c%3Fd%25e%20%C3%A9.txt\""),
        "{html}"
    );
    // The link works.
    let linked = get(&server, "/plain/a%20b%23c%3Fd%25e%20%C3%A9.txt", "").await;
    assert_eq!(linked.status, 200);
    assert_eq!(linked.text(), "y");
}

#[tokio::test]
async fn a_listing_is_json_when_asked_and_never_shows_hidden_files() {
    let (_dir, server) = serve_tree().await;
    let reply = get(&server, "/", "Accept: application/json\r\n").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    let listing: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let names: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plain", "site", "a.txt", "page.html"]);
    assert_eq!(listing["entries"][2]["size"], 12);
    assert_eq!(listing["truncated"], false);
}

#[tokio::test]
async fn hidden_files_are_404_unless_show_hidden() {
    let (dir, server) = serve_tree().await;
    assert_eq!(get(&server, "/.secret", "").await.status, 404);
    assert!(!get(&server, "/", "").await.text().contains(".secret"));
    let mut config = HttpConfig::new(dir.path());
    config.show_hidden = true;
    let shown = serve(config).await;
    assert_eq!(get(&shown, "/.secret", "").await.text(), "hidden");
    assert!(get(&shown, "/", "").await.text().contains(".secret"));
}

#[tokio::test]
async fn no_listing_makes_a_directory_without_index_404() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut config = HttpConfig::new(dir.path());
    config.listing = false;
    let server = serve(config).await;
    assert_eq!(get(&server, "/plain/", "").await.status, 404);
    assert_eq!(get(&server, "/site/", "").await.status, 200);
}

#[tokio::test]
async fn traversal_attempts_are_refused_and_the_server_keeps_serving() {
    let (_dir, server) = serve_tree().await;
    for path in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2e%2e/",
        "/%2e%2e%2f",
        "/a%00b",
        "/..%5c",
        "/..%5c..%5cetc%5cpasswd",
        "/site/..%2f..%2fetc/passwd",
    ] {
        let reply = get(&server, path, "").await;
        assert!(
            reply.status == 400 || reply.status == 404,
            "{path}: {}",
            reply.raw
        );
        assert!(!reply.text().contains("root:"), "{path}");
        still_serving(&server).await;
    }
}

#[tokio::test]
async fn a_symlink_inside_the_root_never_leads_outside() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("private"), "private").unwrap();
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    symlink(outside.path().join("private"), dir.path().join("to-file")).unwrap();
    symlink(outside.path(), dir.path().join("to-dir")).unwrap();
    symlink("a.txt", dir.path().join("inside-link")).unwrap();
    let server = serve(HttpConfig::new(dir.path())).await;
    assert_eq!(get(&server, "/to-file", "").await.status, 404);
    assert_eq!(get(&server, "/to-dir/", "").await.status, 404);
    assert_eq!(get(&server, "/to-dir/private", "").await.status, 404);
    let listing = get(&server, "/", "").await.text();
    assert!(!listing.contains("to-file") && !listing.contains("to-dir"));
    // A link that stays inside is served.
    assert_eq!(
        get(&server, "/inside-link", "").await.text(),
        "hello world\n"
    );
}

#[tokio::test]
async fn ranges_give_206_and_past_the_end_416() {
    let (_dir, server) = serve_tree().await;
    let part = get(&server, "/a.txt", "Range: bytes=0-4\r\n").await;
    assert_eq!(part.status, 206);
    assert_eq!(part.text(), "hello");
    assert_eq!(
        part.header("content-range").as_deref(),
        Some("bytes 0-4/12")
    );
    let suffix = get(&server, "/a.txt", "Range: bytes=-6\r\n").await;
    assert_eq!(suffix.text(), "world\n");
    let past = get(&server, "/a.txt", "Range: bytes=100-200\r\n").await;
    assert_eq!(past.status, 416);
    still_serving(&server).await;
}

#[tokio::test]
async fn if_none_match_with_the_etag_is_304() {
    let (_dir, server) = serve_tree().await;
    let first = get(&server, "/a.txt", "").await;
    let etag = first.header("etag").expect("an ETag");
    assert!(first.header("last-modified").is_some());
    let again = get(&server, "/a.txt", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
}

#[tokio::test]
async fn a_file_rewritten_in_place_with_its_mtime_put_back_gets_a_new_etag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.txt");
    fs::write(&path, "old!").unwrap();
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let server = serve(HttpConfig::new(dir.path())).await;
    let first = get(&server, "/e.txt", "").await;
    let etag = first.header("etag").expect("an ETag");
    // Same inode, same size, same modification time: only the bytes (and the change time).
    fs::write(&path, "new!").unwrap();
    set_mtime(&path, mtime);
    let again = get(&server, "/e.txt", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!((again.status, again.text().as_str()), (200, "new!"));
    assert_ne!(again.header("etag"), Some(etag.clone()));
    let range = get(
        &server,
        "/e.txt",
        &format!("Range: bytes=0-1\r\nIf-Range: {etag}\r\n"),
    )
    .await;
    assert_eq!((range.status, range.text().as_str()), (200, "new!"));
}

fn sha256_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

fn put_request(path: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

async fn upload_server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut config = HttpConfig::new(dir.path());
    config.upload = true;
    config.store.max_file_size = 1024;
    let server = serve(config).await;
    (dir, server)
}

#[tokio::test]
async fn put_stores_a_file_and_a_second_put_of_the_name_is_409() {
    let (dir, server) = upload_server().await;
    let body = b"uploaded bytes";
    let digest = format!("Content-Digest: sha-256=:{}:\r\n", sha256_b64(body));
    let reply = exchange(&server, &put_request("/in/new.txt", body, &digest)).await;
    assert_eq!(reply.status, 201, "{}", reply.raw);
    assert_eq!(fs::read(dir.path().join("in/new.txt")).unwrap(), body);
    let again = exchange(&server, &put_request("/in/new.txt", b"other", "")).await;
    assert_eq!(again.status, 409, "{}", again.raw);
    assert_eq!(fs::read(dir.path().join("in/new.txt")).unwrap(), body);
    let served = get(&server, "/in/new.txt", "").await;
    assert_eq!(served.body, body);
}

#[tokio::test]
async fn an_uploaded_page_is_served_sandboxed_and_a_server_without_uploads_adds_nothing() {
    let (_dir, server) = upload_server().await;
    let page = b"<script>fetch('/in/x', {method: 'PUT'})</script>";
    let reply = exchange(&server, &put_request("/in/evil.html", page, "")).await;
    assert_eq!(reply.status, 201, "{}", reply.raw);
    let served = get(&server, "/in/evil.html", "").await;
    assert_eq!(served.body, page);
    assert_eq!(
        served.header("content-security-policy").as_deref(),
        Some("sandbox")
    );
    assert_eq!(
        served.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    // The server's own pages (the listing with its form) are not sandboxed.
    let listing = get(&server, "/in/", "").await;
    assert_eq!(listing.status, 200);
    assert_eq!(listing.header("content-security-policy"), None);

    let (_plain_dir, plain) = serve_tree().await;
    let file = get(&plain, "/a.txt", "").await;
    assert_eq!(file.status, 200);
    assert_eq!(file.header("content-security-policy"), None);
}

#[tokio::test]
async fn a_put_with_a_wrong_digest_is_400_and_stores_nothing() {
    let (dir, server) = upload_server().await;
    let wrong = format!(
        "Repr-Digest: sha-256=:{}:\r\n",
        sha256_b64(b"something else")
    );
    let reply = exchange(&server, &put_request("/x.txt", b"the body", &wrong)).await;
    assert_eq!(reply.status, 400, "{}", reply.raw);
    assert!(!dir.path().join("x.txt").exists());
    let malformed = exchange(
        &server,
        &put_request("/y.txt", b"the body", "Content-Digest: sha-256=:nope:\r\n"),
    )
    .await;
    assert_eq!(malformed.status, 400);
    assert!(!dir.path().join("y.txt").exists());
    still_serving(&server).await;
}

#[tokio::test]
async fn a_put_over_the_size_limit_is_413_and_stores_nothing() {
    let (dir, server) = upload_server().await;
    let reply = exchange(&server, &put_request("/big.bin", &[7u8; 4096], "")).await;
    assert_eq!(reply.status, 413, "{}", reply.raw);
    assert!(!dir.path().join("big.bin").exists());
    still_serving(&server).await;
}

#[tokio::test]
async fn a_put_cut_off_mid_body_stores_nothing() {
    let (dir, server) = upload_server().await;
    let mut stream = TcpStream::connect(server.addr.to_string()).await.unwrap();
    stream
        .write_all(b"PUT /cut.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly part")
        .await
        .unwrap();
    drop(stream);
    still_serving(&server).await;
    assert!(!dir.path().join("cut.txt").exists());
}

#[tokio::test]
async fn uploads_with_a_token_need_the_bearer_header() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut config = HttpConfig::new(dir.path());
    config.upload = true;
    let token = sockit::session::Token::generate().unwrap();
    let bearer = format!("Authorization: Bearer {}\r\n", token.reveal());
    config.token = Some(token);
    let server = serve(config).await;
    let none = exchange(&server, &put_request("/t.txt", b"x", "")).await;
    assert_eq!(none.status, 401);
    let wrong = exchange(
        &server,
        &put_request("/t.txt", b"x", "Authorization: Bearer nope\r\n"),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(!dir.path().join("t.txt").exists());
    let right = exchange(&server, &put_request("/t.txt", b"x", &bearer)).await;
    assert_eq!(right.status, 201, "{}", right.raw);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_gets_one_response() {
    let (_dir, server) = serve_tree().await;
    let smuggled = b"GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /page.html HTTP/1.1\r\nHost: t\r\n\r\n";
    let reply = exchange(&server, smuggled).await;
    assert_eq!(reply.raw.matches("HTTP/1.1 ").count(), 1, "{}", reply.raw);
    let two_lengths = b"PUT /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\
        Content-Length: 2\r\nConnection: close\r\n\r\nab";
    let reply = exchange(&server, two_lengths).await;
    assert_eq!(reply.raw.matches("HTTP/1.1 ").count(), 1, "{}", reply.raw);
    assert_eq!(reply.status, 400, "{}", reply.raw);
    still_serving(&server).await;
}

#[tokio::test]
async fn a_one_mib_header_is_431_and_the_server_keeps_serving() {
    let (_dir, server) = serve_tree().await;
    let mut request = b"GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 1 << 20));
    request.extend_from_slice(b"\r\n\r\n");
    let reply = exchange(&server, &request).await;
    assert_eq!(
        reply.status,
        431,
        "{}",
        &reply.raw[..reply.raw.len().min(200)]
    );
    still_serving(&server).await;
}

#[tokio::test]
async fn ten_thousand_headers_are_431() {
    let (_dir, server) = serve_tree().await;
    let mut request = String::from("GET /a.txt HTTP/1.1\r\nHost: t\r\n");
    for i in 0..10_000 {
        request.push_str(&format!("X-{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let reply = exchange(&server, request.as_bytes()).await;
    assert_eq!(
        reply.status,
        431,
        "{}",
        &reply.raw[..reply.raw.len().min(200)]
    );
    still_serving(&server).await;
}

#[tokio::test]
async fn keep_alive_serves_pipelined_requests_in_order() {
    let (_dir, server) = serve_tree().await;
    let reply = exchange(
        &server,
        b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /page.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    let first = reply.raw.find("hello world").unwrap();
    let second = reply.raw.find("<p>hi</p>").unwrap();
    assert!(first < second);
}

#[tokio::test]
async fn a_client_that_shuts_its_sending_side_after_the_request_still_gets_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    // A listing is read on the blocking pool: the request is still in flight when the
    // client's end of stream arrives.
    for i in 0..500 {
        fs::write(dir.path().join(format!("plain/{i}.txt")), "x").unwrap();
    }
    let server = serve(HttpConfig::new(dir.path())).await;
    for path in ["/a.txt", "/plain/"] {
        let mut stream = TcpStream::connect(server.addr.to_string()).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        // `nc -N` and a request piped into a socket end like this.
        stream.shutdown().await.unwrap();
        let mut bytes = Vec::new();
        tokio::time::timeout(TEST_TIMEOUT, stream.read_to_end(&mut bytes))
            .await
            .expect("the server did not answer and close")
            .unwrap();
        let raw = String::from_utf8_lossy(&bytes);
        assert!(raw.starts_with("HTTP/1.1 200"), "{path}: {raw}");
        let end = if path == "/a.txt" {
            "hello world\n"
        } else {
            "</html>\n"
        };
        assert!(raw.ends_with(end), "{path}: {raw}");
    }
}

/// Waits (bounded) until `path` last changed at least `age` ago, as a small file must have
/// before the server keeps its contents.
async fn settled(path: &Path, age: std::time::Duration) {
    use std::os::unix::fs::MetadataExt;
    let deadline = tokio::time::Instant::now() + age + TEST_TIMEOUT;
    loop {
        let meta = fs::metadata(path).unwrap();
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32);
        if changed.elapsed().is_ok_and(|a| a >= age) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clock stands still"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn set_mtime(path: &Path, mtime: std::time::SystemTime) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}

#[tokio::test]
async fn a_kept_small_file_changed_with_the_same_size_and_mtime_is_served_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.txt");
    fs::write(&path, "old!").unwrap();
    fs::write(dir.path().join("k.txt.gz"), "GZ").unwrap();
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    settled(&path, sockit::service::http::CACHE_SETTLE).await;
    let server = serve(HttpConfig::new(dir.path())).await;
    // Read twice: kept by the first, served from memory by the second, with the same head
    // (made once, when kept).
    let read = get(&server, "/k.txt", "").await;
    let kept = get(&server, "/k.txt", "").await;
    assert_eq!((read.text(), kept.text()), ("old!".into(), "old!".into()));
    for name in ["content-type", "content-length", "etag", "last-modified"] {
        assert!(read.header(name).is_some(), "{name}: {}", read.raw);
        assert_eq!(kept.header(name), read.header(name), "{name}");
    }
    let etag = kept.header("etag").unwrap();
    let fresh = get(&server, "/k.txt", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(fresh.status, 304, "{}", fresh.raw);
    let range = get(&server, "/k.txt", "Range: bytes=1-2\r\n").await;
    assert_eq!((range.status, range.text().as_str()), (206, "ld"));
    // A kept file's precompressed sibling: the kept file's type, the sibling's validators.
    let gz = get(&server, "/k.txt", "Accept-Encoding: gzip\r\n").await;
    assert_eq!((gz.status, gz.text().as_str()), (200, "GZ"));
    assert_eq!(gz.header("content-type"), kept.header("content-type"));
    assert_eq!(gz.header("content-length").as_deref(), Some("2"));
    assert_ne!(gz.header("etag"), kept.header("etag"));
    // Rewritten in place: same size, same modification time, same inode.
    fs::write(&path, "new!").unwrap();
    set_mtime(&path, mtime);
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    assert_eq!(get(&server, "/k.txt", "").await.text(), "new!");
    // Replaced by a rename, as an upload does: same size and time again.
    settled(&path, sockit::service::http::CACHE_SETTLE).await;
    assert_eq!(get(&server, "/k.txt", "").await.text(), "new!");
    let other = dir.path().join("other");
    fs::write(&other, "NEW!").unwrap();
    set_mtime(&other, mtime);
    fs::rename(&other, &path).unwrap();
    assert_eq!(get(&server, "/k.txt", "").await.text(), "NEW!");
    // Kept again, then swapped for a symlink out of the root: 404, as it is uncached.
    settled(&path, sockit::service::http::CACHE_SETTLE).await;
    assert_eq!(get(&server, "/k.txt", "").await.text(), "NEW!");
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("s"), "NEW!").unwrap();
    fs::rename(&path, dir.path().join("moved")).unwrap();
    symlink(outside.path().join("s"), &path).unwrap();
    assert_eq!(get(&server, "/k.txt", "").await.status, 404);
    // Gone: 404, not the kept contents.
    fs::remove_file(&path).unwrap();
    assert_eq!(get(&server, "/k.txt", "").await.status, 404);
}

#[test]
fn curl_gets_a_file_and_uploads_with_a_digest() {
    if !have("curl", "curl_gets_a_file_and_uploads_with_a_digest") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (dir, server) = runtime.block_on(upload_server());
    let base = format!("http://{}", server.addr);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("{base}/a.txt")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello world\n");
    let local = dir.path().join("plain/<script>.txt");
    let digest = format!("Content-Digest: sha-256=:{}:", sha256_b64(b"x"));
    let status = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["-H", &digest, "-T"])
        .arg(&local)
        .arg(format!("{base}/curl.txt"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "201");
    assert_eq!(fs::read(dir.path().join("curl.txt")).unwrap(), b"x");
}

#[tokio::test]
async fn a_listing_of_a_directory_of_100_000_entries_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..100_000 {
        fs::write(dir.path().join(format!("f{i}")), "").unwrap();
    }
    let server = serve(HttpConfig::new(dir.path())).await;
    let reply = get(&server, "/", "Accept: application/json\r\n").await;
    let listing: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        listing["entries"].as_array().unwrap().len(),
        MAX_LISTING_ENTRIES
    );
    assert_eq!(listing["truncated"], true);
    let html = get(&server, "/", "").await.text();
    assert!(html.contains("Only the first"));
}

/// Starts a server, sends it `start` of a request and stops there; checks another client is
/// served meanwhile, then returns what the stalled client read before the server closed.
async fn stalled_client(config: HttpConfig, start: &[u8]) -> (TestServer, String) {
    let server = serve(config).await;
    let mut slow = TcpStream::connect(server.addr.to_string()).await.unwrap();
    slow.write_all(start).await.unwrap();
    still_serving(&server).await;
    let mut rest = Vec::new();
    tokio::time::timeout(TEST_TIMEOUT, slow.read_to_end(&mut rest))
        .await
        .expect("the stalled client was not closed")
        .ok();
    (server, String::from_utf8_lossy(&rest).into_owned())
}

#[tokio::test]
async fn a_slow_request_head_is_closed_at_its_deadline_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut config = HttpConfig::new(dir.path());
    config.header_read_timeout = std::time::Duration::from_millis(300);
    // The server gives up on the head: it closes, perhaps after a 408.
    let (_server, text) =
        stalled_client(config, b"GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Slow: ").await;
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_silent_or_stalled_in_its_first_bytes_is_closed_at_the_head_deadline() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut config = HttpConfig::new(dir.path());
    config.header_read_timeout = std::time::Duration::from_millis(300);
    // Before the server can tell HTTP/1 from the h2 preface: closed at the head deadline,
    // long before the engine's idle timeout (300 s).
    for start in [&b""[..], b"PRI * HT", b"GE"] {
        let (_server, text) = stalled_client(config.clone(), start).await;
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn obs_fold_is_400_and_a_bare_lf_request_gets_one_response() {
    let (_dir, server) = serve_tree().await;
    let folded = exchange(
        &server,
        b"GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(folded.status, 400, "{}", folded.raw);
    assert_eq!(folded.raw.matches("HTTP/1.1 ").count(), 1, "{}", folded.raw);
    let bare = exchange(
        &server,
        b"GET /a.txt HTTP/1.1\nHost: t\nConnection: close\n\n",
    )
    .await;
    assert_eq!(bare.raw.matches("HTTP/1.1 ").count(), 1, "{}", bare.raw);
    assert!(bare.status == 200 || bare.status == 400, "{}", bare.raw);
    still_serving(&server).await;
}

#[tokio::test]
async fn a_symlink_to_etc_and_to_a_file_outside_are_404() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    symlink("/etc", dir.path().join("etc")).unwrap();
    symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
    symlink("../../../../../../../../etc", dir.path().join("climb")).unwrap();
    let server = serve(HttpConfig::new(dir.path())).await;
    for path in [
        "/etc/passwd",
        "/etc/",
        "/passwd",
        "/climb/passwd",
        "/climb/",
    ] {
        let reply = get(&server, path, "").await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.raw);
        assert!(!reply.text().contains("root:"), "{path}");
    }
    let listing = get(&server, "/", "").await.text();
    assert!(
        !listing.contains("passwd") && !listing.contains("climb"),
        "{listing}"
    );
    still_serving(&server).await;
}

#[tokio::test]
async fn a_malformed_range_is_ignored_and_a_thousand_ranges_get_the_whole_file() {
    let (_dir, server) = serve_tree().await;
    for range in ["bytes=abc", "bytes=5-2-1", "items=0-1", "bytes="] {
        let reply = get(&server, "/a.txt", &format!("Range: {range}\r\n")).await;
        assert_eq!(reply.status, 200, "{range}: {}", reply.raw);
        assert_eq!(reply.text(), "hello world\n");
    }
    let many: Vec<String> = (0..1000).map(|i| format!("{i}-{i}")).collect();
    let header = format!("Range: bytes={}\r\n", many.join(","));
    let reply = get(&server, "/a.txt", &header).await;
    assert!(reply.status == 200 || reply.status == 416, "{}", reply.raw);
    assert!(reply.raw.matches("HTTP/1.1 ").count() == 1);
    assert!(reply.body.len() <= 12);
    still_serving(&server).await;
}

#[tokio::test]
async fn if_range_with_a_stale_etag_gets_the_whole_file() {
    let (_dir, server) = serve_tree().await;
    let etag = get(&server, "/a.txt", "").await.header("etag").unwrap();
    let fresh = get(
        &server,
        "/a.txt",
        &format!("Range: bytes=0-4\r\nIf-Range: {etag}\r\n"),
    )
    .await;
    assert_eq!(fresh.status, 206);
    assert_eq!(fresh.text(), "hello");
    let stale = get(
        &server,
        "/a.txt",
        "Range: bytes=0-4\r\nIf-Range: \"old\"\r\n",
    )
    .await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "hello world\n");
    let unmodified = get(&server, "/a.txt", "If-Match: \"other\"\r\n").await;
    assert_eq!(unmodified.status, 412);
}

/// Bytes this process has read with read(2) and friends so far (Linux `/proc/self/io`).
fn read_chars() -> Option<u64> {
    let io = fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn head_of_a_2_gib_file_and_a_range_at_its_end_read_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let big = fs::File::create(dir.path().join("big.bin")).unwrap();
    big.set_len(2 << 30).unwrap(); // sparse: no disk used
    let server = serve(HttpConfig::new(dir.path())).await;
    let before = read_chars();
    let head = exchange(
        &server,
        b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").as_deref(), Some("2147483648"));
    assert!(head.body.is_empty());
    let tail = get(&server, "/big.bin", "Range: bytes=2147483640-\r\n").await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, [0u8; 8]);
    assert_eq!(
        tail.header("content-range").as_deref(),
        Some("bytes 2147483640-2147483647/2147483648")
    );
    // Other tests run in this process too, but none reads anywhere near 2 GiB.
    if let (Some(before), Some(after)) = (before, read_chars()) {
        assert!(after - before < 256 << 20, "read {} bytes", after - before);
    }
}

#[tokio::test]
async fn a_precompressed_sibling_is_served_with_vary_but_never_for_a_range() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    fs::write(dir.path().join("app.js"), "console.log(1)").unwrap();
    fs::write(dir.path().join("app.js.gz"), "GZ BYTES").unwrap();
    fs::write(dir.path().join("app.js.br"), "BR BYTES").unwrap();
    let server = serve(HttpConfig::new(dir.path())).await;
    let br = get(&server, "/app.js", "Accept-Encoding: gzip, br\r\n").await;
    assert_eq!(br.status, 200);
    assert_eq!(br.text(), "BR BYTES");
    assert_eq!(br.header("content-encoding").as_deref(), Some("br"));
    assert!(br.header("vary").unwrap().contains("accept-encoding"));
    assert!(br.header("content-type").unwrap().contains("javascript"));
    let gz = get(&server, "/app.js", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(gz.text(), "GZ BYTES");
    assert_ne!(gz.header("etag"), br.header("etag"));
    let plain = get(&server, "/app.js", "").await;
    assert_eq!(plain.text(), "console.log(1)");
    assert!(plain.header("content-encoding").is_none());
    let range = get(
        &server,
        "/app.js",
        "Accept-Encoding: br\r\nRange: bytes=0-6\r\n",
    )
    .await;
    assert_eq!(range.status, 206);
    assert_eq!(range.text(), "console");
    assert!(range.header("content-encoding").is_none());
}

#[tokio::test]
async fn text_above_the_threshold_is_compressed_on_the_fly_with_a_weak_etag() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let text = "sockit serves text. ".repeat(500);
    fs::write(dir.path().join("long.txt"), &text).unwrap();
    fs::write(dir.path().join("long.bin"), &text).unwrap();
    let server = serve(HttpConfig::new(dir.path())).await;
    let gz = get(&server, "/long.txt", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding").as_deref(), Some("gzip"));
    assert!(gz.header("vary").unwrap().contains("accept-encoding"));
    assert!(gz.header("etag").unwrap().starts_with("W/"));
    let raw = dechunk(&gz.body);
    assert!(raw.len() < text.len() / 10, "{} bytes", raw.len());
    let mut decoded = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut decoded)
        .unwrap();
    assert_eq!(decoded, text);
    // Not for a range, a small file, or a type that is not text.
    let range = get(
        &server,
        "/long.txt",
        "Accept-Encoding: gzip\r\nRange: bytes=0-5\r\n",
    )
    .await;
    assert_eq!(range.status, 206);
    assert!(range.header("content-encoding").is_none());
    let small = get(&server, "/a.txt", "Accept-Encoding: gzip\r\n").await;
    assert!(small.header("content-encoding").is_none());
    let binary = get(&server, "/long.bin", "Accept-Encoding: gzip\r\n").await;
    assert!(binary.header("content-encoding").is_none());
}

/// A chunked body's data.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line]).unwrap(), 16).unwrap();
        body = &body[line + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

fn form(boundary: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n")
            .as_bytes(),
    );
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

fn post_form(path: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n\
         Content-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[tokio::test]
async fn a_browser_form_stores_each_file_through_the_store() {
    let (dir, server) = upload_server().await;
    let body = form(
        "XyZ",
        &[("one.txt", b"first\r\n-- line"), ("two.bin", &[0, 1, 2])],
    );
    let reply = exchange(&server, &post_form("/plain/", &body, "")).await;
    assert_eq!(reply.status, 201, "{}", reply.raw);
    assert_eq!(
        fs::read(dir.path().join("plain/one.txt")).unwrap(),
        b"first\r\n-- line"
    );
    assert_eq!(
        fs::read(dir.path().join("plain/two.bin")).unwrap(),
        [0, 1, 2]
    );
    // A browser (Accept: text/html, its own origin) is sent back to the listing.
    let page = exchange(
        &server,
        &post_form(
            "/plain/",
            &form("XyZ", &[("three.txt", b"3")]),
            "Accept: text/html\r\nOrigin: http://t\r\n",
        ),
    )
    .await;
    assert_eq!(page.status, 303, "{}", page.raw);
    assert_eq!(page.header("location").as_deref(), Some("/plain/"));
    // The same name again is refused by the store's policy, and nothing is replaced.
    let again = exchange(
        &server,
        &post_form("/plain/", &form("XyZ", &[("one.txt", b"x")]), ""),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.raw);
    assert_eq!(
        fs::read(dir.path().join("plain/one.txt")).unwrap(),
        b"first\r\n-- line"
    );
    // A name with a separator, a hidden name, and a file over the size limit.
    for (name, bytes) in [
        ("../up.txt", &b"x"[..]),
        (".hidden", b"x"),
        ("big.bin", &[1; 2048]),
    ] {
        let reply = exchange(&server, &post_form("/", &form("XyZ", &[(name, bytes)]), "")).await;
        assert!(
            reply.status == 400 || reply.status == 413,
            "{name}: {}",
            reply.raw
        );
    }
    assert!(!dir.path().join("up.txt").exists() && !dir.path().join(".hidden").exists());
    assert!(!dir.path().join("big.bin").exists());
    still_serving(&server).await;
}

#[tokio::test]
async fn a_form_post_from_another_origin_is_403_and_stores_nothing() {
    let (dir, server) = upload_server().await;
    let body = form("XyZ", &[("evil.txt", b"x")]);
    let reply = exchange(
        &server,
        &post_form("/", &body, "Origin: https://evil.example\r\n"),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.raw);
    assert!(!dir.path().join("evil.txt").exists());
}

#[tokio::test]
async fn a_slow_body_is_closed_at_its_deadline_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut config = HttpConfig::new(dir.path());
    config.upload = true;
    config.body_pace.idle = std::time::Duration::from_millis(300);
    let (server, text) = stalled_client(
        config,
        b"PUT /slow.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(!dir.path().join("slow.txt").exists());
    still_serving(&server).await;
}

/// Connects and sends `start`, then `byte` every 50 ms (up to 200 of them, 10 s), never
/// finishing; returns what the server sent before it closed, or `None` if it never did.
async fn trickle(server: &TestServer, start: &[u8], byte: u8) -> Option<String> {
    let mut stream = TcpStream::connect(server.addr.to_string()).await.unwrap();
    stream.write_all(start).await.unwrap();
    let (mut rd, mut wr) = stream.split();
    let mut got = Vec::new();
    let reading = rd.read_to_end(&mut got);
    let writing = async {
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(50));
        for _ in 0..200 {
            pace.tick().await;
            if wr.write_all(&[byte]).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = reading => Some(String::from_utf8_lossy(&got).into_owned()),
        () = tokio::time::sleep(TEST_TIMEOUT) => None,
        () = writing => None,
    }
}

#[tokio::test]
async fn a_head_or_body_trickled_a_byte_at_a_time_is_cut_off_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut config = HttpConfig::new(dir.path());
    config.upload = true;
    config.header_read_timeout = std::time::Duration::from_millis(500);
    // Each byte comes well within the idle limit; the whole body's deadline cuts it off.
    config.body_pace.grace = std::time::Duration::from_millis(500);
    config.body_pace.min_bytes_per_sec = 1 << 20;
    let server = serve(config).await;
    let head = trickle(&server, b"GET /a.txt HTTP/1.1\r\nHost: t\r\nX-Slow: ", b'a').await;
    let head = head.expect("a trickled head was never cut off");
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 408"),
        "{head}"
    );
    // The next head on a kept-alive connection has its own deadline, from the response's end.
    let second = trickle(
        &server,
        b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: t\r\nX-Slow: ",
        b'a',
    )
    .await;
    let second = second.expect("a trickled second head was never cut off");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("hello world\n"), "{second}");
    let after = &second[second.find("hello world\n").unwrap() + 12..];
    assert!(
        after.is_empty() || after.starts_with("HTTP/1.1 408"),
        "{second}"
    );
    let body = trickle(
        &server,
        b"PUT /trickle.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n",
        b'b',
    )
    .await;
    let body = body.expect("a trickled body was never cut off");
    assert!(body.starts_with("HTTP/1.1 408"), "{body}");
    assert!(body.contains("slower than"), "{body}");
    assert!(!dir.path().join("trickle.txt").exists());
    still_serving(&server).await;
}

#[tokio::test]
async fn a_download_slower_than_the_head_deadline_is_not_cut_off_by_it() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    // Far more than the socket buffers hold, so the response is still being written while
    // the client reads slowly, long after the head deadline.
    let size = 32 << 20;
    fs::write(dir.path().join("big.bin"), vec![7u8; size]).unwrap();
    let mut config = HttpConfig::new(dir.path());
    config.header_read_timeout = std::time::Duration::from_millis(300);
    let server = serve(config).await;
    let mut stream = TcpStream::connect(server.addr.to_string()).await.unwrap();
    stream
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(40));
    loop {
        pace.tick().await;
        let read = tokio::time::timeout(TEST_TIMEOUT, stream.read(&mut buf))
            .await
            .expect("the download stalled");
        match read {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("cut off after {got} bytes: {e}"),
        }
    }
    assert!(started.elapsed() > std::time::Duration::from_millis(600));
    assert!(got > size, "only {got} of {size} bytes");
}

#[tokio::test]
async fn two_concurrent_puts_of_one_name_store_one_whole_body() {
    let (dir, server) = upload_server().await;
    let a = vec![b'a'; 1000];
    let b = vec![b'b'; 1000];
    let (put_a, put_b) = (
        put_request("/race.bin", &a, ""),
        put_request("/race.bin", &b, ""),
    );
    let (ra, rb) = tokio::join!(exchange(&server, &put_a), exchange(&server, &put_b));
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{}\n{}", ra.raw, rb.raw);
    let stored = fs::read(dir.path().join("race.bin")).unwrap();
    assert!(stored == a || stored == b);
    assert_eq!(stored == a, ra.status == 201);
}

#[test]
fn http2_with_prior_knowledge_and_by_alpn_under_tls() {
    if !have("curl", "http2_with_prior_knowledge_and_by_alpn_under_tls") {
        return;
    }
    let features = Command::new("curl").arg("-V").output().unwrap();
    if !String::from_utf8_lossy(&features.stdout).contains("HTTP2") {
        println!(
            "http2_with_prior_knowledge_and_by_alpn_under_tls: skipped: this curl has no HTTP/2"
        );
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let plain = runtime.block_on(serve(HttpConfig::new(dir.path())));
    let mut config = HttpConfig::new(dir.path());
    let addr: sockit::net::Addr = "127.0.0.1:0".parse().unwrap();
    let identity = sockit::net::tls::ServerIdentity::self_signed(&addr).unwrap();
    config.tls = Some(sockit::net::tls::TlsAcceptor::new(identity).unwrap());
    let tls = runtime.block_on(serve(config));
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_version} %{http_code}",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let h2c = curl(&[
        "--http2-prior-knowledge",
        &format!("http://{}/a.txt", plain.addr),
    ]);
    assert_eq!(h2c, "hello world\n\n2 200");
    let alpn = curl(&["-k", "--http2", &format!("https://{}/a.txt", tls.addr)]);
    assert_eq!(alpn, "hello world\n\n2 200");
    let h1 = curl(&["-k", "--http1.1", &format!("https://{}/a.txt", tls.addr)]);
    assert_eq!(h1, "hello world\n\n1.1 200");
}

#[test]
fn the_binary_logs_one_line_per_request_with_the_path_escaped() {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut server = common::Proc::spawn({
        let mut cmd = common::sockit();
        cmd.args([
            "http",
            "serve",
            "--chat",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir.path());
        cmd
    });
    let addr = server.listening_addr();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let get = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        runtime.block_on(exchange_at(&addr, request.as_bytes()))
    };
    // An escape sequence in the path must not reach the terminal as one.
    let reply = get("/a%1b%5b31mred.txt");
    assert_eq!(reply.status, 404);
    let line = server.wait_for_stderr("red.txt");
    assert!(!line.contains('\u{1b}'), "{line:?}");
    assert!(line.contains("GET /a"), "{line}");
    assert!(line.contains(" 404 "), "{line}");
    let ok = get("/a.txt");
    assert_eq!(ok.status, 200);
    let line = server.wait_for_stderr("/a.txt");
    assert!(line.contains("GET /a.txt 200 12 "), "{line}");
    // A carried chat's page (`--chat`, a chat of the server's own) is logged with its size.
    let page = get("/chat/");
    assert_eq!(page.status, 200);
    let line = server.wait_for_stderr("/chat/");
    let size = format!("GET /chat/ 200 {} ", page.body.len());
    assert!(line.contains(&size), "{line}");
}

/// The log line is written when the response is done with, and says what the client got: a
/// download it left part way logs the bytes sent of those announced, a HEAD none (a whole
/// response logs its length: the test above).
#[test]
fn the_log_line_gives_the_bytes_sent_a_left_download_fewer_than_announced() {
    let dir = tempfile::tempdir().unwrap();
    // Far more than the sockets on both sides can hold (sparse: no disk is used).
    let total: u64 = 256 * 1024 * 1024;
    fs::File::create(dir.path().join("big.bin"))
        .unwrap()
        .set_len(total)
        .unwrap();
    let mut server = common::Proc::spawn({
        let mut cmd = common::sockit();
        cmd.args(["http", "serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path());
        cmd
    });
    let addr = server.listening_addr();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Takes the head and a little of the body, then leaves with the rest unread (the
        // close resets the connection).
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        while got.len() < 256 * 1024 {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed first");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    });
    let line = server.wait_for_stderr("GET /big.bin");
    let fields: Vec<&str> = line
        .split("GET /big.bin ")
        .nth(1)
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(fields[0], "200", "{line}");
    let (sent, announced) = fields[1].split_once('/').expect("sent/announced");
    let sent: u64 = sent.parse().unwrap();
    assert_eq!(announced, total.to_string(), "{line}");
    assert!(sent < total, "{line}");
    // HEAD sends no body.
    let head = runtime.block_on(exchange_at(
        &addr,
        b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(head.status, 200);
    let line = server.wait_for_stderr("HEAD /big.bin");
    assert!(line.contains("HEAD /big.bin 200 0 "), "{line}");
}

/// Reads one response to `GET /a.txt` (its body is "hello world\n") off `stream`.
async fn read_hello(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    while !got.ends_with(b"hello world\n") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(TEST_TIMEOUT, stream.read(&mut buf))
            .await
            .expect("no response")
            .unwrap();
        assert!(n > 0, "closed after {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_kept_alive_connection_is_served_after_a_pause_and_closed_at_the_keep_alive_timeout() {
    let keep_alive = Duration::from_millis(800);
    let (_dir, _server, mut stream) = kept_alive_once(
        sockit::service::http::DEFAULT_HEADER_READ_TIMEOUT,
        keep_alive,
    )
    .await;
    // Each pause longer than the connection waits before it parks, well within the deadline.
    let pause = sockit::service::http::PARK_AFTER * 4;
    for _ in 0..2 {
        tokio::time::sleep(pause).await;
        stream.write_all(HELLO_REQUEST).await.unwrap();
        assert!(read_hello(&mut stream).await.starts_with("HTTP/1.1 200"));
    }
    // A request's start, then nothing: the rest comes after the connection parked.
    tokio::time::sleep(pause).await;
    stream.write_all(&HELLO_REQUEST[..10]).await.unwrap();
    tokio::time::sleep(pause).await;
    stream.write_all(&HELLO_REQUEST[10..]).await.unwrap();
    assert!(read_hello(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Then idle: closed at the keep-alive timeout, long before the engine's idle timeout.
    closed_by_server(&mut stream).await;
}

/// Serves the test tree with the head's time `head` and the keep-alive time `keep_alive`,
/// and makes one request on a new connection: the server and the connection.
async fn kept_alive_once(
    head: Duration,
    keep_alive: Duration,
) -> (tempfile::TempDir, TestServer, TcpStream) {
    let dir = tempfile::tempdir().unwrap();
    tree(dir.path());
    let mut config = HttpConfig::new(dir.path());
    config.header_read_timeout = head;
    config.keep_alive_timeout = keep_alive;
    let server = serve(config).await;
    let mut stream = TcpStream::connect(server.addr.to_string()).await.unwrap();
    stream.write_all(HELLO_REQUEST).await.unwrap();
    assert!(read_hello(&mut stream).await.starts_with("HTTP/1.1 200"));
    (dir, server, stream)
}

const HELLO_REQUEST: &[u8] = b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n";

/// Waits (bounded) for the server to close `stream`, which it may do with a 408 and no other
/// word.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    tokio::time::timeout(TEST_TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("not closed")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || rest.starts_with("HTTP/1.1 408"),
        "{rest}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_head_time_and_closes_at_the_keep_alive_time() {
    let head = Duration::from_millis(300);
    let keep_alive = Duration::from_millis(1500);
    let (_dir, _server, mut stream) = kept_alive_once(head, keep_alive).await;
    // Idle past the head's time (the scenario, not a wait for the server): still open.
    tokio::time::sleep(head * 2).await;
    stream.write_all(HELLO_REQUEST).await.unwrap();
    assert!(read_hello(&mut stream).await.starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    closed_by_server(&mut stream).await;
    let idle = answered.elapsed();
    assert!(
        idle >= keep_alive - Duration::from_millis(100),
        "closed after {idle:?} idle, before the keep-alive time ({keep_alive:?})"
    );
}

#[tokio::test]
async fn a_head_begun_after_a_keep_alive_wait_gets_the_head_time_from_its_first_bytes() {
    let head = Duration::from_millis(300);
    let keep_alive = Duration::from_secs(8);
    let (_dir, _server, mut stream) = kept_alive_once(head, keep_alive).await;
    // Parked by now; then a head begun and left unfinished, as a slowloris does.
    tokio::time::sleep(head).await;
    stream.write_all(&HELLO_REQUEST[..10]).await.unwrap();
    let begun = Instant::now();
    closed_by_server(&mut stream).await;
    let took = begun.elapsed();
    assert!(
        took < keep_alive / 2,
        "an unfinished head was kept {took:?}, its time is {head:?}"
    );
}

#[tokio::test]
async fn a_kept_large_file_is_sent_whole_and_in_ranges_from_its_memory_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&path, &data).unwrap();
    settled(&path, sockit::service::http::CACHE_SETTLE).await;
    let server = serve(HttpConfig::new(dir.path())).await;
    // Read from disk and kept by the first, sent from the kept copy after.
    for _ in 0..3 {
        let reply = get(&server, "/big.bin", "").await;
        assert_eq!(reply.status, 200, "{}", reply.raw);
        assert!(reply.body == data, "a kept file came back changed");
    }
    let range = get(&server, "/big.bin", "Range: bytes=100000-249999\r\n").await;
    assert_eq!(range.status, 206, "{}", range.raw);
    assert!(
        range.body == data[100_000..250_000],
        "a range came back changed"
    );
    let tail = get(&server, "/big.bin", "Range: bytes=-70000\r\n").await;
    assert!(
        tail.body == data[data.len() - 70_000..],
        "a suffix came back changed"
    );
    // Two in one write, on one connection: each whole, in order.
    let request = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut stream = TcpStream::connect(server.addr.to_string()).await.unwrap();
    stream
        .write_all(&[&request[..], &request[..]].concat())
        .await
        .unwrap();
    for _ in 0..2 {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 200"));
        let mut body = vec![0u8; data.len()];
        tokio::time::timeout(TEST_TIMEOUT, stream.read_exact(&mut body))
            .await
            .expect("the body stalled")
            .unwrap();
        assert!(body == data, "a pipelined response came back changed");
    }
}
