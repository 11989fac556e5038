//! The server's `--timeout` through the built binary: the command gets SIGTERM, then SIGKILL
//! a grace later, and the client says so and exits 124 (timeout(1)'s status), unlike a
//! command that died of a signal on its own.

mod common;

use std::process::Stdio;

use common::{sockit, token_file, Proc};

#[test]
fn exec_run_says_the_servers_timeout_stopped_the_command_and_exits_124() {
    let token = token_file("a-token-for-the-timeout-test");
    let mut cmd = sockit();
    cmd.args([
        "exec",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--timeout",
        "300ms",
    ])
    .arg("--token-file")
    .arg(token.path())
    .stdout(Stdio::null());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    let run = |argv: &[&str]| {
        sockit()
            .args(["exec", "run", &addr, "--token-file"])
            .arg(token.path())
            .arg("--")
            .args(argv)
            .env_remove("SOCKIT_TOKEN")
            .output()
            .unwrap()
    };
    let out = run(&["sleep", "100"]);
    assert_eq!(out.status.code(), Some(124));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stopped by the server's timeout after 0.3 s"),
        "{err}"
    );
    // A command killed by a signal of its own is not a timeout: 128 + N, no such message.
    let out = run(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(143));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("timeout"));
    server.terminate();
}
