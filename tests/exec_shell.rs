//! `sockit exec shell`: the prompt loop, through the library against an in-process server and
//! through the built binary.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{sockit, start, Proc, TestServer, TEST_TIMEOUT};
use sockit::engine::Config;
use sockit::service::exec::shell::{shell, LineForm, ShellIo};
use sockit::service::exec::{self, ExecConfig, ExecError, ExecServer, ExecService};
use sockit::session::Token;
use tokio::time::timeout;

async fn start_exec(shell: bool) -> (TestServer, Token) {
    let token = Token::generate().unwrap();
    let engine = Config {
        service: "exec".into(),
        idle_timeout: None,
        ..Config::default()
    };
    let config = ExecConfig {
        shell,
        ..ExecConfig::default()
    };
    let gate = exec::gate(token.clone());
    let server = start(ExecServer::new(gate, ExecService::new(config)), engine).await;
    (server, token)
}

struct Session {
    result: Result<u8, ExecError>,
    stdout: String,
    stderr: String,
}

async fn session(server: &TestServer, token: &Token, form: LineForm, input: &str) -> Session {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let io = ShellIo {
        input: input.as_bytes(),
        stdout: &mut stdout,
        stderr: &mut stderr,
        prompt: true,
        interrupts: None,
    };
    let result = timeout(
        TEST_TIMEOUT,
        shell(&server.addr, &exec::client_options(token.clone()), form, io),
    )
    .await
    .expect("the shell finishes in time");
    Session {
        result,
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

#[tokio::test]
async fn two_commands_then_exit_print_both_outputs_and_nothing_after() {
    let (server, token) = start_exec(true).await;
    let input = "echo one\n\necho two >&2; echo three\nexit\necho never\n";
    let s = session(&server, &token, LineForm::Shell, input).await;
    assert_eq!(s.result.unwrap(), 0);
    assert_eq!(s.stdout, "one\nthree\n");
    assert!(s.stderr.contains("two\n"), "{}", s.stderr);
    assert!(!s.stderr.contains("never") && !s.stdout.contains("never"));
    assert!(s.stderr.starts_with("sockit> "));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn eof_ends_the_loop_with_the_last_exit_code() {
    let (server, token) = start_exec(true).await;
    let s = session(&server, &token, LineForm::Shell, "echo a\nexit 7").await;
    assert_eq!(s.result.unwrap(), 7);
    assert_eq!(s.stdout, "a\n");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_line_is_shown_and_the_loop_goes_on() {
    let (server, token) = start_exec(false).await;
    let long = "a".repeat(exec::MAX_COMMAND_BYTES + 10);
    let input = format!("{long}\necho b\n");
    let s = session(&server, &token, LineForm::Words, &input).await;
    assert!(s.stderr.contains("command_too_long"), "{}", s.stderr);
    assert_eq!(s.stdout, "b\n");
    assert_eq!(s.result.unwrap(), 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_server_without_shell_is_reported_once_with_how_to_run_the_lines() {
    let (server, token) = start_exec(false).await;
    let s = session(&server, &token, LineForm::Shell, "echo a\necho b\necho c\n").await;
    assert_eq!(s.result.unwrap(), 255);
    assert_eq!(
        s.stderr.matches("shell_not_allowed").count(),
        1,
        "{}",
        s.stderr
    );
    assert!(
        s.stderr.contains("`sockit exec shell --words ADDR`"),
        "{}",
        s.stderr
    );
    assert!(s.stdout.is_empty());
    let words = session(&server, &token, LineForm::Words, "printf %s| a  b\n").await;
    assert_eq!(words.result.unwrap(), 0);
    assert_eq!(words.stdout, "a|b|");
    server.stop().await.unwrap();
}

/// Pids of live `sleep SECS` processes.
fn live_sleeps(secs: &str) -> Vec<i32> {
    common::pids::live_with_argv(&["sleep", secs])
}

/// Polls (bounded) until a `sleep SECS` runs.
fn wait_for_sleep(secs: &str) {
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    while live_sleeps(secs).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the remote sleep never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_stops_the_running_command_and_the_next_line_runs() {
    let (server, token) = start_exec(true).await;
    let secs = "876.4";
    let (interrupt, interrupts) = tokio::sync::mpsc::channel(1);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let input = format!("sleep {secs}\necho after\n");
    let io = ShellIo {
        input: input.as_bytes(),
        stdout: &mut stdout,
        stderr: &mut stderr,
        prompt: false,
        interrupts: Some(interrupts),
    };
    let options = exec::client_options(token.clone());
    let send = tokio::task::spawn_blocking(move || {
        wait_for_sleep(secs);
        interrupt.blocking_send(exec::SignalName::Int).unwrap();
        interrupt
    });
    let result = timeout(
        TEST_TIMEOUT,
        shell(&server.addr, &options, LineForm::Shell, io),
    )
    .await
    .expect("the interrupt ended the sleep, not the test's timeout");
    drop(send.await.unwrap());
    assert_eq!(result.unwrap(), 0, "{}", String::from_utf8_lossy(&stderr));
    assert_eq!(String::from_utf8_lossy(&stdout), "after\n");
    assert!(live_sleeps(secs).is_empty());
    server.stop().await.unwrap();
}

/// Reads what the shell shows until it has shown `prompts` prompts in all.
async fn wait_for_prompts(
    screen: &mut tokio::io::DuplexStream,
    shown: &mut Vec<u8>,
    prompts: usize,
) {
    use tokio::io::AsyncReadExt;
    while String::from_utf8_lossy(shown).matches("sockit> ").count() < prompts {
        let mut buf = [0u8; 256];
        let n = screen.read(&mut buf).await.unwrap();
        assert!(n > 0, "the shell ended early");
        shown.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn an_interrupt_at_the_prompt_drops_the_line_being_typed_and_prompts_again() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
    let (server, token) = start_exec(true).await;
    let (mut typing, input) = tokio::io::duplex(1024);
    let (stderr, mut screen) = tokio::io::duplex(1024);
    let (interrupt, interrupts) = tokio::sync::mpsc::channel(1);
    let mut stdout = Vec::new();
    let io = ShellIo {
        input: BufReader::new(input),
        stdout: &mut stdout,
        stderr,
        prompt: true,
        interrupts: Some(interrupts),
    };
    let options = exec::client_options(token.clone());
    let person = async {
        let mut shown = Vec::new();
        wait_for_prompts(&mut screen, &mut shown, 1).await;
        // Typed, then Ctrl-C before Enter: neither await yields, so the shell sees both.
        typing.write_all(b"ech").await.unwrap();
        interrupt.try_send(exec::SignalName::Int).unwrap();
        wait_for_prompts(&mut screen, &mut shown, 2).await;
        typing.write_all(b"echo x\n").await.unwrap();
        drop(typing);
        wait_for_prompts(&mut screen, &mut shown, 3).await;
        drop(interrupt);
        let mut rest = Vec::new();
        screen.read_to_end(&mut rest).await.unwrap();
        shown.extend_from_slice(&rest);
        String::from_utf8_lossy(&shown).into_owned()
    };
    let (result, shown) = timeout(TEST_TIMEOUT, async {
        tokio::join!(shell(&server.addr, &options, LineForm::Words, io), person)
    })
    .await
    .expect("the shell finishes in time");
    assert_eq!(result.unwrap(), 0, "{shown}");
    assert_eq!(String::from_utf8_lossy(&stdout), "x\n", "{shown}");
    assert!(shown.starts_with("sockit> \nsockit> "), "{shown}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_interrupt_while_waiting_for_piped_lines_ends_the_shell_with_130() {
    let (server, token) = start_exec(true).await;
    let (_typing, input) = tokio::io::duplex(1024);
    let (interrupt, interrupts) = tokio::sync::mpsc::channel(1);
    interrupt.try_send(exec::SignalName::Int).unwrap();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let io = ShellIo {
        input: tokio::io::BufReader::new(input),
        stdout: &mut stdout,
        stderr: &mut stderr,
        prompt: false,
        interrupts: Some(interrupts),
    };
    let options = exec::client_options(token.clone());
    let result = timeout(
        TEST_TIMEOUT,
        shell(&server.addr, &options, LineForm::Shell, io),
    )
    .await
    .expect("the interrupt ended the shell");
    assert_eq!(result.unwrap(), 130);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn exit_with_a_number_ends_the_loop_with_it_in_either_form() {
    let (server, token) = start_exec(false).await;
    // In word form `exit` is no program on the server: the shell itself must take it.
    let s = session(
        &server,
        &token,
        LineForm::Words,
        "echo a\nexit 300\necho never\n",
    )
    .await;
    assert_eq!(s.result.unwrap(), 44, "300 modulo 256, as sh: {}", s.stderr);
    assert_eq!(s.stdout, "a\n");
    let s = session(&server, &token, LineForm::Words, "exit now\nfalse\n").await;
    assert!(s.stderr.contains("exit [N]"), "{}", s.stderr);
    assert_eq!(s.result.unwrap(), 1, "the loop went on to `false`");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_token_ends_the_shell() {
    let (server, _) = start_exec(true).await;
    let wrong = Token::generate().unwrap();
    let s = session(&server, &wrong, LineForm::Shell, "echo a\necho b\n").await;
    let err = s.result.unwrap_err();
    assert_eq!(err.code(), "auth_failed");
    assert!(s.stdout.is_empty());
    server.stop().await.unwrap();
}

/// The built binary's `exec serve --shell` on 127.0.0.1:0: the server, its address, and its
/// token file.
fn start_shell_server_binary() -> (Proc, String, tempfile::NamedTempFile) {
    let mut token = tempfile::NamedTempFile::new().unwrap();
    writeln!(token, "{}", Token::generate().unwrap().reveal()).unwrap();
    let mut cmd = sockit();
    cmd.args(["exec", "serve", "--shell", "--listen", "127.0.0.1:0"])
        .arg("--token-file")
        .arg(token.path())
        .stdout(Stdio::null());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    (server, addr, token)
}

/// `sockit exec shell ADDR` with its standard streams piped.
fn spawn_shell_client(addr: &str, token: &tempfile::NamedTempFile) -> std::process::Child {
    sockit()
        .args(["exec", "shell", addr, "--token-file"])
        .arg(token.path())
        .env_remove("SOCKIT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_binary_runs_lines_from_stdin_until_exit() {
    let (_server, addr, token) = start_shell_server_binary();
    let mut client = spawn_shell_client(&addr, &token);
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo first\necho second; false\nexit\necho never\n")
        .unwrap();
    let out = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "first\nsecond\n",
        "{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the last command's status: {stderr}"
    );
    // Lines piped in get no prompts, as with sh.
    assert!(!stderr.contains("sockit> "), "{stderr}");
}

#[test]
fn sigint_to_the_binary_interrupts_the_remote_command_and_the_loop_goes_on() {
    let (_server, addr, token) = start_shell_server_binary();
    let secs = "876.5";
    let mut client = spawn_shell_client(&addr, &token);
    client
        .stdin
        .take()
        .unwrap()
        .write_all(format!("sleep {secs}\necho after\n").as_bytes())
        .unwrap();
    wait_for_sleep(secs);
    let pid = nix::unistd::Pid::from_raw(client.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    while client.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = client.kill();
            panic!("the shell still runs {TEST_TIMEOUT:?} after the interrupt");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after\n", "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(live_sleeps(secs).is_empty(), "the remote sleep survived");
}
