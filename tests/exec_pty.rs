//! `exec run -t`: commands on a pseudo-terminal, through the library client and raw frames
//! against an in-process server, and through the built binary with a pty as its terminal.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pids::{is_gone, wait_until_gone};
use common::{
    argv_request, run_exec, run_with_input, sockit, start_exec, start_exec_binary, token_file, Ran,
    TEST_TIMEOUT,
};
use nix::sys::signal::{kill, Signal};
use nix::sys::termios::{tcgetattr, LocalFlags};
use nix::unistd::Pid;
use sockit::net::{Addr, Stream};
use sockit::service::exec::{
    self, ClientMessage, ExecConfig, PtyRequest, RemoteExit, RunRequest, ServerMessage,
};
use sockit::session::{self, Token};
use sockit::terminal::{set_window_size, WindowSize};
use sockit::wire::Connection;
use tokio::sync::mpsc;
use tokio::time::timeout;

fn pty(rows: u16, cols: u16) -> Option<PtyRequest> {
    Some(PtyRequest {
        rows,
        cols,
        term: None,
    })
}

/// Runs `argv` through the library client, with `stdin` as typed input.
async fn run_cmd(
    addr: &Addr,
    token: &Token,
    argv: &[&str],
    pty: Option<PtyRequest>,
    stdin: &[u8],
) -> Ran {
    let (_signals_tx, signals) = mpsc::channel(1);
    let request = RunRequest {
        pty,
        ..argv_request(argv)
    };
    run_exec(addr, None, token, &request, stdin, signals).await
}

async fn assert_still_serves(addr: &Addr, token: &Token) {
    let ran = run_cmd(addr, token, &["echo", "still serving"], pty(24, 80), b"").await;
    assert_eq!(ran.exit(), RemoteExit::Code(0));
    assert_eq!(ran.stdout_text(), "still serving\r\n");
}

#[tokio::test]
async fn a_command_with_a_pty_has_a_terminal_and_one_without_has_none() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let ran = run_cmd(&server.addr, &token, &["tty"], pty(24, 80), b"").await;
    assert_eq!(ran.exit(), RemoteExit::Code(0));
    assert!(
        ran.stdout_text().starts_with("/dev/pts/"),
        "{:?}",
        ran.stdout_text()
    );
    let term = run_cmd(
        &server.addr,
        &token,
        &["sh", "-c", "echo $TERM"],
        pty(24, 80),
        b"",
    )
    .await;
    assert_eq!(term.stdout_text(), "xterm\r\n", "the default TERM");
    let piped = run_cmd(&server.addr, &token, &["test", "-t", "0"], None, b"").await;
    assert_eq!(piped.exit(), RemoteExit::Code(1), "stdin is a pipe");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stdout_and_stderr_are_merged_on_a_pty() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let mut request = pty(24, 80);
    if let Some(p) = request.as_mut() {
        p.term = Some("xterm-256color".into());
    }
    let script = "echo out; echo err >&2; echo $TERM; exit 3";
    let ran = run_cmd(&server.addr, &token, &["sh", "-c", script], request, b"").await;
    assert_eq!(ran.exit(), RemoteExit::Code(3));
    assert_eq!(ran.stdout_text(), "out\r\nerr\r\nxterm-256color\r\n");
    assert!(ran.stderr.is_empty(), "nothing arrives as stderr");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_pty_has_the_requested_window_size() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let ran = run_cmd(&server.addr, &token, &["stty", "size"], pty(33, 101), b"").await;
    assert_eq!(ran.exit(), RemoteExit::Code(0));
    assert_eq!(ran.stdout_text(), "33 101\r\n");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn input_ends_with_the_terminal_eof_character() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let ran = run_cmd(&server.addr, &token, &["cat"], pty(24, 80), b"hello\n").await;
    assert_eq!(ran.exit(), RemoteExit::Code(0), "cat saw EOF");
    // The terminal echoes the line, then cat writes it back.
    assert_eq!(ran.stdout_text(), "hello\r\nhello\r\n");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn ctrl_c_typed_on_the_pty_interrupts_the_command() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let ran = run_cmd(
        &server.addr,
        &token,
        &["sleep", "100"],
        pty(24, 80),
        b"\x03",
    )
    .await;
    assert_eq!(ran.exit(), RemoteExit::Signal(2));
    assert_eq!(ran.exit().exit_code(), 130);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_program_on_a_pty_is_not_found_with_exit_127() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let ran = run_cmd(
        &server.addr,
        &token,
        &["no-such-program-xyz"],
        pty(24, 80),
        b"",
    )
    .await;
    let outcome = ran.outcome.expect("an exit status");
    assert_eq!(outcome.exit, RemoteExit::Code(127));
    assert_eq!(outcome.error.map(|e| e.code), Some("not_found".to_owned()));
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_pty_command_that_never_exits_is_killed_at_the_timeout() {
    let config = ExecConfig {
        timeout: Some(Duration::from_millis(300)),
        ..ExecConfig::default()
    };
    let (server, token) = start_exec(config).await;
    let ran = run_cmd(&server.addr, &token, &["sleep", "1000"], pty(24, 80), b"").await;
    assert_eq!(ran.exit(), RemoteExit::Signal(15));
    assert!(ran.outcome.as_ref().unwrap().timed_out_after.is_some());
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_pty_requests_are_refused_and_the_next_client_is_served() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let bad = [
        (0, 80, None),
        (24, 0, None),
        (exec::MAX_PTY_ROWS + 1, 80, None),
        (24, exec::MAX_PTY_COLS + 1, None),
        (24, 80, Some("xterm\u{1b}]0;owned\u{7}")),
        (24, 80, Some("")),
    ];
    for (rows, cols, term) in bad {
        let request = Some(PtyRequest {
            rows,
            cols,
            term: term.map(str::to_owned),
        });
        let ran = run_cmd(&server.addr, &token, &["true"], request, b"").await;
        let err = ran.outcome.expect_err("refused");
        assert_eq!(err.code(), "invalid_pty", "{err}");
        let message = err.to_string();
        assert!(
            message.contains("rows must be 1 to") || message.contains("TERM must be"),
            "{message}"
        );
        assert!(!message.contains('\u{1b}'), "{message:?}");
        assert_still_serves(&server.addr, &token).await;
    }
    server.stop().await.unwrap();
}

// ---- raw frames: resizes, disconnects ----

/// A framed connection that has completed the handshake and sent `run` with a pty.
async fn start_pty_run(addr: &Addr, token: &Token, argv: &[&str]) -> Connection<Stream> {
    let mut conn = Connection::new(Stream::connect(addr).await.unwrap());
    timeout(
        TEST_TIMEOUT,
        session::connect(&mut conn, &exec::session_config(), Some(token)),
    )
    .await
    .unwrap()
    .expect("handshake");
    let run = ClientMessage::Run {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        shell: false,
        pty: pty(33, 101),
    };
    conn.write_frame(&run, &[]).await.unwrap();
    conn
}

/// Reads `stdout` frames until the output so far contains `needle`; returns the output.
async fn read_until(conn: &mut Connection<Stream>, out: &mut String, needle: &str) {
    while !out.contains(needle) {
        let frame = timeout(TEST_TIMEOUT, conn.read_frame::<ServerMessage>())
            .await
            .expect("a frame in time")
            .expect("a valid frame");
        match frame {
            Some(ServerMessage::Stdout { .. }) => {
                while let Some(chunk) = conn.read_body_chunk().await.unwrap() {
                    out.push_str(&String::from_utf8_lossy(&chunk));
                }
            }
            // Typed input taken by the terminal is credited back.
            Some(ServerMessage::StdinCredit { .. }) => {}
            other => panic!("expected {needle:?} in stdout, got {other:?} after {out:?}"),
        }
    }
}

/// Reads frames until the `exit` frame; returns it.
async fn read_exit(conn: &mut Connection<Stream>) -> ServerMessage {
    loop {
        let frame = timeout(TEST_TIMEOUT, conn.read_frame::<ServerMessage>())
            .await
            .expect("a frame in time")
            .expect("a valid frame");
        match frame {
            Some(ServerMessage::Stdout { .. }) => {
                while conn.read_body_chunk().await.unwrap().is_some() {}
            }
            Some(ServerMessage::StdinCredit { .. }) => {}
            Some(other) => return other,
            None => panic!("closed without an exit"),
        }
    }
}

#[tokio::test]
async fn a_resize_frame_changes_the_window_size_of_the_running_command() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let script = "stty size; read x; stty size";
    let mut conn = start_pty_run(&server.addr, &token, &["sh", "-c", script]).await;
    let mut out = String::new();
    read_until(&mut conn, &mut out, "33 101\r\n").await;
    let resize = ClientMessage::Resize {
        rows: 40,
        cols: 120,
    };
    conn.write_frame(&resize, &[]).await.unwrap();
    conn.write_frame(&ClientMessage::Stdin { size: 1 }, b"\n")
        .await
        .unwrap();
    read_until(&mut conn, &mut out, "40 120\r\n").await;
    assert_eq!(read_exit(&mut conn).await, RemoteExit::Code(0).to_message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_resize_ends_the_session_with_a_clear_error() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let mut conn = start_pty_run(&server.addr, &token, &["sh", "-c", "echo up; read x"]).await;
    read_until(&mut conn, &mut String::new(), "up").await;
    let resize = ClientMessage::Resize { rows: 0, cols: 120 };
    conn.write_frame(&resize, &[]).await.unwrap();
    match read_exit(&mut conn).await {
        ServerMessage::Error { code, message } => {
            assert_eq!(code, "invalid_pty");
            assert!(message.contains("rows must be 1 to"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_disconnects_takes_the_pty_command_and_its_children_down() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let script = "sleep 1000 & echo child=$!; wait";
    let mut conn = start_pty_run(&server.addr, &token, &["sh", "-c", script]).await;
    let mut out = String::new();
    read_until(&mut conn, &mut out, "\r\n").await;
    let pid: i32 = out
        .trim()
        .strip_prefix("child=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a pid in {out:?}"));
    assert!(
        !is_gone(pid),
        "the child runs while the client is connected"
    );
    drop(conn);
    wait_until_gone(pid, &format!("child {pid} outlived its client")).await;
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

// ---- the built binary ----

fn exec_run(addr: &str, token: &std::path::Path, flags: &[&str], command: &[&str]) -> Command {
    let mut cmd = sockit();
    cmd.args(["exec", "run", addr, "--token-file"])
        .arg(token)
        .args(flags)
        .arg("--")
        .args(command);
    cmd
}

#[test]
fn dash_t_without_a_terminal_warns_and_runs_without_a_pty_unless_forced() {
    let token = token_file(Token::generate().unwrap().reveal());
    let (_server, addr) = start_exec_binary(token.path());
    let (code, out, err) = run_with_input(
        exec_run(&addr, token.path(), &["-t"], &["sh", "-c", "tty; echo hi"]),
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "not a tty\nhi\n");
    assert!(
        err.contains("pseudo-terminal will not be allocated because stdin is not a terminal"),
        "{err}"
    );
    let (code, out, err) = run_with_input(exec_run(&addr, token.path(), &["-tt"], &["tty"]), b"");
    assert_eq!(code, 0, "{err}");
    assert!(
        String::from_utf8_lossy(&out).starts_with("/dev/pts/"),
        "{out:?}"
    );
    assert!(!err.contains("will not be allocated"), "{err}");
}

fn is_raw(tty: &OwnedFd) -> bool {
    let flags = tcgetattr(tty).unwrap().local_flags;
    !flags.intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG)
}

/// Reads lines from the client's stdout until one equals `line` (CRLF from the remote pty).
fn wait_for_line(stdout: &mut impl BufRead, line: &str) {
    let mut seen = String::new();
    loop {
        let mut next = String::new();
        let n = stdout.read_line(&mut next).unwrap();
        assert!(n > 0, "stdout closed before {line:?}; saw {seen:?}");
        if next.trim_end() == line {
            return;
        }
        seen.push_str(&next);
    }
}

#[test]
fn exec_run_t_on_a_terminal_goes_raw_forwards_resizes_and_ctrl_c_and_restores_the_terminal() {
    let token = token_file(Token::generate().unwrap().reveal());
    let (_server, addr) = start_exec_binary(token.path());
    let size = nix::pty::Winsize {
        ws_row: 30,
        ws_col: 90,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // The client's terminal: it gets the slave as stdin; the master is our keyboard.
    let local = nix::pty::openpty(Some(&size), None).unwrap();
    let before = tcgetattr(&local.slave).unwrap();
    assert!(!is_raw(&local.slave));
    let script = "stty size; echo ready; while :; do sleep 0.05; stty size; done";
    let mut cmd = exec_run(&addr, token.path(), &["-t"], &["sh", "-c", script]);
    let mut client = cmd
        .env_remove("SOCKIT_TOKEN")
        .stdin(Stdio::from(local.slave.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = Pid::from_raw(client.id() as i32);
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    wait_for_line(&mut stdout, "30 90");
    wait_for_line(&mut stdout, "ready");
    assert!(
        is_raw(&local.slave),
        "the local terminal is raw while it runs"
    );

    set_window_size(
        &local.master,
        WindowSize {
            rows: 40,
            cols: 120,
        },
    )
    .unwrap();
    // The pty is not the client's controlling terminal, so the kernel's SIGWINCH goes
    // elsewhere: deliver it as a window manager's terminal would.
    kill(client_pid, Signal::SIGWINCH).unwrap();
    wait_for_line(&mut stdout, "40 120");

    // Ctrl-C is a byte in raw mode; the remote terminal turns it into SIGINT.
    let mut keyboard = std::fs::File::from(local.master.try_clone().unwrap());
    keyboard.write_all(b"\x03").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(client.wait_with_output());
    });
    let Ok(output) = rx.recv_timeout(TEST_TIMEOUT) else {
        let _ = kill(client_pid, Signal::SIGKILL);
        panic!("the client did not exit after Ctrl-C");
    };
    let output = output.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let after = tcgetattr(&local.slave).unwrap();
    assert!(!is_raw(&local.slave), "raw mode is undone at exit");
    assert_eq!(after.local_flags, before.local_flags);
    assert_eq!(after.input_flags, before.input_flags);
    assert_eq!(after.output_flags, before.output_flags);
    assert_eq!(after.control_flags, before.control_flags);
}
