//! `sockit chat` with real peers: `nc`, a Python socket client, and the `sockit chat join`
//! binary with piped stdin. Each waits on received lines, bounded by TEST_TIMEOUT.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::{have, port, run_with_input, sockit, start, Proc, TEST_TIMEOUT};
use sockit::engine::Config;
use sockit::net::Addr;
use sockit::service::chat::{
    self as chat, Broker, BrokerConfig, ChatServer, ChatService, FramedConfig, LineConfig,
    LineServer,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::TcpStream;

/// Starts framed and line listeners on one broker; returns (framed, line) addresses.
async fn start_chat() -> (common::TestServer, common::TestServer) {
    let broker = Broker::new(BrokerConfig::default());
    let engine = Config {
        idle_timeout: None,
        ..Config::default()
    };
    let framed = start(
        ChatServer::new(
            chat::gate(None),
            ChatService::new(broker.clone(), FramedConfig::default()),
        ),
        engine.clone(),
    )
    .await;
    let line = start(LineServer::new(broker, LineConfig::default()), engine).await;
    (framed, line)
}

/// An in-process line client that joins as `watcher`.
struct Watcher {
    lines: tokio::io::Lines<TokioBufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Watcher {
    async fn join(addr: &Addr) -> Watcher {
        let stream = TcpStream::connect(addr.to_string()).await.expect("connect");
        let (rd, writer) = stream.into_split();
        let mut watcher = Watcher {
            lines: TokioBufReader::new(rd).lines(),
            writer,
        };
        watcher.say("watcher").await;
        watcher.expect("* watcher joined #lobby").await;
        watcher
    }

    async fn say(&mut self, line: &str) {
        let line = format!("{line}\n");
        self.writer.write_all(line.as_bytes()).await.expect("send");
    }

    async fn expect(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(TEST_TIMEOUT, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        found
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no line with {needle:?}"))
    }
}

/// Forwards a child's stdout lines to a channel, so tests can wait with a timeout.
fn stdout_lines(proc: &mut Proc) -> mpsc::Receiver<String> {
    let stdout = proc.child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(_) => panic!("no line with {needle:?} from the child"),
        }
    }
}

#[tokio::test]
async fn nc_joins_and_talks_with_other_clients() {
    if !have("nc", "nc_joins_and_talks_with_other_clients") {
        return;
    }
    let (_framed, line) = start_chat().await;
    let mut watcher = Watcher::join(&line.addr).await;
    let mut cmd = Command::new("nc");
    cmd.args(["127.0.0.1", &port(&line.addr).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut nc = Proc::spawn(cmd);
    let out = stdout_lines(&mut nc);
    let mut stdin = nc.child.stdin.take().expect("stdin piped");
    stdin.write_all(b"ncuser\nhello from nc\n").expect("write");
    stdin.flush().expect("flush");
    watcher.expect("<ncuser> hello from nc").await;
    watcher.say("hi nc").await;
    tokio::task::spawn_blocking(move || wait_line(&out, "<watcher> hi nc"))
        .await
        .expect("nc saw the reply");
}

#[tokio::test]
async fn a_python_socket_client_joins_and_talks() {
    if !have("python3", "a_python_socket_client_joins_and_talks") {
        return;
    }
    let (_framed, line) = start_chat().await;
    let mut watcher = Watcher::join(&line.addr).await;
    let script = format!(
        r#"
import socket
s = socket.create_connection(("127.0.0.1", {port}))
f = s.makefile("rb")
f.readline()
s.sendall(b"py\n")
while b"joined" not in f.readline():
    pass
s.sendall("h\u00e9llo from python \x1b[2J\n".encode())
for line in f:
    if b"<watcher> bye py" in line:
        print(line.decode().strip())
        break
"#,
        port = port(&line.addr)
    );
    let python = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", &script]);
        run_with_input(cmd, b"")
    });
    watcher.expect("<py> héllo from python \\x1b[2J").await;
    watcher.say("bye py").await;
    let (code, stdout, stderr) = python.await.expect("python ran");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(String::from_utf8_lossy(&stdout).trim(), "<watcher> bye py");
}

#[tokio::test]
async fn sockit_chat_join_reads_stdin_and_prints_what_it_receives() {
    let (framed, line) = start_chat().await;
    let mut watcher = Watcher::join(&line.addr).await;
    let addr = framed.addr.to_string();
    let join = tokio::task::spawn_blocking(move || {
        let mut cmd = sockit();
        cmd.args(["chat", "join", &addr, "--nick", "cli"]);
        run_with_input(cmd, b"hello from cli\n/me waves\n/bogus\n/quit\n")
    });
    watcher.expect("<cli> hello from cli").await;
    watcher.expect("* cli waves").await;
    let (code, stdout, stderr) = join.await.expect("sockit ran");
    let stdout = String::from_utf8_lossy(&stdout);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("*** you are cli in #lobby"), "{stdout}");
    assert!(stdout.contains("<cli> hello from cli"), "{stdout}");
    assert!(stdout.contains("*** bye"), "{stdout}");
    assert!(stderr.contains("! unknown command /bogus"), "{stderr}");
    // No colour codes when stdout is not a terminal.
    assert!(!stdout.contains('\x1b'), "{stdout}");
}

#[tokio::test]
async fn sockit_chat_join_with_a_taken_nick_fails_with_a_suggestion() {
    let (framed, line) = start_chat().await;
    let _watcher = Watcher::join(&line.addr).await;
    let addr = framed.addr.to_string();
    let (code, _, stderr) = tokio::task::spawn_blocking(move || {
        let mut cmd = sockit();
        cmd.args(["chat", "join", &addr, "--nick", "WATCHER"]);
        run_with_input(cmd, b"")
    })
    .await
    .expect("sockit ran");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("nick WATCHER is taken (too close to watcher); try WATCHER_2"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sockit_serve_runs_chat_with_a_line_port_on_one_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "[[service]]\nkind = \"chat\"\nlisten = \"127.0.0.1:0\"\nline-listen = \"127.0.0.1:0\"\n",
    )
    .expect("write config");
    let mut cmd = sockit();
    cmd.args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped());
    let mut serve = Proc::spawn(cmd);
    let out = stdout_lines(&mut serve);
    let (line_addr, framed_addr) = tokio::task::spawn_blocking(move || {
        let addr = |l: String| l.split_whitespace().last().unwrap_or_default().to_string();
        // The banner lists the framed port, then the line port.
        let framed = addr(wait_line(&out, " tcp "));
        let line = addr(wait_line(&out, " line "));
        (line, framed)
    })
    .await
    .expect("banner");
    let reply = plain_text_reply(&framed_addr).await;
    assert!(
        reply.contains(&format!("use the line port {line_addr}")),
        "{reply:?}"
    );
    let mut watcher = Watcher::join(&line_addr.parse().expect("addr")).await;
    let join = tokio::task::spawn_blocking(move || {
        let mut cmd = sockit();
        cmd.args(["chat", "join", &framed_addr, "--nick", "framed"]);
        run_with_input(cmd, b"across the set\n")
    });
    watcher.expect("<framed> across the set").await;
    let (code, _, stderr) = join.await.expect("sockit ran");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serve.terminate().code(), Some(0));
}

/// What a framed port answers a line of text (`nc` typing "hi"): its one line, up to EOF.
async fn plain_text_reply(framed: &str) -> String {
    let mut stream = TcpStream::connect(framed).await.expect("connect");
    stream.write_all(b"hi\n").await.expect("send");
    let mut reply = Vec::new();
    tokio::time::timeout(
        TEST_TIMEOUT,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut reply),
    )
    .await
    .expect("the server answers and closes")
    .expect("read");
    String::from_utf8(reply).expect("text")
}

#[tokio::test]
async fn nc_at_chat_serves_framed_port_is_told_the_actual_line_port() {
    let mut cmd = sockit();
    cmd.args([
        "chat",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--line-listen",
        "127.0.0.1:0",
    ])
    .env_remove("SOCKIT_TOKEN");
    let serve = Proc::spawn(cmd);
    // The framed listener is announced first, then the line port.
    let (framed, line, mut serve) = tokio::task::spawn_blocking(move || {
        let mut serve = serve;
        let framed = serve.listening_addr();
        let line = serve.listening_addr();
        (framed, line, serve)
    })
    .await
    .expect("both listeners");
    let reply = plain_text_reply(&framed).await;
    assert!(
        reply.starts_with("error: this port speaks sockit's framed protocol (service chat)")
            && reply.ends_with(&format!("use the line port {line}\n")),
        "{reply:?}"
    );
    assert_eq!(serve.terminate().code(), Some(0));
}
