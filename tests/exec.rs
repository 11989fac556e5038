//! The exec service end to end: in-process servers on port 0 driven by the library client or
//! by raw frames, and the built binary for exit codes, Ctrl-C, tokens and server memory.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pids::{is_gone, wait_until_gone, wait_until_gone_blocking};
use common::{
    argv_request, authenticated_exec as authenticated, run_exec, run_with_input, sockit,
    start_exec, start_exec_binary, token_file, Proc, Ran, TEST_TIMEOUT,
};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use sockit::net::{Addr, Stream};
use sockit::service::exec::{
    self, ClientMessage, ExecConfig, RemoteExit, RunRequest, ServerMessage, SignalName,
};
use sockit::session::Token;
use sockit::wire::Connection;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Runs `argv` with `stdin`, forwarding whatever arrives on `signals`.
async fn run_with(
    addr: &Addr,
    token: &Token,
    argv: &[&str],
    shell: bool,
    stdin: &[u8],
    signals: mpsc::Receiver<SignalName>,
) -> Ran {
    let request = RunRequest {
        shell,
        ..argv_request(argv)
    };
    run_exec(addr, None, token, &request, stdin, signals).await
}

async fn run_cmd(addr: &Addr, token: &Token, argv: &[&str], shell: bool, stdin: &[u8]) -> Ran {
    let (_, signals) = mpsc::channel(1);
    run_with(addr, token, argv, shell, stdin, signals).await
}

fn refusal_code(ran: &Ran) -> String {
    match &ran.outcome {
        Err(e) => e.code().to_owned(),
        Ok(outcome) => panic!("expected a refusal, got {outcome:?}"),
    }
}

async fn assert_still_serves(addr: &Addr, token: &Token) {
    let ran = run_cmd(addr, token, &["echo", "still serving"], false, b"").await;
    assert_eq!(ran.exit(), RemoteExit::Code(0));
    assert_eq!(ran.stdout, b"still serving\n");
}

async fn next_frame(conn: &mut Connection<Stream>) -> Option<ServerMessage> {
    timeout(TEST_TIMEOUT, conn.read_frame())
        .await
        .expect("a frame in time")
        .expect("a valid frame")
}

#[tokio::test]
async fn stdout_and_stderr_arrive_separately_with_the_exit_code() {
    let config = ExecConfig {
        shell: true,
        ..ExecConfig::default()
    };
    let (server, token) = start_exec(config).await;
    let ran = run_cmd(
        &server.addr,
        &token,
        &["echo out;", "echo err >&2;", "exit 3"],
        true,
        b"",
    )
    .await;
    assert_eq!(ran.exit(), RemoteExit::Code(3));
    assert_eq!(ran.stdout, b"out\n");
    assert_eq!(ran.stderr, b"err\n");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn argv_form_keeps_spaces_and_never_runs_a_shell() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let ran = run_cmd(
        &server.addr,
        &token,
        &["printf", "%s|", "a b", "$HOME;x"],
        false,
        b"",
    )
    .await;
    assert_eq!(ran.exit(), RemoteExit::Code(0));
    assert_eq!(ran.stdout, b"a b|$HOME;x|");
    let shell = run_cmd(&server.addr, &token, &["exit 3"], true, b"").await;
    assert_eq!(refusal_code(&shell), "shell_not_allowed");
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stdin_is_forwarded_with_its_eof() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let input: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    // More than the pipes hold in both directions: cat must read and write at once.
    let cat = run_cmd(&server.addr, &token, &["cat"], false, &input).await;
    assert_eq!(cat.exit(), RemoteExit::Code(0));
    assert!(cat.stdout == input, "cat returned different bytes");
    let wc = run_cmd(&server.addr, &token, &["wc", "-c"], false, &input).await;
    assert_eq!(String::from_utf8_lossy(&wc.stdout).trim(), "1000000");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_the_next_client_is_served() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let wrong = Token::generate().unwrap();
    let ran = run_cmd(&server.addr, &wrong, &["echo", "hi"], false, b"").await;
    assert_eq!(refusal_code(&ran), "auth_failed");
    assert!(ran.stdout.is_empty());
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_command_outside_allow_cmd_is_refused_and_the_next_client_is_served() {
    let config = ExecConfig {
        allow_cmds: vec!["echo".into()],
        ..ExecConfig::default()
    };
    let (server, token) = start_exec(config).await;
    let ran = run_cmd(&server.addr, &token, &["cat", "/etc/passwd"], false, b"").await;
    assert_eq!(refusal_code(&ran), "command_not_allowed");
    let by_path = run_cmd(&server.addr, &token, &["/bin/echo", "x"], false, b"").await;
    assert_eq!(refusal_code(&by_path), "command_not_allowed");
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_missing_program_reports_not_found_and_exit_127() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let ran = run_cmd(&server.addr, &token, &["no-such-program-xyz"], false, b"").await;
    let outcome = ran.outcome.expect("an exit status");
    assert_eq!(outcome.exit, RemoteExit::Code(127));
    assert_eq!(outcome.exit.exit_code(), 127);
    assert_eq!(outcome.error.map(|e| e.code), Some("not_found".to_owned()));
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn overlong_command_lines_are_refused_and_the_next_client_is_served() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let long = "x".repeat(exec::MAX_COMMAND_BYTES);
    let ran = run_cmd(&server.addr, &token, &["echo", &long], false, b"").await;
    assert_eq!(refusal_code(&ran), "command_too_long");
    assert_still_serves(&server.addr, &token).await;
    // A 1 MiB command line does not even fit in a header: refused before it is sent.
    let huge = "x".repeat(1024 * 1024);
    let ran = run_cmd(&server.addr, &token, &["echo", &huge], false, b"").await;
    assert_eq!(refusal_code(&ran), "header_too_large");
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_run_header_with_a_duplicate_argv_key_is_an_invalid_header() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let mut conn = authenticated(&server.addr, &token).await;
    let header = br#"{"type":"run","argv":["echo","hi"],"argv":["rm","-rf","/"]}"#;
    let mut raw = u32::try_from(header.len()).unwrap().to_be_bytes().to_vec();
    raw.extend_from_slice(header);
    conn.get_mut().write_all(&raw).await.unwrap();
    match next_frame(&mut conn).await {
        Some(ServerMessage::Error { code, .. }) => assert_eq!(code, "invalid_header"),
        other => panic!("expected an error frame, got {other:?}"),
    }
    assert_eq!(next_frame(&mut conn).await, None, "closed after the error");
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_child_that_never_exits_is_terminated_at_the_timeout_and_the_client_told() {
    let config = ExecConfig {
        timeout: Some(Duration::from_millis(300)),
        ..ExecConfig::default()
    };
    let (server, token) = start_exec(config).await;
    let ran = run_cmd(&server.addr, &token, &["sleep", "1000"], false, b"").await;
    assert_eq!(ran.exit(), RemoteExit::Signal(15), "SIGTERM first");
    let outcome = ran.outcome.as_ref().unwrap();
    assert_eq!(outcome.timed_out_after, Some(Duration::from_millis(300)));
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_timed_out_command_cleans_up_on_sigterm() {
    let config = ExecConfig {
        timeout: Some(Duration::from_millis(300)),
        ..ExecConfig::default()
    };
    let (server, token) = start_exec(config).await;
    // The trap runs only if the command gets SIGTERM, not SIGKILL.
    let script = "trap 'echo cleaned up; exit 3' TERM; echo started; while :; do sleep 0.05; done";
    let ran = run_cmd(&server.addr, &token, &["sh", "-c", script], false, b"").await;
    assert_eq!(ran.stdout_text(), "started\ncleaned up\n");
    assert_eq!(ran.exit(), RemoteExit::Code(3));
    let outcome = ran.outcome.as_ref().unwrap();
    assert!(outcome.timed_out_after.is_some());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_command_that_ignores_sigterm_is_killed_after_the_grace() {
    let config = ExecConfig {
        timeout: Some(Duration::from_millis(200)),
        kill_grace: Duration::from_millis(300),
        ..ExecConfig::default()
    };
    let (server, token) = start_exec(config).await;
    let script = "trap '' TERM; echo started; while :; do sleep 0.05; done";
    let ran = run_cmd(&server.addr, &token, &["sh", "-c", script], false, b"").await;
    assert_eq!(ran.stdout_text(), "started\n");
    assert_eq!(ran.exit(), RemoteExit::Signal(9));
    assert!(ran.outcome.as_ref().unwrap().timed_out_after.is_some());
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_forwarded_signal_reaches_the_command() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let (tx, signals) = mpsc::channel(1);
    // The run frame precedes the signal on the wire, so the child exists when it arrives.
    tx.send(SignalName::Term).await.unwrap();
    let ran = run_with(
        &server.addr,
        &token,
        &["sleep", "1000"],
        false,
        b"",
        signals,
    )
    .await;
    assert_eq!(ran.exit(), RemoteExit::Signal(15));
    assert_eq!(ran.exit().exit_code(), 143);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_disconnects_takes_the_grandchild_down_too() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let mut conn = authenticated(&server.addr, &token).await;
    let run = ClientMessage::Run {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "sleep 1000 & echo $!; wait".into(),
        ],
        shell: false,
        pty: None,
    };
    conn.write_frame(&run, &[]).await.unwrap();
    let mut out = Vec::new();
    while !out.ends_with(b"\n") {
        match next_frame(&mut conn).await {
            Some(ServerMessage::Stdout { .. }) => {
                while let Some(chunk) = conn.read_body_chunk().await.unwrap() {
                    out.extend_from_slice(&chunk);
                }
            }
            other => panic!("expected stdout, got {other:?}"),
        }
    }
    let pid: i32 = String::from_utf8_lossy(&out).trim().parse().unwrap();
    assert!(
        !is_gone(pid),
        "the grandchild runs while the client is connected"
    );
    drop(conn);
    wait_until_gone(pid, &format!("grandchild {pid} outlived its client")).await;
    assert_still_serves(&server.addr, &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_half_closes_ends_stdin_and_still_gets_the_output() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let mut conn = authenticated(&server.addr, &token).await;
    let run = ClientMessage::Run {
        argv: vec!["sort".into()],
        shell: false,
        pty: None,
    };
    conn.write_frame(&run, &[]).await.unwrap();
    let lines = b"pear\napple\nfig\n";
    let stdin = ClientMessage::Stdin {
        size: lines.len() as u64,
    };
    conn.write_frame(&stdin, lines).await.unwrap();
    // No stdin_eof frame: the client shuts down its sending side, as `nc -N` would.
    conn.get_mut().shutdown().await.unwrap();
    let mut out = Vec::new();
    let code = loop {
        match next_frame(&mut conn).await {
            Some(ServerMessage::Stdout { .. }) => {
                while let Some(chunk) = conn.read_body_chunk().await.unwrap() {
                    out.extend_from_slice(&chunk);
                }
            }
            Some(ServerMessage::StdinCredit { .. }) => {}
            Some(ServerMessage::Exit { code, .. }) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(out, b"apple\nfig\npear\n");
    assert_eq!(code, Some(0));
    server.stop().await.unwrap();
}

// ---- the built binary ----

fn exec_run(addr: &str, token_path: Option<&std::path::Path>, command: &[&str]) -> Command {
    let mut cmd = sockit();
    cmd.args(["exec", "run", addr]);
    if let Some(path) = token_path {
        cmd.arg("--token-file").arg(path);
    }
    cmd.arg("--").args(command);
    cmd
}

#[test]
fn exec_run_exits_with_the_remote_status_or_255() {
    let token = token_file(Token::generate().unwrap().reveal());
    let (_server, addr) = start_exec_binary(token.path());

    let (code, out, _) = run_with_input(exec_run(&addr, Some(token.path()), &["cat"]), b"hello\n");
    assert_eq!((code, out.as_slice()), (0, &b"hello\n"[..]));

    let (code, _, _) = run_with_input(
        exec_run(
            &addr,
            Some(token.path()),
            &["sh", "-c", "echo e >&2; exit 3"],
        ),
        b"",
    );
    assert_eq!(code, 3);

    let (code, _, err) = run_with_input(
        exec_run(&addr, Some(token.path()), &["no-such-program-xyz"]),
        b"",
    );
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("not_found"), "{err}");

    let wrong = token_file(Token::generate().unwrap().reveal());
    let (code, _, err) = run_with_input(exec_run(&addr, Some(wrong.path()), &["true"]), b"");
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("auth_failed"), "{err}");

    let (code, _, err) = run_with_input(exec_run(&addr, None, &["true"]), b"");
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("no token"), "{err}");

    let (code, _, _) = run_with_input(exec_run(&addr, Some(token.path()), &["true"]), b"");
    assert_eq!(code, 0, "still serving after the bad clients");
}

#[test]
fn exec_serve_without_a_token_prints_a_generated_one_once() {
    let mut cmd = sockit();
    cmd.args(["exec", "serve", "--listen", "127.0.0.1:0"])
        .env_remove("SOCKIT_TOKEN")
        .stdout(Stdio::piped());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    let mut line = String::new();
    BufReader::new(server.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let token = line
        .trim()
        .strip_prefix("exec token: ")
        .expect("a token line");
    assert_eq!(token.len(), 64);
    let file = token_file(token);
    let (code, out, err) = run_with_input(exec_run(&addr, Some(file.path()), &["echo", "hi"]), b"");
    assert_eq!((code, out.as_slice()), (0, &b"hi\n"[..]), "{err}");
}

/// The server's peak resident memory, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_slow_reader_of_100_mib_keeps_server_memory_bounded() {
    const TOTAL: u64 = 100 * 1024 * 1024;
    const PEAK_LIMIT_KIB: u64 = 64 * 1024;
    let token = Token::generate().unwrap();
    let file = token_file(token.reveal());
    let (server, addr) = start_exec_binary(file.path());
    let addr: Addr = addr.parse().unwrap();
    let mut conn = authenticated(&addr, &token).await;
    let run = ClientMessage::Run {
        argv: vec![
            "head".into(),
            "-c".into(),
            TOTAL.to_string(),
            "/dev/zero".into(),
        ],
        shell: false,
        pty: None,
    };
    conn.write_frame(&run, &[]).await.unwrap();
    let (mut received, mut next_pause) = (0u64, 0u64);
    let exit = loop {
        if received >= next_pause {
            // Stop reading for a while: the server must wait for us, not buffer.
            tokio::time::sleep(Duration::from_millis(100)).await;
            next_pause += TOTAL / 8;
        }
        match next_frame(&mut conn).await {
            Some(ServerMessage::Stdout { .. }) => {
                while let Some(chunk) = conn.read_body_chunk().await.unwrap() {
                    received += chunk.len() as u64;
                }
            }
            Some(ServerMessage::Exit { code, signal, .. }) => break (code, signal),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(exit, (Some(0), None));
    assert_eq!(received, TOTAL);
    let peak = peak_rss_kib(server.child.id());
    assert!(peak < PEAK_LIMIT_KIB, "server peak RSS {peak} KiB");
}

/// Waits (bounded) for `child` to exit; kills it and fails the test if it does not.
fn wait_bounded(mut child: std::process::Child) -> std::process::ExitStatus {
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(TEST_TIMEOUT) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("the client did not exit in time");
        }
    }
}

#[test]
fn ctrl_c_on_exec_run_interrupts_the_remote_command_and_exits_130() {
    use std::os::unix::process::ExitStatusExt;
    let token = token_file(Token::generate().unwrap().reveal());
    let (_server, addr) = start_exec_binary(token.path());
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!(
        "echo $$ > '{}'; echo ready; exec sleep 100",
        pid_file.display()
    );
    let mut client = exec_run(&addr, Some(token.path()), &["sh", "-c", &script])
        .env_remove("SOCKIT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n", "the remote command started");
    let remote: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!is_gone(remote), "the remote sleep runs");
    kill(
        Pid::from_raw(client.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_bounded(client);
    assert_eq!(status.signal(), None, "the client handled SIGINT itself");
    assert_eq!(status.code(), Some(130), "128 + SIGINT, ssh's rule");
    wait_until_gone_blocking(
        remote,
        &format!("the remote sleep {remote} outlived the interrupt"),
    );
}

#[tokio::test]
async fn the_pid_poll_sees_a_live_process_and_one_killed_but_unreaped_as_gone() {
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = child.id() as i32;
    assert!(!is_gone(pid), "a running sleep is not gone");
    kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    // Not reaped yet: a zombie counts as gone, as for a grandchild whose reaper we do not own.
    wait_until_gone(pid, &format!("killed sleep {pid} still looks alive")).await;
    child.wait().unwrap();
    assert!(is_gone(pid), "reaped");
}

#[tokio::test]
async fn commands_start_with_default_signal_actions_whatever_the_server_inherited() {
    // `nohup sockit exec serve &`: the server starts with SIGHUP and SIGINT ignored, and it
    // ignores SIGXFSZ itself. None of that may reach the commands it runs.
    let token = Token::generate().unwrap();
    let file = token_file(token.reveal());
    let mut cmd = sockit();
    cmd.args(["exec", "serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(file.path())
        .stdout(Stdio::null());
    // SAFETY: only sigaction runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            use nix::sys::signal::{signal, SigHandler, Signal};
            signal(Signal::SIGHUP, SigHandler::SigIgn)?;
            signal(Signal::SIGINT, SigHandler::SigIgn)?;
            Ok(())
        });
    }
    let mut server = Proc::spawn(cmd);
    let addr: Addr = server.listening_addr().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let big = big.to_str().unwrap();
    for (line, signal) in [
        ("kill -HUP $$; echo survived", 1),
        ("kill -INT $$; echo survived", 2),
        // A file-size limit kills the writer (SIGXFSZ) instead of failing its write.
        ("ulimit -f 1; exec head -c 100000 /dev/zero >\"$0\"", 25),
    ] {
        let (_signals, rx) = mpsc::channel(1);
        let request = argv_request(&["sh", "-c", line, big]);
        let ran = run_exec(&addr, None, &token, &request, b"", rx).await;
        assert_eq!(
            ran.exit(),
            RemoteExit::Signal(signal),
            "{line}: {}",
            ran.stdout_text()
        );
    }
    server.terminate();
}

#[test]
fn exec_run_over_a_unix_socket_streams_every_byte_to_a_pipe_read_in_bursts() {
    // Separate server and client processes, as people run them, and a reader that takes the
    // output in bursts: the client's splice pipe keeps filling up and draining. This once
    // caught a full pipe taken for an empty socket, which left the run waiting forever.
    let token = token_file(Token::generate().unwrap().reveal());
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", dir.path().join("exec.sock").display());
    let mut serve = sockit();
    serve
        .args(["exec", "serve", "--listen", &addr, "--token-file"])
        .arg(token.path())
        .stdout(Stdio::null());
    let mut server = common::Proc::spawn(serve);
    server.listening_addr();
    let data: Vec<u8> = (0..24 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let source = dir.path().join("data");
    std::fs::write(&source, &data).unwrap();
    for _ in 0..3 {
        let mut client = exec_run(
            &addr,
            Some(token.path()),
            &["cat", source.to_str().unwrap()],
        )
        .env_remove("SOCKIT_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let mut out = client.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut burst = vec![0u8; 64 * 1024];
            loop {
                match std::io::Read::read(&mut out, &mut burst) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&burst[..n]),
                }
            }
            let _ = tx.send(got);
        });
        let got = rx.recv_timeout(TEST_TIMEOUT);
        let status = wait_bounded(client);
        let got = got.expect("the whole output in time");
        assert!(status.success(), "{status:?}");
        assert_eq!(got.len(), data.len());
        assert!(got == data, "the output differs from the file");
    }
}
