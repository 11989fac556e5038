//! `sockit chat join` as the built binary when the server goes away: it exits non-zero at
//! once, with stdin a pipe and with stdin a terminal (a pty), never waiting for Enter.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{sockit, start, TestServer, TEST_TIMEOUT};
use sockit::engine::Config;
use sockit::service::chat::{
    self, Broker, BrokerConfig, ChatServer, ChatService, FramedConfig, LineConfig, LineServer,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

async fn start_chat() -> TestServer {
    let broker = Broker::new(BrokerConfig::default());
    let engine = Config {
        idle_timeout: None,
        ..Config::default()
    };
    let service = ChatService::new(broker, FramedConfig::default());
    start(ChatServer::new(chat::gate(None), service), engine).await
}

/// Lines of `from`, forwarded to a channel so waits can be bounded.
fn lines_of(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {needle:?}; saw {seen:?}"),
        }
    }
}

/// Waits (bounded) for `child` to exit on its own; its exit code.
fn exit_code(mut child: Child) -> i32 {
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chat join did not exit after the server went away");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_join_exits_non_zero_when_the_server_goes_away() {
    let server = start_chat().await;
    let mut cmd = sockit();
    cmd.args(["chat", "join", &server.addr.to_string(), "--nick", "piped"])
        .env_remove("SOCKIT_TOKEN")
        // stdin stays open: the session ends only because the server goes.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let mut stderr = child.stderr.take().expect("stderr");
    tokio::task::spawn_blocking(move || wait_line(&out, "you are piped"))
        .await
        .expect("joined");
    server.stop().await.expect("server stops");
    let code = tokio::task::spawn_blocking(move || exit_code(child))
        .await
        .expect("waited");
    let mut err = String::new();
    stderr.read_to_string(&mut err).expect("stderr");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the server closed the connection"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_join_on_a_terminal_does_not_wait_for_enter_when_the_server_goes_away() {
    let server = start_chat().await;
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
    cmd.args(["chat", "join", &server.addr.to_string(), "--nick", "tty"])
        .env_remove("SOCKIT_TOKEN")
        .env("TERM", "xterm")
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave.try_clone().expect("dup"));
    let child = cmd.spawn().expect("spawn");
    drop(cmd);
    let master = std::fs::File::from(pty.master);
    let out = lines_of(master.try_clone().expect("dup"));
    tokio::task::spawn_blocking(move || wait_line(&out, "you are"))
        .await
        .expect("joined");
    // Nothing is typed from here on: no Enter.
    server.stop().await.expect("server stops");
    let code = tokio::task::spawn_blocking(move || exit_code(child))
        .await
        .expect("waited");
    assert_eq!(code, 1);
    // The line editor's raw mode was undone on the way out.
    use nix::sys::termios::{tcgetattr, LocalFlags};
    let local = tcgetattr(&slave).expect("tcgetattr").local_flags;
    assert!(
        local.contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "{local:?}"
    );
    drop(master);
}

/// Everything read from `from` so far, gathered by a thread, so waits can be bounded.
fn output_of(from: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut from = from;
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_output(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut Vec<u8>, needle: &str) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    while !String::from_utf8_lossy(seen).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend_from_slice(&chunk),
            Err(_) => panic!("no {needle:?} in {:?}", String::from_utf8_lossy(seen)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasted_escape_sequences_reach_the_line_editor_as_visible_text() {
    let broker = Broker::new(BrokerConfig::default());
    let engine = Config {
        idle_timeout: None,
        ..Config::default()
    };
    let service = ChatService::new(broker.clone(), FramedConfig::default());
    let framed = start(ChatServer::new(chat::gate(None), service), engine.clone()).await;
    let line = start(LineServer::new(broker, LineConfig::default()), engine).await;
    let watcher = tokio::net::TcpStream::connect(line.addr.to_string())
        .await
        .expect("connect");
    let (rd, mut wr) = watcher.into_split();
    let mut watched = tokio::io::BufReader::new(rd).lines();
    wr.write_all(b"watcher\n").await.expect("nick");

    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
    cmd.args(["chat", "join", &framed.addr.to_string(), "--nick", "tty"])
        .env_remove("SOCKIT_TOKEN")
        .env("TERM", "xterm")
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    let mut child = cmd.spawn().expect("spawn");
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let out = output_of(master.try_clone().expect("dup"));
    let mut seen = Vec::new();
    // The prompt: the editor is reading.
    let seen = tokio::task::spawn_blocking(move || {
        wait_output(&out, &mut seen, "> ");
        seen
    })
    .await
    .expect("prompt");
    // A paste, as a terminal sends it with bracketed paste on, then Enter.
    std::io::Write::write_all(&mut master, b"\x1b[200~hi \x1b[31mred\x1b[201~\r").expect("type");
    let said = tokio::time::timeout(TEST_TIMEOUT, async {
        while let Ok(Some(line)) = watched.next_line().await {
            if line.starts_with("<tty>") {
                return line;
            }
        }
        String::new()
    })
    .await
    .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        said,
        "<tty> hi \\x1b[31mred",
        "terminal showed {:?}",
        String::from_utf8_lossy(&seen)
    );
}
