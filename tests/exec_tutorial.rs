//! `exec --compat tutorial`: the lessons' own Python client and server (written here) against
//! the built binary, and the server's bounds in-process through the library client.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{have, sockit, start, Proc, TEST_TIMEOUT};
use sockit::compat::exec::{self as compat, CompatConfig, CompatError, CompatServer, Reply};
use sockit::compat::Dialect;
use sockit::engine::Config;
use sockit::net::Addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

/// The lesson's client, unchanged in substance: send a command, read the 4-byte
/// `struct.pack("i")` length, the JSON header, then `total_size` bytes. Prints one JSON line
/// per command so the test can check header and body.
const LESSON_CLIENT: &str = r#"
import json, socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect((host, port))
for cmd in sys.argv[3:]:
    client.send(cmd.encode("utf-8"))
    header_len = struct.unpack("i", client.recv(4))[0]
    header = json.loads(client.recv(header_len).decode("utf-8"))
    total_size = header["total_size"]
    recv_size = 0
    data = b""
    while recv_size < total_size:
        chunk = client.recv(1024)
        recv_size += len(chunk)
        data += chunk
    print(json.dumps({"header": header, "body": data.decode("utf-8")}), flush=True)
client.close()
"#;

/// The lesson's server: `subprocess` with `shell=True`, stdout then stderr, the header packed
/// with `struct.pack("i")`. argv[1] picks the digest (`sha256`, `md5`, or `wrong`).
const LESSON_SERVER: &str = r#"
import hashlib, json, socket, struct, subprocess, sys
algo = sys.argv[1]
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(5)
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    while True:
        cmd = conn.recv(1024)
        if not cmd:
            break
        res = subprocess.run(cmd.decode("utf-8"), shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        body = res.stdout + res.stderr
        if algo == "md5":
            digest = hashlib.md5(body).hexdigest()
        elif algo == "wrong":
            digest = hashlib.sha256(body + b"x").hexdigest()
        else:
            digest = hashlib.sha256(body).hexdigest()
        header = json.dumps({"filename": cmd.decode("utf-8"), "total_size": len(body), "hash": digest}).encode("utf-8")
        conn.send(struct.pack("i", len(header)))
        conn.send(header)
        conn.sendall(body)
    conn.close()
"#;

fn python(test: &str) -> bool {
    have("python3", test)
}

/// `sockit exec serve --compat tutorial` on a free loopback port; returns it and its address.
fn start_tutorial_binary() -> (Proc, String) {
    let mut cmd = sockit();
    cmd.args([
        "exec",
        "serve",
        "--compat",
        "tutorial",
        "--listen",
        "127.0.0.1:0",
    ])
    .stdout(Stdio::null());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    (server, addr)
}

/// Runs the lesson's client against `addr` with `commands`; returns one JSON value per command.
fn lesson_client(addr: &str, commands: &[&str]) -> Vec<serde_json::Value> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("python3")
        .args(["-c", LESSON_CLIENT, host, port])
        .args(commands)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "lesson client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Starts the lesson's server with digest `algo`; returns it and its address.
fn start_lesson_server(algo: &str) -> (Proc, String) {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", LESSON_SERVER, algo]).stdout(Stdio::piped());
    let mut server = Proc::spawn(cmd);
    let mut port = String::new();
    BufReader::new(server.child.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    (server, format!("127.0.0.1:{}", port.trim()))
}

fn exec_run_tutorial(addr: &str, command: &[&str]) -> (i32, String, String) {
    let out = sockit()
        .args([
            "exec",
            "run",
            "--compat",
            "tutorial",
            "--timeout",
            "10s",
            addr,
            "--",
        ])
        .args(command)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn the_lessons_python_client_gets_stdout_then_stderr_with_a_sha256() {
    if !python("the_lessons_python_client_gets_stdout_then_stderr_with_a_sha256") {
        return;
    }
    let (_server, addr) = start_tutorial_binary();
    let replies = lesson_client(&addr, &["echo out; echo err >&2; exit 3"]);
    let body = "out\nerr\n";
    assert_eq!(replies[0]["body"], body);
    let header = &replies[0]["header"];
    assert_eq!(header["filename"], "echo out; echo err >&2; exit 3");
    assert_eq!(header["total_size"], body.len());
    assert_eq!(header["hash"], sha256_hex(body.as_bytes()));
}

#[test]
fn one_connection_runs_several_commands_and_silence_has_total_size_zero() {
    if !python("one_connection_runs_several_commands_and_silence_has_total_size_zero") {
        return;
    }
    let (_server, addr) = start_tutorial_binary();
    let replies = lesson_client(&addr, &["true", "echo second"]);
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0]["header"]["total_size"], 0);
    assert_eq!(replies[0]["header"]["hash"], sha256_hex(b""));
    assert_eq!(replies[0]["body"], "");
    assert_eq!(replies[1]["body"], "second\n");
}

#[test]
fn sockit_run_talks_to_the_lessons_python_server() {
    if !python("sockit_run_talks_to_the_lessons_python_server") {
        return;
    }
    let (_server, addr) = start_lesson_server("sha256");
    let (code, stdout, stderr) = exec_run_tutorial(&addr, &["echo", "out;", "echo err >&2"]);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout, "out\nerr\n");
    let (code, stdout, _) = exec_run_tutorial(&addr, &["true"]);
    assert_eq!((code, stdout.as_str()), (0, ""));
}

#[test]
fn sockit_run_rejects_a_wrong_hash_and_notes_an_unchecked_md5() {
    if !python("sockit_run_rejects_a_wrong_hash_and_notes_an_unchecked_md5") {
        return;
    }
    let (_wrong, addr) = start_lesson_server("wrong");
    let (code, _, stderr) = exec_run_tutorial(&addr, &["echo", "hi"]);
    assert_eq!(code, 255);
    assert!(stderr.contains("does not match its hash"), "{stderr}");
    let (_md5, addr) = start_lesson_server("md5");
    let (code, stdout, stderr) = exec_run_tutorial(&addr, &["echo", "hi"]);
    assert_eq!((code, stdout.as_str()), (0, "hi\n"));
    assert!(stderr.contains("not SHA-256"), "{stderr}");
}

#[test]
fn the_tutorial_server_is_refused_beyond_loopback() {
    for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:7008"] {
        let out = sockit()
            .args(["exec", "serve", "--compat", "tutorial", "--listen", listen])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{listen}: {stderr}");
        assert!(stderr.contains("no authentication"), "{stderr}");
    }
}

#[test]
fn sockit_run_against_nothing_exits_255() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (code, _, stderr) = exec_run_tutorial(&addr, &["true"]);
    assert_eq!(code, 255, "{stderr}");
}

async fn start_in_process(config: CompatConfig) -> common::TestServer {
    let engine = Config {
        service: "exec-compat".into(),
        ..Config::default()
    };
    start(CompatServer::new(Dialect::StructJson, config), engine).await
}

/// The library's one-shot struct-json client.
async fn run_tutorial(addr: &Addr, line: &str, out: &mut Vec<u8>) -> Result<Reply, CompatError> {
    compat::run(addr, Dialect::StructJson, line, out, TEST_TIMEOUT).await
}

#[tokio::test]
async fn output_over_the_cap_is_truncated_with_a_note_and_the_server_still_serves() {
    let config = CompatConfig {
        max_output_bytes: 1000,
        ..CompatConfig::default()
    };
    let server = start_in_process(config).await;
    let mut out = Vec::new();
    let reply = timeout(TEST_TIMEOUT, run_tutorial(&server.addr, "yes", &mut out))
        .await
        .unwrap()
        .expect("a reply");
    assert!(reply.verified);
    assert_eq!(&out[..1000], "y\n".repeat(500).as_bytes());
    let note = String::from_utf8_lossy(&out[1000..]);
    assert!(note.contains("truncated at 1000 bytes"), "{note}");
    let mut out = Vec::new();
    run_tutorial(&server.addr, "echo next", &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"next\n");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_command_past_the_timeout_is_killed_with_its_group() {
    let config = CompatConfig {
        timeout: Duration::from_millis(300),
        ..CompatConfig::default()
    };
    let server = start_in_process(config).await;
    let mut out = Vec::new();
    // The background sleep holds stdout open: only killing the group ends the reply.
    let line = "echo started; sleep 30 & sleep 30";
    run_tutorial(&server.addr, line, &mut out)
        .await
        .expect("a reply");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("started\n"), "{text}");
    assert!(text.contains("killed after"), "{text}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_overlong_or_empty_command_is_refused_by_the_client() {
    let addr = "127.0.0.1:9".parse().unwrap();
    let long = "x".repeat(1025);
    for line in [long.as_str(), "  \n"] {
        let err = run_tutorial(&addr, line, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, CompatError::InvalidCommand(_)), "{err}");
    }
}

#[tokio::test]
async fn a_reply_cut_short_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string().parse().unwrap();
    let fake = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        // Read the command first: closing with it unread would reset the connection.
        let _ = conn.read(&mut [0u8; 64]).await.unwrap();
        let header = br#"{"filename": "x", "total_size": 10, "hash": ""}"#;
        let mut reply = (header.len() as i32).to_ne_bytes().to_vec();
        reply.extend_from_slice(header);
        reply.extend_from_slice(b"abc");
        conn.write_all(&reply).await.unwrap();
    });
    let err = timeout(TEST_TIMEOUT, run_tutorial(&addr, "x", &mut Vec::new()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, CompatError::Closed { .. }), "{err}");
    fake.await.unwrap();
}

/// Runs `true` through the framed exec client at `addr`; the error it fails with.
async fn framed_run_error(addr: &sockit::net::Addr) -> sockit::service::exec::ExecError {
    let token = sockit::session::Token::generate().unwrap();
    let (_signals, rx) = tokio::sync::mpsc::channel(1);
    let request = common::argv_request(&["true"]);
    let ran = common::run_exec(addr, None, &token, &request, b"", rx).await;
    ran.outcome
        .expect_err("a framed client cannot run a command there")
}

#[tokio::test]
async fn each_protocol_at_the_others_port_is_told_plainly() {
    // The tutorial client at a framed exec port: a line of 4 bytes or more is answered in text
    // at once.
    let (framed, _) = common::start_exec(sockit::service::exec::ExecConfig::default()).await;
    match run_tutorial(&framed.addr, "echo hi", &mut Vec::new()).await {
        Err(e @ CompatError::NotThisDialect { .. }) => {
            let text = e.to_string();
            assert!(text.contains("expected a struct-json reply"), "{text}");
            assert!(text.contains("framed protocol"), "{text}");
        }
        other => panic!("expected plain text, got {other:?}"),
    }
    // The framed client at a tutorial port (which runs whatever it is sent).
    let tutorial = start_in_process(CompatConfig::default()).await;
    let err = framed_run_error(&tutorial.addr).await;
    assert_eq!(err.code(), "not_sockit", "{err}");
    assert!(err.to_string().contains("--compat tutorial"), "{err}");
    // And at an echo server, which sends the greeting back.
    let echo = start(sockit::service::echo::Echo::default(), Config::default()).await;
    let err = framed_run_error(&echo.addr).await;
    assert_eq!(err.code(), "not_sockit", "{err}");
    assert!(err.to_string().contains("echo server"), "{err}");
}
