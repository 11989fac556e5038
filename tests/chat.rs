//! `sockit chat` end to end: line and framed clients on one broker, every bad input the issue
//! names, and real peers (nc, Python). Every wait is on a received line, bounded by
//! TEST_TIMEOUT.

mod common;

use std::sync::Arc;

use common::{start, start_at, TestServer, TEST_TIMEOUT};
use sockit::engine::Config;
use sockit::net::{Addr, Stream};
use sockit::service::chat::{
    self, Broker, BrokerConfig, ChatClient, ChatError, ChatServer, ChatService, ClientMessage,
    FramedConfig, JoinOptions, LineConfig, LineServer, RateLimit, ServerMessage,
};
use sockit::session::{GateConfig, Token};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, ReadHalf, WriteHalf};
use tokio::time::timeout;

struct Chat {
    framed: TestServer,
    line: TestServer,
    broker: Arc<Broker>,
}

fn engine(service: &str) -> Config {
    Config {
        service: service.into(),
        idle_timeout: None,
        ..Config::default()
    }
}

async fn start_chat_with(line_addr: &str, line: LineConfig, gate: GateConfig) -> Chat {
    let broker = Broker::new(BrokerConfig::default());
    let service = ChatService::new(broker.clone(), FramedConfig::default());
    let framed = start(ChatServer::new(gate, service), engine("chat")).await;
    let line = start_at(
        line_addr,
        LineServer::new(broker.clone(), line),
        engine("chat-line"),
    )
    .await;
    Chat {
        framed,
        line,
        broker,
    }
}

async fn start_chat() -> Chat {
    start_chat_with("127.0.0.1:0", LineConfig::default(), chat::gate(None)).await
}

/// A line-protocol client, like `nc`.
struct LineClient {
    lines: Lines<BufReader<ReadHalf<Stream>>>,
    writer: WriteHalf<Stream>,
}

impl LineClient {
    async fn connect(addr: &Addr) -> LineClient {
        let stream = Stream::connect(addr).await.expect("connect");
        let (rd, writer) = tokio::io::split(stream);
        let mut client = LineClient {
            lines: BufReader::new(rd).lines(),
            writer,
        };
        client.expect("send your nick").await;
        client
    }

    /// Connects and registers `nick`, waiting for the server's welcome.
    async fn join(addr: &Addr, nick: &str) -> LineClient {
        let mut client = LineClient::connect(addr).await;
        client.send(nick).await;
        client.expect(&format!("* you are {nick} in #lobby")).await;
        client.expect(&format!("* {nick} joined #lobby")).await;
        client
    }

    async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes()).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("send");
    }

    /// Reads lines until one contains `needle`; returns it. Fails at EOF or after TEST_TIMEOUT.
    async fn expect(&mut self, needle: &str) -> String {
        let mut seen = Vec::new();
        let found = timeout(TEST_TIMEOUT, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                if line.contains(needle) {
                    return Some(line);
                }
                seen.push(line);
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => {
                let last = &seen[seen.len().saturating_sub(5)..];
                panic!("no line with {needle:?}; last lines seen: {last:?}")
            }
        }
    }

    /// Reads to EOF (bounded); returns everything seen.
    async fn read_to_end(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        let done = timeout(TEST_TIMEOUT, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                seen.push(line);
            }
        })
        .await;
        assert!(done.is_ok(), "the server did not close; saw {seen:?}");
        seen
    }
}

fn join_opts(nick: &str) -> JoinOptions {
    JoinOptions {
        nick: nick.into(),
        room: None,
        token: None,
        tls: None,
    }
}

/// Receives framed messages until `pred` matches one; returns it.
async fn recv_until(
    client: &mut ChatClient,
    pred: impl Fn(&ServerMessage) -> bool,
) -> ServerMessage {
    let found = timeout(TEST_TIMEOUT, async {
        loop {
            match client.receiver.recv().await {
                Ok(Some(msg)) if pred(&msg) => return Some(msg),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    })
    .await;
    found
        .ok()
        .flatten()
        .expect("the awaited message never came")
}

fn is_text(want: &'static str) -> impl Fn(&ServerMessage) -> bool {
    move |msg| matches!(msg, ServerMessage::Message { text, .. } if text == want)
}

#[tokio::test]
async fn line_and_framed_clients_talk_across_protocols() {
    let chat = start_chat().await;
    let mut alice = LineClient::join(&chat.line.addr, "alice").await;
    let mut bob = LineClient::join(&chat.line.addr, "bob").await;
    let mut carol = chat::join(&chat.framed.addr, &join_opts("carol"))
        .await
        .expect("carol joins");
    assert_eq!(carol.nick, "carol");
    assert_eq!(carol.room.as_deref(), Some("lobby"));
    alice.expect("* carol joined #lobby").await;
    let say = ClientMessage::Say {
        text: "hi from framed".into(),
    };
    carol.sender.send(&say).await.expect("send");
    alice.expect("<carol> hi from framed").await;
    bob.expect("<carol> hi from framed").await;
    alice.send("hi from nc").await;
    let got = recv_until(&mut carol, is_text("hi from nc")).await;
    assert!(
        matches!(got, ServerMessage::Message { nick, room, time, .. }
        if nick == "alice" && room == "lobby" && time > 0)
    );
    bob.send("/msg carol psst").await;
    let got = recv_until(&mut carol, |m| matches!(m, ServerMessage::Private { .. })).await;
    assert!(
        matches!(got, ServerMessage::Private { from, text, .. } if from == "bob" && text == "psst")
    );
    carol
        .sender
        .send(&ClientMessage::Me {
            text: "waves".into(),
        })
        .await
        .expect("send");
    bob.expect("* carol waves").await;
    chat.framed.stop().await.expect("stops");
    chat.line.stop().await.expect("stops");
}

#[tokio::test]
async fn rooms_history_who_and_nick_changes_work_end_to_end() {
    let chat = start_chat().await;
    let mut alice = LineClient::join(&chat.line.addr, "alice").await;
    alice.send("/join #dev").await;
    alice.expect("* alice joined #dev").await;
    for text in ["one", "two", "three"] {
        alice.send(text).await;
        alice.expect(&format!("<alice> {text}")).await;
    }
    let mut bob = LineClient::join(&chat.line.addr, "bob").await;
    bob.send("/join dev").await;
    bob.expect("* the last 3 messages in #dev:").await;
    bob.expect("<alice> one").await;
    bob.expect("<alice> three").await;
    bob.expect("* bob joined #dev").await;
    bob.send("/who").await;
    bob.expect("* in #dev: alice, bob").await;
    bob.send("/nick robert").await;
    alice.expect("* bob is now known as robert").await;
    alice.send("/rooms").await;
    alice.expect("* rooms: #dev (2), #lobby (0)").await;
    alice.send("/leave").await;
    bob.expect("* alice left #dev").await;
    alice.send("/quit").await;
    let rest = alice.read_to_end().await;
    assert!(rest.iter().any(|l| l == "*** bye"), "{rest:?}");
}

#[tokio::test]
async fn taken_confusable_and_invalid_nicks_are_refused_clearly_and_may_retry() {
    let chat = start_chat().await;
    let _alice = LineClient::join(&chat.line.addr, "alice").await;
    let mut other = LineClient::connect(&chat.line.addr).await;
    for (nick, want) in [
        (
            "ALICE",
            "! nick ALICE is taken (too close to alice); try ALICE_2",
        ),
        (
            "a1ice",
            "! nick a1ice is taken (too close to alice); try a1ice_2",
        ),
        ("al\x1b[2Jice", "! a nick may only contain letters"),
    ] {
        other.send(nick).await;
        assert_eq!(other.expect("! ").await.get(..want.len()), Some(want));
        other.expect("send another nick").await;
    }
    other.send(&"x".repeat(1000)).await;
    other
        .expect("! a nick has at most 32 characters (this one has 1000)")
        .await;
    other.send("alice_2").await;
    other.expect("* you are alice_2 in #lobby").await;
    // The framed protocol refuses the same way, with the same suggestion.
    let err = chat::join(&chat.framed.addr, &join_opts("Alice")).await;
    match err {
        Err(ChatError::Refused { code, message }) => {
            assert_eq!(code, "nick_taken");
            assert!(message.contains("try Alice_3"), "{message}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a look-alike nick was accepted"),
    }
    LineClient::join(&chat.line.addr, "carol").await;
}

#[tokio::test]
async fn escape_sequences_and_bidi_overrides_arrive_neutralised() {
    let chat = start_chat().await;
    let mut alice = LineClient::join(&chat.line.addr, "alice").await;
    let mut bob = chat::join(&chat.framed.addr, &join_opts("bob"))
        .await
        .expect("joins");
    alice
        .send("copy \x1b]52;c;cm0gLXJmIH4=\x07 clear \x1b[2J rtl \u{202e}txt.exe")
        .await;
    let want = "copy \\x1b]52;c;cm0gLXJmIH4=\\x07 clear \\x1b[2J rtl \\u{202e}txt.exe";
    let line = alice.expect("<alice> copy").await;
    assert_eq!(line, format!("<alice> {want}"));
    let got = recv_until(&mut bob, |m| matches!(m, ServerMessage::Message { .. })).await;
    assert!(matches!(got, ServerMessage::Message { text, .. } if text == want));
}

#[tokio::test]
async fn a_one_mib_message_is_refused_and_the_client_keeps_chatting() {
    let chat = start_chat().await;
    let mut alice = LineClient::join(&chat.line.addr, "alice").await;
    let mut watcher = LineClient::join(&chat.line.addr, "watcher").await;
    let mut huge = vec![b'x'; 1024 * 1024];
    huge.push(b'\n');
    alice.send_raw(&huge).await;
    alice
        .expect("! a line has at most 4160 bytes; that line was dropped, none of it was sent")
        .await;
    alice.send(&"y".repeat(4097)).await;
    alice
        .expect("! a message has at most 4096 bytes (this one has 4097)")
        .await;
    alice.send("still here").await;
    alice.expect("<alice> still here").await;
    // As the notice says: no part of either line reached anyone.
    assert_eq!(watcher.expect("<alice>").await, "<alice> still here");
    let mut bob = chat::join(&chat.framed.addr, &join_opts("bob"))
        .await
        .expect("joins");
    let big = ClientMessage::Say {
        text: "z".repeat(60 * 1024),
    };
    bob.sender.send(&big).await.expect("send");
    let got = recv_until(&mut bob, |m| matches!(m, ServerMessage::Error { .. })).await;
    assert!(matches!(got, ServerMessage::Error { code, .. } if code == "message_too_long"));
    bob.sender
        .send(&ClientMessage::Say { text: "ok".into() })
        .await
        .expect("send");
    recv_until(&mut bob, is_text("ok")).await;
}

#[tokio::test]
async fn binary_garbage_and_invalid_utf8_do_not_hurt_the_server() {
    let chat = start_chat().await;
    let mut watcher = LineClient::join(&chat.line.addr, "watcher").await;
    let mut garbage = LineClient::connect(&chat.line.addr).await;
    garbage.send("noise").await;
    garbage.expect("* you are noise").await;
    // Three lines of pseudo-random bytes (no newlines inside), under the burst limit.
    for round in 0..3u32 {
        let bytes: Vec<u8> = (0..3000u32)
            .map(|i| ((i + round).wrapping_mul(2_654_435_761) >> 13) as u8)
            .map(|b| if b == b'\n' { 0 } else { b })
            .collect();
        garbage.send_raw(&bytes).await;
        garbage.send_raw(b"\n").await;
    }
    garbage.send_raw(b"\n\xff\xfe\xc3 ok\r\n").await;
    let line = watcher.expect("<noise> \u{fffd}\u{fffd}\u{fffd} ok").await;
    assert!(!line.contains('\x1b'));
    LineClient::join(&chat.line.addr, "next").await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_others_are_still_served() {
    let chat = start_chat().await;
    let mut flooder = LineClient::join(&chat.line.addr, "flooder").await;
    let mut alice = LineClient::join(&chat.line.addr, "alice").await;
    let mut bob = LineClient::join(&chat.line.addr, "bob").await;
    let flood: String = (0..10_000).map(|i| format!("flood {i}\n")).collect();
    flooder.send_raw(flood.as_bytes()).await;
    flooder
        .expect("! slow down: at most 20 lines a second (bursts of 40)")
        .await;
    alice.send("still served").await;
    bob.expect("<alice> still served").await;
    // Everything bob saw from the flood came before alice's line, and far from all of it.
    chat.framed.stop().await.expect("stops");
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_at_its_queue_limit_and_others_get_everything() {
    // 3 MB through the room: past what a Unix socket buffers (~200 KiB each way) plus the
    // outbox limit (MAX_QUEUED_BYTES, 1 MiB), so only the queue limit can end `slow`.
    const MESSAGES: usize = 3000;
    const { assert!(MESSAGES * 1000 > 2 * chat::MAX_QUEUED_BYTES) };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = format!("unix:{}", dir.path().join("chat.sock").display());
    let unlimited = RateLimit {
        per_sec: 1_000_000,
        burst: 1_000_000,
    };
    let line = LineConfig {
        rate: unlimited,
        ..LineConfig::default()
    };
    let chat = start_chat_with(&path, line, chat::gate(None)).await;
    let addr = chat.line.addr.clone();
    let slow = LineClient::join(&addr, "slow").await;
    let mut watcher = LineClient::join(&addr, "watcher").await;
    let feeder = LineClient::join(&addr, "feeder").await;
    watcher.expect("* feeder joined").await;
    let LineClient {
        lines: mut feeder_lines,
        writer: mut feeder_writer,
    } = feeder;
    let feeder_drain =
        tokio::spawn(async move { while let Ok(Some(_)) = feeder_lines.next_line().await {} });
    // The feeder stays a window of WINDOW messages ahead of the watcher (as `sockit bench
    // chat` does), so only `slow` falls behind.
    const WINDOW: usize = 100;
    let text = "m".repeat(1000);
    for start in (1..=MESSAGES).step_by(WINDOW) {
        let batch: String = (start..start + WINDOW)
            .map(|i| format!("{i} {text}\n"))
            .collect();
        feeder_writer
            .write_all(batch.as_bytes())
            .await
            .expect("send");
        // `expect` skips other lines, so finding each number in turn proves order too.
        for i in start..start + WINDOW {
            watcher.expect(&format!("<feeder> {i} ")).await;
        }
    }
    watcher
        .expect("* slow left #lobby (too slow: disconnected)")
        .await;
    assert_eq!(chat.broker.client_count(), 2);
    drop(slow);
    LineClient::join(&addr, "newcomer").await;
    feeder_drain.abort();
}

#[tokio::test]
async fn five_hundred_clients_that_vanish_without_closing_free_their_nicks() {
    const GHOSTS: usize = 500;
    let chat = start_chat().await;
    let mut watcher = LineClient::join(&chat.line.addr, "watcher").await;
    let mut ghosts = Vec::new();
    for i in 0..GHOSTS {
        let stream = tokio::net::TcpStream::connect(chat.line.addr.to_string())
            .await
            .expect("connect");
        let mut stream = BufReader::new(stream);
        let mut greeting = String::new();
        stream.read_line(&mut greeting).await.expect("greeting");
        // Half register a nick, half never get that far.
        if i % 2 == 0 {
            stream
                .get_mut()
                .write_all(format!("ghost{i}\n").as_bytes())
                .await
                .expect("nick");
        }
        ghosts.push(stream.into_inner());
    }
    watcher
        .expect(&format!("* ghost{} joined", GHOSTS - 2))
        .await;
    assert_eq!(chat.broker.client_count(), 1 + GHOSTS / 2);
    for ghost in ghosts {
        // An abortive close (RST), as when a client's machine drops off the network and
        // comes back: no goodbye, no FIN.
        socket2::SockRef::from(&ghost)
            .set_linger(Some(std::time::Duration::ZERO))
            .expect("linger");
        drop(ghost);
    }
    for i in (0..GHOSTS).step_by(2) {
        watcher.expect(&format!("* ghost{i} left #lobby")).await;
    }
    assert_eq!(chat.broker.client_count(), 1);
    let mut again = LineClient::join(&chat.line.addr, "ghost0").await;
    again.send("/who").await;
    again.expect("* in #lobby: watcher, ghost0").await;
}

#[tokio::test]
async fn a_server_with_a_token_refuses_clients_without_it() {
    let token = Token::generate().expect("token");
    let framed = GateConfig {
        token: Some(token.clone()),
        ..chat::gate(None)
    };
    let chat = start_chat_with("127.0.0.1:0", LineConfig::default(), framed).await;
    let err = chat::join(&chat.framed.addr, &join_opts("mallory")).await;
    assert!(matches!(err, Err(ChatError::Client(e)) if e.code() == "token_required"));
    let wrong = JoinOptions {
        token: Some(Token::generate().expect("token")),
        ..join_opts("mallory")
    };
    let err = chat::join(&chat.framed.addr, &wrong).await;
    assert!(matches!(err, Err(ChatError::Client(e)) if e.code() == "auth_failed"));
    let right = JoinOptions {
        token: Some(token),
        ..join_opts("alice")
    };
    let alice = chat::join(&chat.framed.addr, &right).await.expect("joins");
    assert_eq!(alice.nick, "alice");
    assert_eq!(chat.broker.client_count(), 1);
}

#[tokio::test]
async fn framed_clients_chat_over_pinned_tls_and_plaintext_is_refused() {
    use sockit::net::tls::{ServerIdentity, ServerTrust, TlsAcceptor, TlsConnector};
    let identity = ServerIdentity::self_signed(&"127.0.0.1:0".parse().expect("addr")).expect("id");
    let acceptor = TlsAcceptor::new(identity).expect("acceptor");
    let pin = ServerTrust::Pin(acceptor.fingerprint());
    let framed = GateConfig {
        tls: Some(acceptor),
        ..chat::gate(None)
    };
    let chat = start_chat_with("127.0.0.1:0", LineConfig::default(), framed).await;
    let mut watcher = LineClient::join(&chat.line.addr, "watcher").await;
    let secure = JoinOptions {
        tls: Some(TlsConnector::new(&pin).expect("connector")),
        ..join_opts("secure")
    };
    let mut client = chat::join(&chat.framed.addr, &secure)
        .await
        .expect("joins over tls");
    let say = ClientMessage::Say {
        text: "over tls".into(),
    };
    client.sender.send(&say).await.expect("send");
    watcher.expect("<secure> over tls").await;
    let plain = timeout(
        TEST_TIMEOUT,
        chat::join(&chat.framed.addr, &join_opts("plain")),
    )
    .await;
    assert!(matches!(plain, Ok(Err(_))), "plaintext joined a TLS port");
    assert_eq!(chat.broker.client_count(), 2);
}

#[tokio::test]
async fn a_framed_client_at_the_line_port_is_told_to_use_the_framed_port() {
    let chat = start_chat().await;
    let err = timeout(
        TEST_TIMEOUT,
        chat::join(&chat.line.addr, &join_opts("alice")),
    )
    .await
    .expect("the client gives up at once");
    let err = match err {
        Err(err @ ChatError::LinePort { .. }) => err,
        Err(other) => panic!("expected a line-port error, got {other:?}"),
        Ok(_) => panic!("joined a line port"),
    };
    let said = err.to_string();
    assert!(
        said.starts_with(&format!("{} answered in plain text", chat.line.addr))
            && said.contains("line protocol (nc-style), not the framed protocol")
            && said.contains("--listen")
            && said.contains("welcome to sockit chat"),
        "{said}"
    );
    // The line port still serves the next (nc-style) client.
    let mut bob = LineClient::join(&chat.line.addr, "bob").await;
    bob.send("/quit").await;
    bob.read_to_end().await;
}

#[tokio::test]
async fn nc_at_the_framed_port_gets_a_plain_text_line_naming_the_line_port() {
    let chat = start_chat().await;
    let mut stream = Stream::connect(&chat.framed.addr).await.expect("connect");
    stream.write_all(b"alice\n").await.expect("send");
    let mut reply = Vec::new();
    timeout(
        TEST_TIMEOUT,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut reply),
    )
    .await
    .expect("the server closes")
    .expect("read");
    let reply = String::from_utf8(reply).expect("text, not a binary frame");
    assert!(
        reply.starts_with("error: this port speaks sockit's framed protocol (service chat)")
            && reply.contains("--line-listen")
            && reply.ends_with('\n')
            && reply.lines().count() == 1,
        "{reply:?}"
    );
    // The framed port still serves the next client.
    let carol = chat::join(&chat.framed.addr, &join_opts("carol"))
        .await
        .expect("carol joins");
    assert_eq!(carol.nick, "carol");
}

#[tokio::test]
async fn chat_listeners_turn_tcp_keepalive_on_for_accepted_sockets() {
    use sockit::net::{Listener, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_RETRIES};
    let addr: Addr = "127.0.0.1:0".parse().expect("addr");
    let listener = Listener::bind(&addr, &chat::bind_options())
        .await
        .expect("bind");
    let bound = listener.local_addr().expect("local addr");
    let (client, accepted) = tokio::join!(Stream::connect(&bound), listener.accept());
    let (_client, (accepted, _peer)) = (client.expect("connect"), accepted.expect("accept"));
    let Stream::Tcp(accepted) = &accepted else {
        panic!("expected TCP, got {accepted:?}")
    };
    let sock = socket2::SockRef::from(accepted);
    assert!(sock.keepalive().expect("SO_KEEPALIVE"));
    assert_eq!(sock.keepalive_time().expect("idle"), KEEPALIVE_IDLE);
    assert_eq!(
        sock.keepalive_interval().expect("interval"),
        KEEPALIVE_INTERVAL
    );
    assert_eq!(
        sock.keepalive_retries().expect("retries"),
        KEEPALIVE_RETRIES
    );
}

#[tokio::test]
async fn the_line_port_marks_notices_so_users_cannot_forge_them() {
    let chat = start_chat().await;
    let mut carol = LineClient::connect(&chat.line.addr).await;
    carol.send("Server").await;
    carol
        .expect("! the nicks server, system, admin and sockit")
        .await;
    carol.send("carol").await;
    carol.expect("*** carol joined #lobby").await;
    let mut bob = LineClient::join(&chat.line.addr, "bob").await;
    carol.send("/me joined #lobby").await;
    carol.send(" \t ").await;
    carol.send("/nick carol").await;
    carol.expect("*** you are already carol").await;
    carol.send("done").await;
    // What bob sees from carol: the action, unmistakable for a notice, then "done"; the
    // blank line and the non-change were sent to nobody.
    assert_eq!(bob.expect("carol").await, "* carol joined #lobby");
    assert_eq!(bob.expect("carol").await, "<carol> done");
}
