//! `exec --compat DIALECT`: for each of the lessons' dialects, a small Python client and server
//! written here from the protocol's description, against the built binary's server, `exec run`
//! and `exec shell` (issue 16). `struct-json` (`tutorial`) has its own file, exec_tutorial.rs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{have, run_with_input, sockit, Proc, TEST_TIMEOUT};
use sockit::compat::exec::{self as compat, CompatError};
use sockit::compat::Dialect;

/// A lesson-style client: argv is HOST PORT DIALECT ACK CMD...; each reply's output is printed
/// as one JSON string per line (`repr` of the bytes via latin-1).
const CLIENT: &str = r#"
import json, socket, struct, sys
host, port, dialect, ack = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
c.connect((host, port))
def exactly(n):
    data = b""
    while len(data) < n:
        chunk = c.recv(1024)
        if not chunk:
            raise SystemExit("closed early")
        data += chunk
    return data
for cmd in sys.argv[5:]:
    c.send(cmd.encode())
    if dialect == "raw":
        out = c.recv(1024)
    elif dialect == "length-text-ack":
        n = int(c.recv(1024))
        c.send(ack.encode())
        out = exactly(n)
    elif dialect == "length":
        n = struct.unpack("i", c.recv(4))[0]
        out = exactly(n)
    elif dialect == "length-text":
        # 002 §1.5's server glues the digits and the output: show the bytes as they are.
        c.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = c.recv(1024)
            if not chunk:
                break
            out += chunk
    print(json.dumps(out.decode("latin-1")), flush=True)
c.close()
"#;

/// A lesson-style server: argv is DIALECT CONNECTIONS; serves that many connections, each
/// command run with the shell, then exits. Prints its port first.
const SERVER: &str = r#"
import socket, struct, subprocess, sys
dialect, conns = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(5)
print(s.getsockname()[1], flush=True)
for _ in range(conns):
    conn, _ = s.accept()
    while True:
        cmd = conn.recv(1024)
        if not cmd:
            break
        p = subprocess.run(cmd.decode(), shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if dialect == "raw":
            conn.send(p.stdout)
            conn.send(p.stderr)
        elif dialect == "length-text-ack":
            ret = p.stdout or p.stderr
            conn.send(str(len(ret)).encode())
            if conn.recv(1024) == b"recv_ready":
                conn.sendall(ret)
        elif dialect == "length-text":
            ret = p.stdout or b"cmd has no output..."
            conn.send(str(len(ret)).encode())
            conn.send(ret)
        elif dialect == "length-text-glued":
            # What TCP makes of 002 §1.5's two sends when they coalesce, sent as one so a
            # test of that case does not depend on the scheduler.
            ret = p.stdout or b"cmd has no output..."
            conn.sendall(str(len(ret)).encode() + ret)
        elif dialect == "length":
            res = p.stdout + p.stderr
            conn.send(struct.pack("i", len(res)))
            conn.send(res)
    conn.close()
"#;

fn python(test: &str) -> bool {
    have("python3", test)
}

/// `sockit exec serve --compat DIALECT` on a free loopback port.
fn start_sockit(dialect: &str) -> (Proc, String) {
    let mut cmd = sockit();
    cmd.args([
        "exec",
        "serve",
        "--compat",
        dialect,
        "--listen",
        "127.0.0.1:0",
    ])
    .stdout(Stdio::null());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    (server, addr)
}

/// The Python server for `dialect`, serving `conns` connections.
fn start_python(dialect: &str, conns: usize) -> (Proc, String) {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", SERVER, dialect, &conns.to_string()])
        .stdout(Stdio::piped());
    let mut server = Proc::spawn(cmd);
    let mut port = String::new();
    BufReader::new(server.child.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    (server, format!("127.0.0.1:{}", port.trim()))
}

/// Runs the Python client; returns each reply's output.
fn python_client(addr: &str, dialect: &str, ack: &str, commands: &[&str]) -> Vec<String> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", CLIENT, host, port, dialect, ack])
        .args(commands);
    let (code, stdout, stderr) = run_with_input(cmd, b"");
    assert_eq!(code, 0, "python client: {stderr}");
    String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `sockit exec run --compat DIALECT ADDR -- LINE`: (exit code, stdout, stderr).
fn exec_run(dialect: &str, addr: &str, line: &str, timeout: &str) -> (i32, String, String) {
    let mut cmd = sockit();
    cmd.args([
        "exec",
        "run",
        "--compat",
        dialect,
        "--timeout",
        timeout,
        addr,
        "--",
        line,
    ]);
    let (code, out, err) = run_with_input(cmd, b"");
    (code, String::from_utf8_lossy(&out).into_owned(), err)
}

/// `sockit exec shell --compat DIALECT ADDR` with `lines` on stdin.
fn exec_shell(dialect: &str, addr: &str, lines: &str) -> (i32, String, String) {
    let mut cmd = sockit();
    cmd.args([
        "exec",
        "shell",
        "--compat",
        dialect,
        "--timeout",
        "5s",
        addr,
    ]);
    let (code, out, err) = run_with_input(cmd, lines.as_bytes());
    (code, String::from_utf8_lossy(&out).into_owned(), err)
}

#[test]
fn raw_sends_stdout_then_stderr_with_no_header_both_ways() {
    if !python("raw_sends_stdout_then_stderr_with_no_header_both_ways") {
        return;
    }
    let (_server, addr) = start_sockit("raw");
    let got = python_client(&addr, "raw", "", &["echo out; echo err >&2", "echo again"]);
    assert_eq!(got, ["out\nerr\n", "again\n"]);
    let (_python, addr) = start_python("raw", 1);
    let (code, stdout, stderr) = exec_run("raw", &addr, "echo err >&2; echo out", "5s");
    assert_eq!((code, stdout.as_str()), (0, "out\nerr\n"), "{stderr}");
}

#[test]
fn length_text_ack_waits_for_the_ack_and_sends_stdout_or_else_stderr() {
    if !python("length_text_ack_waits_for_the_ack_and_sends_stdout_or_else_stderr") {
        return;
    }
    let (_server, addr) = start_sockit("length-text-ack");
    // 000 §6.1's client acknowledges with `recv_ready`, 002 §1.7's with anything.
    for ack in ["recv_ready", "1"] {
        let got = python_client(
            &addr,
            "length-text-ack",
            ack,
            &["echo out; echo err >&2", "echo err >&2", "true"],
        );
        assert_eq!(got, ["out\n", "err\n", ""], "ack {ack}");
    }
    // 000 §6.1's server sends the output only after exactly `recv_ready`.
    let (_python, addr) = start_python("length-text-ack", 1);
    let (code, stdout, stderr) = exec_run("length-text-ack", &addr, "seq 1000", "5s");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1000);
}

#[test]
fn length_text_sends_its_length_glued_to_the_output_as_002_1_5_does() {
    if !python("length_text_sends_its_length_glued_to_the_output_as_002_1_5_does") {
        return;
    }
    let (_server, addr) = start_sockit("length-text");
    let got = python_client(&addr, "length-text", "", &["echo hello"]);
    assert_eq!(got, ["6hello\n"]);
}

#[test]
fn the_length_text_client_gets_the_whole_output_even_when_it_starts_with_digits() {
    if !python("the_length_text_client_gets_the_whole_output_even_when_it_starts_with_digits") {
        return;
    }
    let (_python, addr) = start_python("length-text", 3);
    for (line, want) in [
        ("seq 3", "1\n2\n3\n"),
        ("echo hello", "hello\n"),
        ("true", "cmd has no output..."),
    ] {
        let (code, stdout, stderr) = exec_run("length-text", &addr, line, "5s");
        assert_eq!((code, stdout.as_str()), (0, want), "{line}: {stderr}");
    }
}

#[test]
fn length_is_a_bare_native_i32_then_stdout_and_stderr_printed_as_bytes() {
    if !python("length_is_a_bare_native_i32_then_stdout_and_stderr_printed_as_bytes") {
        return;
    }
    let (_server, addr) = start_sockit("length");
    let got = python_client(&addr, "length", "", &["echo out; echo err >&2", "true"]);
    assert_eq!(got, ["out\nerr\n", ""]);
    // Bytes that are not UTF-8 (the lesson's client decodes GBK) come out as they are.
    let (_python, addr) = start_python("length", 1);
    let mut cmd = sockit();
    cmd.args([
        "exec",
        "run",
        "--compat",
        "length",
        "--timeout",
        "5s",
        &addr,
        "--",
    ])
    .arg(r"printf '\304\343\272\303'");
    let (code, stdout, stderr) = run_with_input(cmd, b"");
    assert_eq!(
        (code, stdout.as_slice()),
        (0, &b"\xc4\xe3\xba\xc3"[..]),
        "{stderr}"
    );
}

#[test]
fn exec_shell_runs_every_line_over_one_connection_in_each_dialect() {
    if !python("exec_shell_runs_every_line_over_one_connection_in_each_dialect") {
        return;
    }
    for dialect in ["length-text-ack", "length-text", "length", "raw"] {
        // The server serves one connection and exits, as 000 §6.2's dies with its client.
        let (_python, addr) = start_python(dialect, 1);
        let (code, stdout, stderr) = exec_shell(dialect, &addr, "echo one\necho two\necho three\n");
        assert_eq!(code, 0, "{dialect}: {stderr}");
        assert_eq!(stdout, "one\ntwo\nthree\n", "{dialect}: {stderr}");
    }
    let (_sockit, addr) = start_sockit("struct-json");
    let (code, stdout, stderr) = exec_shell("tutorial", &addr, "echo one\nexit 3\necho never\n");
    assert_eq!((code, stdout.as_str()), (3, "one\n"), "{stderr}");
}

#[test]
fn a_reply_in_another_dialect_is_named_with_what_came() {
    if !python("a_reply_in_another_dialect_is_named_with_what_came") {
        return;
    }
    // Glued into one segment: sent as two, a reader may see the length alone first, and then
    // nothing tells an acknowledging client it is not talking to an acknowledging server.
    let (_python, addr) = start_python("length-text-glued", 1);
    let (code, _, stderr) = exec_run("length-text-ack", &addr, "echo hello", "5s");
    assert_eq!(code, 255, "{stderr}");
    assert!(
        stderr.contains("expected a length-text-ack reply"),
        "{stderr}"
    );
    assert!(stderr.contains("a length-text server?"), "{stderr}");
    let (_sockit, addr) = start_sockit("length-text-ack");
    let (code, _, stderr) = exec_run("struct-json", &addr, "echo hello", "1s");
    assert_eq!(code, 255, "{stderr}");
    assert!(stderr.contains("no complete struct-json reply"), "{stderr}");
    assert!(stderr.contains("waiting for its ack"), "{stderr}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_with_a_message() {
    // Never accepted: connections complete in the backlog and hear nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string().parse().unwrap();
    for dialect in Dialect::ALL {
        let err = tokio::time::timeout(
            TEST_TIMEOUT,
            compat::run(
                &addr,
                dialect,
                "echo hi",
                Vec::new(),
                Duration::from_millis(300),
            ),
        )
        .await
        .expect("the client's own deadline ends it");
        match err {
            Err(CompatError::Timeout { got, .. }) => assert_eq!(got, "nothing"),
            other => panic!("{dialect}: {other:?}"),
        }
    }
    drop(listener);
    assert!(compat::DEFAULT_CLIENT_TIMEOUT > compat::DEFAULT_COMMAND_TIMEOUT);
}

#[test]
fn every_dialect_is_refused_beyond_loopback() {
    for dialect in [
        "raw",
        "length-text-ack",
        "length-text",
        "length",
        "struct-json",
    ] {
        let out = sockit()
            .args([
                "exec",
                "serve",
                "--compat",
                dialect,
                "--listen",
                "0.0.0.0:0",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dialect}: {stderr}");
        assert!(
            stderr.contains(&format!("--compat {dialect} has no authentication")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_client_that_leaves_instead_of_acknowledging_does_not_stop_the_server() {
    use sockit::compat::exec::{CompatConfig, CompatServer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = common::start(
        CompatServer::new(Dialect::LengthTextAck, CompatConfig::default()),
        sockit::engine::Config::default(),
    )
    .await;
    let mut rude = sockit::net::Stream::connect(&server.addr).await.unwrap();
    rude.write_all(b"echo hello").await.unwrap();
    let mut digits = [0u8; 16];
    let n = tokio::time::timeout(TEST_TIMEOUT, rude.read(&mut digits))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&digits[..n], b"6");
    drop(rude);
    let mut out = Vec::new();
    compat::run(
        &server.addr,
        Dialect::LengthTextAck,
        "echo next",
        &mut out,
        TEST_TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(out, b"next\n");
    server.stop().await.unwrap();
}
