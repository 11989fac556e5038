//! A command that leaves a process behind outside its process group (`setsid cmd &`) still
//! gets its `exit` sent promptly (the session does not wait on pipes the escaped process
//! holds), and the escaped process dies with the session: on pipes and on a pty, found by the
//! session's mark in its environment or, when it cleared that, by the pipes it holds.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pids::live_with_argv;
use common::{have, sockit, start_exec_binary, token_file};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sockit::session::Token;

/// How long `exec run` may take, and the escaped process to be killed: the pipe drain bound
/// after exit, and generous slack.
const PROMPT_EXIT: Duration = Duration::from_secs(5);

/// How often the test looks at the client and at /proc.
const POLL: Duration = Duration::from_millis(20);

/// Pids of live `sleep SECS` processes.
fn live_sleeps(secs: &str) -> Vec<i32> {
    live_with_argv(&["sleep", secs])
}

/// A `sh -c` line that starts `launch sleep SECS` in the background, waits (a bounded spin)
/// until it has left the shell's process group, so the group kill at exit cannot reach it,
/// and prints `escaped` only if it did: the test proves nothing otherwise.
fn escaping_script(launch: &str, secs: &str) -> String {
    format!(
        "{launch} sleep {secs} & i=0; \
         while [ \"$(cut -d' ' -f5 /proc/$!/stat)\" = $$ ] && [ $i -lt 100000 ]; do i=$((i+1)); done; \
         [ \"$(cut -d' ' -f5 /proc/$!/stat)\" != $$ ] && echo escaped"
    )
}

/// Runs `script` with `exec run [flags]` against a fresh server; returns the client's exit
/// code (`None` if it was still waiting after [`PROMPT_EXIT`]), its stdout, and the `sleep
/// SECS` processes still alive [`PROMPT_EXIT`] later (which the test then kills by pid).
fn run_escaping(flags: &[&str], script: &str, secs: &str) -> (Option<i32>, String, Vec<i32>) {
    let token = token_file(Token::generate().expect("token").reveal());
    let (_server, addr) = start_exec_binary(token.path());
    let started = Instant::now();
    let mut child = sockit()
        .args(["exec", "run", &addr, "--token-file"])
        .arg(token.path())
        .args(flags)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("exec run");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > PROMPT_EXIT {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(POLL);
    };
    let deadline = Instant::now() + PROMPT_EXIT;
    while !live_sleeps(secs).is_empty() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    // Should any survive, end it by pid: this test's session started it.
    let survivors = live_sleeps(secs);
    for pid in &survivors {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (status.and_then(|s| s.code()), stdout, survivors)
}

fn assert_escaped_and_killed(result: (Option<i32>, String, Vec<i32>), stdout: &str) {
    let (code, out, survivors) = result;
    assert_eq!(
        out, stdout,
        "the sleep did not escape its group, or output was lost"
    );
    let Some(code) = code else {
        panic!("exec run still waits {PROMPT_EXIT:?} after the command exited");
    };
    assert_eq!(code, 0);
    assert!(
        survivors.is_empty(),
        "escaped sleeps {survivors:?} outlived their session"
    );
}

#[test]
fn a_setsid_background_process_neither_holds_back_the_exit_nor_outlives_the_session() {
    if !have("setsid", "a_setsid_background_process_…") {
        return;
    }
    let secs = "987.1";
    let result = run_escaping(&[], &escaping_script("setsid", secs), secs);
    assert_escaped_and_killed(result, "escaped\n");
}

#[test]
fn an_escaped_process_that_cleared_its_environment_is_found_by_the_pipes_it_holds() {
    if !have("setsid", "an_escaped_process_that_cleared_…") {
        return;
    }
    let secs = "987.2";
    // `env -i` leaves no mark; the sleep still holds the command's stdout and stderr.
    let launch = "env -i PATH=\"$PATH\" setsid";
    let result = run_escaping(&[], &escaping_script(launch, secs), secs);
    assert_escaped_and_killed(result, "escaped\n");
}

#[test]
fn a_setsid_background_process_on_a_pty_dies_with_the_session() {
    if !have("setsid", "a_setsid_background_process_on_a_pty_…") {
        return;
    }
    let secs = "987.3";
    // `-tt`: a pty although stdin is not a terminal; its output ends lines with CR LF.
    let result = run_escaping(&["-tt"], &escaping_script("setsid", secs), secs);
    assert_escaped_and_killed(result, "escaped\r\n");
}
