//! The chat's web listener end to end: a WebSocket client (tokio-tungstenite) and a line
//! client on one broker, and every bad input the issue names for the browser way in. Every
//! wait is on a received message or a polled count, bounded by TEST_TIMEOUT.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{start_at, TestServer, TEST_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sockit::engine::{Config, Conn, ConnInfo, Handler};
use sockit::net::{Addr, Stream};
use sockit::service::chat::{
    self, Broker, BrokerConfig, LineConfig, LineServer, RateLimit, WebConfig, WebServer,
};
use sockit::service::http::{HttpConfig, HttpServer};
use sockit::session::Token;
use tokio::io::{
    AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, WriteHalf,
};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

fn engine(service: &str) -> Config {
    Config {
        service: service.into(),
        idle_timeout: None,
        ..Config::default()
    }
}

struct Chat {
    web: TestServer,
    line: TestServer,
    broker: Arc<Broker>,
}

async fn start_chat_at(web_addr: &str, line_addr: &str, web: WebConfig, line: LineConfig) -> Chat {
    let broker = Broker::new(BrokerConfig::default());
    let web = start_at(
        web_addr,
        WebServer::new(broker.clone(), web),
        engine("chat-web"),
    )
    .await;
    let line = start_at(
        line_addr,
        LineServer::new(broker.clone(), line),
        engine("chat-line"),
    )
    .await;
    Chat { web, line, broker }
}

async fn start_chat(web: WebConfig) -> Chat {
    start_chat_at("127.0.0.1:0", "127.0.0.1:0", web, LineConfig::default()).await
}

type Ws = WebSocketStream<Stream>;

/// Opens `/chat/ws` at `addr`, naming `origin` as a browser would (or none).
async fn open(addr: &Addr, origin: Option<&str>) -> Result<Ws, WsError> {
    let host = match addr {
        Addr::Inet(sa) => sa.to_string(),
        Addr::Unix(_) => "localhost".to_owned(),
    };
    let mut request = format!("ws://{host}/chat/ws").into_client_request()?;
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
    }
    let stream = Stream::connect(addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(ws)
}

/// The next text message as JSON; panics on anything else or after TEST_TIMEOUT.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = timeout(TEST_TIMEOUT, ws.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("a valid message");
        match msg {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Skips messages until one has `key` == `value`, and returns it.
async fn expect_json(ws: &mut Ws, key: &str, value: &str) -> Value {
    loop {
        let msg = next_json(ws).await;
        if msg[key] == value {
            return msg;
        }
    }
}

async fn send_json(ws: &mut Ws, msg: Value) {
    ws.send(Message::text(msg.to_string())).await.expect("send");
}

/// Opens a socket and registers `nick` in the lobby.
async fn join(addr: &Addr, nick: &str) -> Ws {
    let mut ws = open(addr, None).await.expect("handshake");
    let hello = next_json(&mut ws).await;
    assert_eq!(hello, json!({"type": "hello", "token_required": false}));
    send_json(&mut ws, json!({"type": "register", "nick": nick})).await;
    let ready = next_json(&mut ws).await;
    assert_eq!(
        ready,
        json!({"type": "ready", "nick": nick, "room": "lobby"})
    );
    ws
}

/// How the server closed the socket: the close frame's code, reading past anything else.
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match timeout(TEST_TIMEOUT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// A line-protocol client, like `nc`.
struct LineClient {
    lines: Lines<BufReader<ReadHalf<Stream>>>,
    writer: WriteHalf<Stream>,
}

impl LineClient {
    async fn join(addr: &Addr, nick: &str) -> LineClient {
        let stream = Stream::connect(addr).await.expect("connect");
        let (rd, writer) = tokio::io::split(stream);
        let mut client = LineClient {
            lines: BufReader::new(rd).lines(),
            writer,
        };
        client.expect("send your nick").await;
        client.send(nick).await;
        client.expect(&format!("* {nick} joined #lobby")).await;
        client
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("send");
    }

    /// Skips lines until one contains `needle`, and returns it.
    async fn expect(&mut self, needle: &str) -> String {
        loop {
            let line = timeout(TEST_TIMEOUT, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no line with {needle:?} in time"))
                .expect("read")
                .unwrap_or_else(|| panic!("closed before a line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

#[tokio::test]
async fn a_browser_socket_and_a_line_client_share_a_room_with_history_and_commands() {
    let chat = start_chat(WebConfig::default()).await;
    let mut nc = LineClient::join(&chat.line.addr, "carol").await;
    nc.send("said before the browser came").await;
    nc.expect("<carol> said before").await;
    let mut web = join(&chat.web.addr, "webby").await;
    let note = expect_json(&mut web, "type", "notice").await;
    assert_eq!(note["text"], "the last message in #lobby:");
    let old = next_json(&mut web).await;
    assert_eq!(old["nick"], "carol");
    assert_eq!(old["text"], "said before the browser came");
    nc.expect("* webby joined #lobby").await;

    send_json(
        &mut web,
        json!({"type": "line", "text": "hello from a browser"}),
    )
    .await;
    nc.expect("<webby> hello from a browser").await;
    let own = expect_json(&mut web, "type", "message").await;
    assert_eq!(own["text"], "hello from a browser");
    nc.send("hello back").await;
    let msg = expect_json(&mut web, "type", "message").await;
    assert_eq!(
        (msg["nick"].as_str(), msg["text"].as_str()),
        (Some("carol"), Some("hello back"))
    );
    assert!(msg["time"].as_u64().is_some_and(|t| t > 0));

    // Commands typed in the page are the line port's commands.
    send_json(&mut web, json!({"type": "line", "text": "/who"})).await;
    let who = expect_json(&mut web, "type", "notice").await;
    assert_eq!(who["text"], "in #lobby: carol, webby");
    send_json(&mut web, json!({"type": "line", "text": "/me waves"})).await;
    nc.expect("* webby waves").await;
    send_json(&mut web, json!({"type": "line", "text": "/msg carol psst"})).await;
    nc.expect("*webby -> carol* psst").await;
    send_json(&mut web, json!({"type": "line", "text": "/bogus"})).await;
    let refused = expect_json(&mut web, "type", "error").await;
    assert_eq!(refused["code"], "invalid_command");
    // Peer text is escaped by the server, as for every other client.
    send_json(
        &mut web,
        json!({"type": "line", "text": "bell\u{7} and \u{1b}[31mred"}),
    )
    .await;
    let seen = nc.expect("<webby> bell").await;
    assert!(
        !seen.contains('\u{1b}') && !seen.contains('\u{7}'),
        "{seen:?}"
    );
    drop(web);
    nc.expect("* webby left #lobby").await;
    assert_eq!(chat.broker.client_count(), 1);
}

#[tokio::test]
async fn a_taken_nick_gets_the_same_refusal_and_suggestion_as_on_the_line_port() {
    let chat = start_chat(WebConfig::default()).await;
    let _alice = LineClient::join(&chat.line.addr, "alice").await;
    let mut web = open(&chat.web.addr, None).await.expect("handshake");
    next_json(&mut web).await;
    send_json(&mut web, json!({"type": "register", "nick": "alice"})).await;
    let refused = next_json(&mut web).await;
    assert_eq!(refused["code"], "nick_taken");
    // The line port's words for the same refusal.
    let stream = Stream::connect(&chat.line.addr).await.expect("connect");
    let (rd, mut wr) = tokio::io::split(stream);
    let mut lines = BufReader::new(rd).lines();
    wr.write_all(b"alice\n").await.expect("send");
    let line_refusal = loop {
        let line = timeout(TEST_TIMEOUT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(text) = line.strip_prefix("! ") {
            break text.to_owned();
        }
    };
    assert_eq!(refused["message"], line_refusal.as_str());
    assert!(line_refusal.contains("try alice"), "{line_refusal}");
    // The socket stays open for another try.
    send_json(&mut web, json!({"type": "register", "nick": "alice2"})).await;
    expect_json(&mut web, "type", "ready").await;
}

#[tokio::test]
async fn a_socket_from_a_foreign_origin_is_refused_with_403_and_the_own_origin_is_not() {
    let chat = start_chat(WebConfig::default()).await;
    let foreign = open(&chat.web.addr, Some("http://evil.example")).await;
    match foreign {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let null = open(&chat.web.addr, Some("null")).await;
    assert!(matches!(null, Err(WsError::Http(r)) if r.status() == 403));
    let own = format!("http://{}", chat.web.addr);
    let mut ws = open(&chat.web.addr, Some(&own)).await.expect("same origin");
    assert_eq!(next_json(&mut ws).await["type"], "hello");
}

#[tokio::test]
async fn a_one_mebibyte_message_closes_with_1009_and_others_are_still_served() {
    let chat = start_chat(WebConfig::default()).await;
    let mut watcher = join(&chat.web.addr, "watcher").await;
    let mut big = join(&chat.web.addr, "big").await;
    expect_json(&mut watcher, "text", "big joined #lobby").await;
    let text = json!({"type": "line", "text": "x".repeat(1 << 20)}).to_string();
    // The server may close while the frame is still being written.
    let _ = big.send(Message::text(text)).await;
    assert_eq!(close_code(&mut big).await, Some(CloseCode::Size));
    let left = expect_json(&mut watcher, "type", "notice").await;
    assert_eq!(left["text"], "big left #lobby (protocol error)");
    let mut after = join(&chat.web.addr, "after").await;
    send_json(&mut after, json!({"type": "line", "text": "still here"})).await;
    let msg = expect_json(&mut watcher, "type", "message").await;
    assert_eq!(msg["text"], "still here");
    assert!(
        !msg.to_string().contains("xxxx"),
        "none of the big message was sent"
    );
}

#[tokio::test]
async fn a_binary_message_closes_with_1003() {
    let chat = start_chat(WebConfig::default()).await;
    let mut ws = join(&chat.web.addr, "binary").await;
    ws.send(Message::binary(b"\x00\x01".to_vec()))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));
    // Before registering too.
    let mut early = open(&chat.web.addr, None).await.expect("handshake");
    next_json(&mut early).await;
    early
        .send(Message::binary(b"nick".to_vec()))
        .await
        .expect("send");
    assert_eq!(close_code(&mut early).await, Some(CloseCode::Unsupported));
    join(&chat.web.addr, "binary").await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message_closes_with_1007() {
    let chat = start_chat(WebConfig::default()).await;
    let mut watcher = join(&chat.web.addr, "watcher").await;
    let mut ws = join(&chat.web.addr, "mangled").await;
    expect_json(&mut watcher, "text", "mangled joined #lobby").await;
    let payload = b"{\"type\":\"line\",\"text\":\"a\xff\xfe\"}".to_vec();
    let frame = Frame::message(payload, OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.expect("send");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));
    let left = expect_json(&mut watcher, "type", "notice").await;
    assert_eq!(left["text"], "mangled left #lobby (protocol error)");
}

#[tokio::test]
async fn a_socket_that_never_reads_is_closed_at_its_queue_limit_and_others_get_everything() {
    // 3 MB through the room: past what a Unix socket buffers plus the outbox limit
    // (MAX_QUEUED_BYTES), so only the queue limit can end `slow`.
    const MESSAGES: usize = 3000;
    const WINDOW: usize = 100;
    const { assert!(MESSAGES * 1000 > 2 * chat::MAX_QUEUED_BYTES) };
    let dir = tempfile::tempdir().expect("tempdir");
    let web_path = format!("unix:{}", dir.path().join("web.sock").display());
    let line_path = format!("unix:{}", dir.path().join("line.sock").display());
    let unlimited = RateLimit {
        per_sec: 1_000_000,
        burst: 1_000_000,
    };
    let line = LineConfig {
        rate: unlimited,
        ..LineConfig::default()
    };
    let chat = start_chat_at(&web_path, &line_path, WebConfig::default(), line).await;
    let slow = join(&chat.web.addr, "slow").await;
    let mut watcher = join(&chat.web.addr, "watcher").await;
    let feeder = LineClient::join(&chat.line.addr, "feeder").await;
    expect_json(&mut watcher, "text", "feeder joined #lobby").await;
    let LineClient {
        lines: mut feeder_lines,
        writer: mut feeder_writer,
    } = feeder;
    let feeder_drain =
        tokio::spawn(async move { while let Ok(Some(_)) = feeder_lines.next_line().await {} });
    let text = "m".repeat(1000);
    for start in (1..=MESSAGES).step_by(WINDOW) {
        let batch: String = (start..start + WINDOW)
            .map(|i| format!("{i} {text}\n"))
            .collect();
        feeder_writer
            .write_all(batch.as_bytes())
            .await
            .expect("send");
        // In order, every one: the watcher is served while `slow` is not reading.
        for i in start..start + WINDOW {
            let msg = expect_json(&mut watcher, "type", "message").await;
            let want = format!("{i} {text}");
            assert_eq!(msg["text"].as_str(), Some(want.as_str()));
        }
    }
    let left = expect_json(&mut watcher, "type", "notice").await;
    assert_eq!(left["text"], "slow left #lobby (too slow: disconnected)");
    assert_eq!(chat.broker.client_count(), 2);
    drop(slow);
    join(&chat.web.addr, "newcomer").await;
    feeder_drain.abort();
}

#[tokio::test]
async fn a_server_with_a_token_wants_it_first_and_refuses_a_wrong_one() {
    let config = WebConfig {
        token: Some(Token::generate().expect("token")),
        ..WebConfig::default()
    };
    let token = config.token.as_ref().expect("set").reveal().to_owned();
    let chat = start_chat(config).await;
    let attempts = [
        json!({"type": "register", "nick": "sneaky"}),
        json!({"type": "auth", "token": "wrong"}),
        json!({"type": "auth", "token": format!("{token}x")}),
    ];
    for attempt in attempts {
        let mut ws = open(&chat.web.addr, None).await.expect("handshake");
        assert_eq!(next_json(&mut ws).await["token_required"], true);
        send_json(&mut ws, attempt).await;
        let refused = next_json(&mut ws).await;
        assert_eq!(refused["code"], "unauthorized");
        assert_eq!(close_code(&mut ws).await, Some(CloseCode::Policy));
    }
    assert_eq!(chat.broker.client_count(), 0);
    let mut ws = open(&chat.web.addr, None).await.expect("handshake");
    next_json(&mut ws).await;
    send_json(&mut ws, json!({"type": "auth", "token": token})).await;
    send_json(&mut ws, json!({"type": "register", "nick": "trusted"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "ready");
}

/// A local address that is not loopback, if this machine has one (no packet is sent).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn beyond_loopback_a_server_without_a_token_refuses_every_socket() {
    let Some(ip) = non_loopback_ip() else {
        println!("beyond_loopback_a_server_without_a_token_refuses_every_socket: skipped: no non-loopback address here");
        return;
    };
    let chat = start_chat_at(
        &format!("{ip}:0"),
        "127.0.0.1:0",
        WebConfig::default(),
        LineConfig::default(),
    )
    .await;
    match open(&chat.web.addr, None).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| "a socket")),
    }
}

#[tokio::test]
async fn the_server_pings_a_quiet_socket() {
    let config = WebConfig {
        ping_interval: std::time::Duration::from_millis(50),
        ..WebConfig::default()
    };
    let chat = start_chat(config).await;
    let mut ws = join(&chat.web.addr, "quiet").await;
    loop {
        let msg = timeout(TEST_TIMEOUT, ws.next())
            .await
            .expect("a ping in time");
        if let Some(Ok(Message::Ping(_))) = msg {
            break;
        }
    }
}

#[tokio::test]
async fn a_socket_that_answers_nothing_is_closed_at_the_silence_limit() {
    // The watcher reads, so it answers the pings and stays; `mute` does not.
    let config = WebConfig {
        ping_interval: std::time::Duration::from_millis(50),
        silence_timeout: std::time::Duration::from_millis(400),
        ..WebConfig::default()
    };
    let chat = start_chat(config).await;
    let mut watcher = join(&chat.web.addr, "watcher").await;
    let _mute = join(&chat.web.addr, "mute").await;
    // `mute` is never polled again, so it answers no ping and sends nothing.
    let text = loop {
        let msg = expect_json(&mut watcher, "type", "notice").await;
        if msg["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("mute left"))
        {
            break msg["text"].clone();
        }
    };
    assert_eq!(text, "mute left #lobby (protocol error)");
    send_json(&mut watcher, json!({"type": "line", "text": "still here"})).await;
    expect_json(&mut watcher, "text", "still here").await;
}

/// One plain HTTP/1.1 request; the whole response as text.
async fn http_get(addr: &Addr, path: &str, method: &str) -> String {
    let mut stream = Stream::connect(addr).await.expect("connect");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    timeout(TEST_TIMEOUT, stream.read_to_string(&mut response))
        .await
        .expect("in time")
        .expect("read");
    response
}

#[tokio::test]
async fn the_page_is_embedded_with_a_strict_policy_and_nothing_else_is_served() {
    let chat = start_chat(WebConfig::default()).await;
    let page = http_get(&chat.web.addr, "/chat/", "GET").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert!(page.contains("<script src=\"chat.js\""));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN"
    );
    let js = http_get(&chat.web.addr, "/chat/chat.js", "GET").await;
    assert!(js.contains("textContent") && !js.contains("innerHTML"));
    let moved = http_get(&chat.web.addr, "/chat", "GET").await;
    assert!(moved.starts_with("HTTP/1.1 308") && moved.contains("location: /chat/"));
    let other = http_get(&chat.web.addr, "/etc/passwd", "GET").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let post = http_get(&chat.web.addr, "/chat/", "POST").await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let plain = http_get(&chat.web.addr, "/chat/ws", "GET").await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
}

/// `sockit chat serve --web-listen ADDR` with `SOCKIT_TOKEN` set: whether the page's socket
/// asks for the token.
async fn cli_token_required(web: &str) -> bool {
    let mut cmd = common::sockit();
    cmd.args([
        "chat",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--web-listen",
        web,
    ])
    .env(
        "SOCKIT_TOKEN",
        "a-token-long-enough-for-any-address-0123456789",
    )
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null());
    let mut server = tokio::task::spawn_blocking(move || {
        let mut server = common::Proc::spawn(cmd);
        let line = server.wait_for_stderr("chat web page listening on ");
        (server, line)
    })
    .await
    .expect("started");
    let addr: Addr = server
        .1
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address")
        .parse()
        .expect("an address");
    let mut ws = open(&addr, None).await.expect("handshake");
    let hello = next_json(&mut ws).await;
    drop(ws);
    server.0.terminate();
    hello["token_required"].as_bool().expect("a bool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_page_needs_no_token_on_loopback_and_the_token_beyond_it() {
    assert!(!cli_token_required("127.0.0.1:0").await);
    let Some(ip) = non_loopback_ip() else {
        println!("the_cli_page_needs_no_token_on_loopback_and_the_token_beyond_it: beyond loopback skipped: no non-loopback address here");
        return;
    };
    assert!(cli_token_required(&format!("{ip}:0")).await);
}

/// A handler that counts the connections it is serving now (a WebSocket's connection is
/// served until its socket ends).
#[derive(Clone)]
struct Live<H> {
    inner: H,
    serving: Arc<AtomicUsize>,
}

/// Decrements the count when a connection's handling ends, however it ends.
struct Serving(Arc<AtomicUsize>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<H: Handler> Handler for Live<H> {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> std::io::Result<()> {
        self.serving.fetch_add(1, Ordering::SeqCst);
        let _serving = Serving(self.serving.clone());
        self.inner.handle(conn, info).await
    }
}

/// Raises the soft RLIMIT_NOFILE towards the hard one; returns how many sockets this test
/// may hold at once (both ends are in this process), at most `want`.
fn sockets_allowed(want: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return want.min(100);
    };
    let soft = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(_) => soft,
    };
    // Two descriptors per socket, and room for the runtime, the listener and other tests.
    let fit = usize::try_from(soft.saturating_sub(256) / 2).unwrap_or(usize::MAX);
    want.min(fit).max(1)
}

/// Polls `done` until it holds or TEST_TIMEOUT passes; returns whether it held.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sockets_that_vanish_without_a_close_frame_are_all_released() {
    const VANISHING: usize = 500;
    let batch = sockets_allowed(VANISHING);
    let broker = Broker::new(BrokerConfig::default());
    let serving = Arc::new(AtomicUsize::new(0));
    let live = Live {
        inner: WebServer::new(broker.clone(), WebConfig::default()),
        serving: serving.clone(),
    };
    let web = common::start(live, engine("chat-web")).await;
    let mut watcher = join(&web.addr, "watcher").await;
    let mut opened = 0;
    while opened < VANISHING {
        let n = batch.min(VANISHING - opened);
        let mut sockets = Vec::with_capacity(n);
        for i in opened..opened + n {
            let mut ws = open(&web.addr, None).await.expect("handshake");
            next_json(&mut ws).await;
            // Every fourth vanishes before it has a nick, the rest once in the room.
            if i % 4 != 0 {
                send_json(
                    &mut ws,
                    json!({"type": "register", "nick": format!("v{i}")}),
                )
                .await;
                expect_json(&mut ws, "type", "ready").await;
            }
            sockets.push(ws);
        }
        opened += n;
        let registered = 1 + (0..opened).filter(|i| i % 4 != 0).count();
        assert_eq!(broker.client_count(), registered);
        assert_eq!(serving.load(Ordering::SeqCst), 1 + n);
        // Gone without a close frame: half with a FIN, half with a RST (SO_LINGER 0).
        for (i, ws) in sockets.into_iter().enumerate() {
            if i % 2 == 0 {
                if let Stream::Tcp(tcp) = ws.get_ref() {
                    socket2::SockRef::from(tcp)
                        .set_linger(Some(std::time::Duration::ZERO))
                        .expect("SO_LINGER");
                }
            }
            drop(ws);
        }
        let released =
            eventually(|| serving.load(Ordering::SeqCst) == 1 && broker.client_count() == 1).await;
        assert!(
            released,
            "after {opened} vanished: {} connections still served, {} nicks registered",
            serving.load(Ordering::SeqCst),
            broker.client_count()
        );
    }
    // The survivor and a newcomer chat as usual.
    let mut fresh = join(&web.addr, "fresh").await;
    send_json(
        &mut fresh,
        json!({"type": "line", "text": "after the vanishing"}),
    )
    .await;
    let msg = expect_json(&mut watcher, "type", "message").await;
    assert_eq!(msg["nick"], "fresh");
    assert_eq!(msg["text"], "after the vanishing");
    send_json(&mut watcher, json!({"type": "line", "text": "/who"})).await;
    let who = loop {
        let note = expect_json(&mut watcher, "type", "notice").await;
        if note["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("in #lobby"))
        {
            break note;
        }
    };
    assert_eq!(who["text"], "in #lobby: watcher, fresh");
}

#[tokio::test]
async fn an_http_server_carrying_the_chat_serves_its_files_the_page_and_the_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("notes.txt"), b"a file\n").expect("write");
    std::fs::create_dir(dir.path().join("chat")).expect("mkdir");
    std::fs::write(dir.path().join("chat/secret.txt"), b"shadowed\n").expect("write");
    let broker = Broker::new(BrokerConfig::default());
    let mut config = HttpConfig::new(dir.path());
    config.chat = Some(WebServer::new(broker.clone(), WebConfig::default()));
    let serving = Arc::new(AtomicUsize::new(0));
    let handler = Live {
        inner: HttpServer::new(config).expect("server"),
        serving: serving.clone(),
    };
    let http = start_at("127.0.0.1:0", handler, engine("http")).await;
    let line = start_at(
        "127.0.0.1:0",
        LineServer::new(broker.clone(), LineConfig::default()),
        engine("chat-line"),
    )
    .await;

    // The directory's files, and the chat in place of the directory's chat/.
    let file = http_get(&http.addr, "/notes.txt", "GET").await;
    assert!(
        file.starts_with("HTTP/1.1 200") && file.ends_with("\r\n\r\na file\n"),
        "{file}"
    );
    let page = http_get(&http.addr, "/chat/", "GET").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("<script src=\"chat.js\""),
        "{page}"
    );
    let shadowed = http_get(&http.addr, "/chat/secret.txt", "GET").await;
    assert!(shadowed.starts_with("HTTP/1.1 404"), "{shadowed}");
    assert!(
        open(&http.addr, Some("http://elsewhere.example"))
            .await
            .is_err(),
        "a page from another origin opened the socket"
    );
    let own = format!("http://{}", http.addr);
    drop(
        open(&http.addr, Some(&own))
            .await
            .expect("the page's own origin"),
    );

    // The socket is a way into the same broker as the line port.
    let mut nc = LineClient::join(&line.addr, "carol").await;
    let mut web = join(&http.addr, "webby").await;
    nc.expect("* webby joined #lobby").await;
    send_json(
        &mut web,
        json!({"type": "line", "text": "through the file server"}),
    )
    .await;
    nc.expect("<webby> through the file server").await;
    nc.send("heard you").await;
    let msg = expect_json(&mut web, "text", "heard you").await;
    assert_eq!(msg["nick"], "carol");
    // The upgraded connection is served (counted by the engine) until its socket ends (the
    // earlier connections are released meanwhile).
    assert!(
        eventually(|| serving.load(Ordering::SeqCst) == 1).await,
        "the open socket's connection is not counted"
    );
    drop(web);
    nc.expect("* webby left #lobby").await;
    assert!(
        eventually(|| serving.load(Ordering::SeqCst) == 0).await,
        "the connection was not released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sockit_serve_the_http_entry_carries_the_chat_entrys_rooms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[[service]]\nkind = \"http\"\nlisten = \"127.0.0.1:0\"\ndir = {:?}\nchat = true\n\n\
             [[service]]\nkind = \"chat\"\nlisten = \"127.0.0.1:0\"\nline-listen = \"127.0.0.1:0\"\n",
            dir.path().display().to_string()
        ),
    )
    .expect("config");
    let mut cmd = common::sockit();
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env_remove("SOCKIT_TOKEN")
        .stdout(std::process::Stdio::piped());
    let (mut server, banner) = tokio::task::spawn_blocking(move || {
        let mut server = common::Proc::spawn(cmd);
        let stdout = server.child.stdout.take().expect("stdout");
        let banner = common::read_banner(&mut std::io::BufReader::new(stdout));
        (server, banner)
    })
    .await
    .expect("started");
    let http: Addr = common::address_of(&banner, "http", "tcp")
        .parse()
        .expect("address");
    let line: Addr = common::address_of(&banner, "chat", "line")
        .parse()
        .expect("address");
    assert!(
        banner
            .iter()
            .any(|l| l.contains(&format!("chat: open http://{http}/chat/"))),
        "{banner:?}"
    );
    let mut nc = LineClient::join(&line, "carol").await;
    let mut web = join(&http, "webby").await;
    nc.expect("* webby joined #lobby").await;
    send_json(&mut web, json!({"type": "line", "text": "one chat"})).await;
    nc.expect("<webby> one chat").await;
    nc.send("/who").await;
    nc.expect("carol, webby").await;
    drop(web);
    server.terminate();
}

#[tokio::test]
async fn a_carried_chats_socket_outlives_the_http_head_deadline() {
    // The head deadline bounds the wait for a request head; once a connection is a
    // WebSocket there are no more heads, and a quiet socket is the chat's to keep (pings).
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Broker::new(BrokerConfig::default());
    let mut config = HttpConfig::new(dir.path());
    config.header_read_timeout = std::time::Duration::from_millis(200);
    config.chat = Some(WebServer::new(broker.clone(), WebConfig::default()));
    let http = start_at(
        "127.0.0.1:0",
        HttpServer::new(config).expect("server"),
        engine("http"),
    )
    .await;
    let line = start_at(
        "127.0.0.1:0",
        LineServer::new(broker, LineConfig::default()),
        engine("chat-line"),
    )
    .await;
    let mut web = join(&http.addr, "quiet").await;
    let mut nc = LineClient::join(&line.addr, "carol").await;
    // Five head deadlines of silence: the time passing is what is tested here.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    nc.send("still there?").await;
    let msg = expect_json(&mut web, "text", "still there?").await;
    assert_eq!(msg["nick"], "carol");
}
