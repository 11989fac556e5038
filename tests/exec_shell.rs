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
    let s = session(&server, &token, LineForm::Shell, "echo a\necho b\n").await;
    assert_eq!(s.result.unwrap(), 255);
    assert_eq!(
        s.stderr.matches("shell_not_allowed").count(),
        2,
        "{}",
        s.stderr
    );
    assert!(
        s.stderr.contains("try `sockit exec shell --words`"),
        "{}",
        s.stderr
    );
    assert!(s.stdout.is_empty());
    let words = session(&server, &token, LineForm::Words, "printf %s| a  b\n").await;
    assert_eq!(words.result.unwrap(), 0);
    assert_eq!(words.stdout, "a|b|");
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

#[test]
fn the_binary_runs_lines_from_stdin_until_exit() {
    let mut token = tempfile::NamedTempFile::new().unwrap();
    writeln!(token, "{}", Token::generate().unwrap().reveal()).unwrap();
    let mut cmd = sockit();
    cmd.args([
        "exec",
        "serve",
        "--shell",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
    ])
    .arg(token.path())
    .stdout(Stdio::null());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    let mut client = sockit()
        .args(["exec", "shell", &addr, "--token-file"])
        .arg(token.path())
        .env_remove("SOCKIT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
