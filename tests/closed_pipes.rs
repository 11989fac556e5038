//! The built binary when its stdout or stderr goes away, and on signals: servers keep serving
//! and stop on SIGTERM with a closed log pipe, a second signal forces the exit, and clients end
//! quietly (status 141, nothing on stderr) when their reader is gone, as `ls | head` does.

mod common;

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use common::{sockit, token_file, Proc, TEST_TIMEOUT};

/// A pipe whose read end is already closed: whatever writes to it gets EPIPE.
fn closed_pipe() -> OwnedFd {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    write
}

/// Sends `signal` to the process.
fn signal(proc: &Proc, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(proc.child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
}

/// One echo round trip through `addr`.
fn echo_round_trip(addr: &str) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    std::io::Write::write_all(&mut conn, b"ping\n").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"ping\n");
}

#[test]
fn a_server_whose_log_pipe_closed_keeps_serving_and_stops_on_sigterm() {
    let mut cmd = sockit();
    cmd.args(["-v", "echo", "--listen", "127.0.0.1:0"]);
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    // The log reader goes away (`sockit echo 2>&1 | head -1`).
    drop(proc.stderr.take());
    for _ in 0..20 {
        // Each connection logs lines (-v) into the closed pipe.
        echo_round_trip(&addr);
    }
    signal(&proc, nix::sys::signal::Signal::SIGTERM);
    let status = proc.wait_exit();
    assert_eq!(status.code(), Some(0), "a clean shutdown: {status:?}");
}

#[test]
fn a_second_signal_exits_at_once_without_waiting_for_the_drain() {
    let mut cmd = sockit();
    cmd.args(["echo", "--listen", "127.0.0.1:0", "--drain-timeout", "1h"]);
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    // A connection that stays open keeps the drain waiting.
    let held = std::net::TcpStream::connect(&addr).unwrap();
    echo_round_trip(&addr);
    signal(&proc, nix::sys::signal::Signal::SIGTERM);
    proc.wait_for_stderr("shutting down");
    signal(&proc, nix::sys::signal::Signal::SIGINT);
    let status = proc.wait_exit();
    assert_eq!(status.code(), Some(130), "128 + SIGINT: {status:?}");
    drop(held);
}

/// A file server in a temp dir holding a few files; returns it, its address and the dir.
fn files_server(token: &tempfile::NamedTempFile) -> (Proc, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(dir.path().join(format!("file-{i:02}")), b"x").unwrap();
    }
    let mut cmd = sockit();
    cmd.args(["files", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path())
        .arg("--token-file")
        .arg(token.path())
        .stdout(Stdio::null());
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    (proc, addr, dir)
}

/// Runs `cmd` with stdout a pipe nobody reads; returns (exit code, stderr).
fn run_into_closed_stdout(mut cmd: Command) -> (Option<i32>, String) {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut proc = Proc {
        child: out,
        stderr: None,
    };
    let mut stderr = String::new();
    proc.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = proc.wait_exit();
    (status.code(), stderr)
}

#[test]
fn ls_into_a_closed_pipe_ends_quietly() {
    let token = token_file("a-token-for-the-closed-pipe-tests");
    let (_server, addr, _dir) = files_server(&token);
    let mut cmd = sockit();
    cmd.args(["ls", &addr, "--token-file"]).arg(token.path());
    let (code, stderr) = run_into_closed_stdout(cmd);
    assert_eq!(
        code,
        Some(141),
        "as a C tool killed by SIGPIPE; stderr: {stderr}"
    );
    assert!(stderr.is_empty(), "no panic, no message: {stderr:?}");
}

#[test]
fn exec_run_into_a_closed_pipe_ends_quietly() {
    let token = token_file("a-token-for-the-closed-pipe-tests");
    let (mut server, addr) = common::start_exec_binary(token.path());
    let mut cmd = sockit();
    cmd.args(["exec", "run", &addr, "--token-file"])
        .arg(token.path())
        .args(["--", "yes"]);
    let (code, stderr) = run_into_closed_stdout(cmd);
    assert_eq!(code, Some(141), "stderr: {stderr}");
    assert!(stderr.is_empty(), "no 'Broken pipe' message: {stderr:?}");
    // The server is still there for the next client.
    let out = sockit()
        .args(["exec", "run", &addr, "--token-file"])
        .arg(token.path())
        .args(["--", "echo", "next"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"next\n");
    server.terminate();
}
