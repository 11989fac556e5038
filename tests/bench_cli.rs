//! `sockit bench` run as the built binary against servers that refuse, close or limit: a load
//! that failed exits 1 with the reason in the table (not only in --json), and the run keeps
//! to its duration.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_with_input, sockit, Proc};

/// The bench's own limit on one operation: a run that honours its duration ends well before.
const BENCH_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `cmd` to its end (bounded); returns (exit code, stdout, stderr, how long it ran).
fn run(cmd: Command) -> (i32, String, String, Duration) {
    let started = Instant::now();
    let (code, out, err) = run_with_input(cmd, b"");
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        err,
        started.elapsed(),
    )
}

/// A TCP server on port 0 that accepts each connection and does `each` with it, in a thread
/// for the rest of the test process.
fn server(each: fn(std::net::TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || each(stream));
        }
    });
    addr
}

/// Accepts and closes at once, as a server at its limit or of another kind may.
fn closing_server() -> String {
    server(drop)
}

/// Echoes the first read of each connection, then closes it: a server that stops serving.
fn echo_once_server() -> String {
    server(|mut stream| {
        let mut buf = [0u8; 4096];
        if let Ok(n) = stream.read(&mut buf) {
            let _ = std::io::Write::write_all(&mut stream, &buf[..n]);
        }
    })
}

/// Accepts and reads, never answering (ncat --chat, to a client waiting for sockit's join).
fn silent_server() -> String {
    server(|mut stream| {
        let mut buf = [0u8; 4096];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    })
}

fn bench(args: &[&str]) -> Command {
    let mut cmd = sockit();
    cmd.arg("bench").args(args);
    cmd
}

fn assert_failed_with(code: i32, out: &str, err: &str, needle: &str) {
    assert_eq!(
        code, 1,
        "a failed load exits 1\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("FAILED"), "the table says so:\n{out}");
    assert!(
        out.contains(needle),
        "the table gives the reason {needle:?}:\n{out}"
    );
    assert!(err.contains("bench failed"), "{err}");
}

#[test]
fn bench_echo_against_a_server_that_closes_fails_with_the_reason_in_the_table() {
    let addr = closing_server();
    let (code, out, err, _) = run(bench(&[
        "echo",
        &addr,
        "--conns",
        "2",
        "--duration",
        "300ms",
    ]));
    assert_failed_with(code, &out, &err, "no message was echoed");
}

#[test]
fn bench_echo_against_a_silent_server_fails_within_its_duration() {
    let addr = silent_server();
    let (code, out, err, took) = run(bench(&["echo", &addr, "--duration", "1s"]));
    assert_failed_with(code, &out, &err, "no message was echoed");
    // 1 s of load and the 2 s grace, not the 5 s per-operation timeout.
    assert!(took < BENCH_IO_TIMEOUT, "ran {took:?}");
}

#[test]
fn bench_echo_json_carries_the_failure_and_still_exits_1() {
    let addr = closing_server();
    let (code, out, _, _) = run(bench(&["echo", &addr, "--duration", "300ms", "--json"]));
    assert_eq!(code, 1, "{out}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let failure = json["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("no message was echoed"), "{json}");
}

#[test]
fn bench_echo_against_a_real_echo_server_succeeds() {
    let mut cmd = sockit();
    cmd.args(["echo", "--listen", "127.0.0.1:0"]);
    let mut echo = Proc::spawn(cmd);
    let addr = echo.listening_addr();
    let (code, out, err, _) = run(bench(&["echo", &addr, "--duration", "300ms", "--verify"]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("result") && out.contains("ok") && !out.contains("FAILED"),
        "{out}"
    );
}

#[test]
fn bench_hold_against_a_server_that_stops_echoing_fails_with_the_reason_in_the_table() {
    let addr = echo_once_server();
    let (code, out, err, _) = run(bench(&[
        "hold",
        &addr,
        "--conns",
        "5",
        "--seconds",
        "300ms",
        "--probes",
        "2",
    ]));
    assert_failed_with(code, &out, &err, "no longer echoed");
}

/// `sockit chat serve` with its default flood control; returns it and its line port.
fn chat_server() -> (Proc, String) {
    chat_server_with(
        &["--line-listen", "127.0.0.1:0"],
        "line protocol listening on ",
    )
}

/// `sockit chat serve --web-listen` with `extra` flags; returns it and its web address.
fn web_chat_server(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["--web-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    chat_server_with(&args, "chat web page listening on ")
}

/// `sockit chat serve ARGS`; returns it and the address its stderr names after `banner`.
fn chat_server_with(args: &[&str], banner: &str) -> (Proc, String) {
    let mut cmd = sockit();
    cmd.args(["chat", "serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null());
    let mut proc = Proc::spawn(cmd);
    let line = proc.wait_for_stderr(banner);
    let addr = line
        .split(banner)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("address")
        .to_owned();
    (proc, addr)
}

#[test]
fn bench_chat_against_default_flood_control_fails_and_names_it() {
    let (_server, addr) = chat_server();
    let (code, out, err, took) = run(bench(&[
        "chat",
        &addr,
        "--receivers",
        "2",
        "--duration",
        "1s",
    ]));
    assert_failed_with(code, &out, &err, "slow down");
    assert!(out.contains("did not arrive"), "{out}");
    // No rate from the first burst's milliseconds.
    let rate = out
        .lines()
        .find(|l| l.starts_with("deliveries/s"))
        .unwrap_or_default();
    assert!(rate.trim_end().ends_with('-'), "{out}");
    assert!(took < BENCH_IO_TIMEOUT, "ran {took:?}");
}

#[test]
fn bench_chat_paced_under_the_flood_limit_succeeds() {
    let (_server, addr) = chat_server();
    let (code, out, err, _) = run(bench(&[
        "chat",
        &addr,
        "--receivers",
        "2",
        "--rate",
        "10",
        "--duration",
        "500ms",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn bench_chat_against_a_broker_that_never_confirms_says_so_not_unreachable() {
    let addr = silent_server();
    let (code, _, err, _) = run(bench(&[
        "chat",
        &addr,
        "--receivers",
        "1",
        "--duration",
        "1s",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("connected to {addr}")), "{err}");
    assert!(!err.contains("unreachable"), "{err}");
    assert!(err.contains("--raw"), "{err}");
}

#[test]
fn bench_chat_ws_speaks_the_browser_protocol_and_every_receiver_gets_every_message() {
    let (_server, addr) = web_chat_server(&["--rate", "1000000", "--burst", "1000000"]);
    let (code, out, err, _) = run(bench(&[
        "chat",
        "--ws",
        &addr,
        "--receivers",
        "3",
        "--duration",
        "300ms",
        "--json",
    ]));
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(report["proto"], "websocket", "{out}");
    let sent = report["sent"].as_u64().expect("sent");
    assert!(sent > 0, "{out}");
    assert_eq!(report["deliveries"].as_u64(), Some(sent * 3), "{out}");
    assert_eq!(report["out_of_order"], 0, "{out}");
    assert!(report["failure"].is_null(), "{out}");
}

#[test]
fn bench_chat_ws_against_default_flood_control_fails_and_names_it() {
    let (_server, addr) = web_chat_server(&[]);
    let (code, out, err, took) = run(bench(&[
        "chat",
        "--ws",
        &addr,
        "--receivers",
        "2",
        "--duration",
        "1s",
    ]));
    assert_failed_with(code, &out, &err, "slow down");
    assert!(out.contains("did not arrive"), "{out}");
    assert!(took < BENCH_IO_TIMEOUT, "ran {took:?}");
}

#[test]
fn bench_chat_ws_at_a_line_port_names_the_web_listener() {
    let (_server, addr) = chat_server();
    let (code, _, err, _) = run(bench(&["chat", "--ws", &addr, "--duration", "1s"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--web-listen"), "{err}");
}

#[test]
fn bench_chat_over_two_unlinked_servers_reports_the_deliveries_that_never_crossed() {
    // Receivers and senders alternate between the two; neither server hears the other.
    let (_a, a) = chat_server();
    let (_b, b) = chat_server();
    let (code, out, err, _) = run(bench(&[
        "chat",
        &a,
        &b,
        "--receivers",
        "2",
        "--senders",
        "2",
        "--rate",
        "10",
        "--duration",
        "300ms",
    ]));
    assert_failed_with(code, &out, &err, "did not arrive");
}
