//! An exec client that vanishes without a FIN or RST (a pulled cable) has its command killed
//! once TCP keepalive gives up on it. The server and the client run in two network
//! namespaces of this test's own, joined by a veth pair whose client end is then taken down.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{can_make_namespaces, Link, SERVER_IP};
use common::{token_file, Proc};

/// `--keepalive` for the server: probes after 2 s of quiet, one a second, six unanswered.
const KEEPALIVE: &str = "2s";

/// How long the kill may take: the keepalive's own time (2 s + 6 × 1 s) and generous slack.
const KILL_DEADLINE: Duration = Duration::from_secs(30);

/// Whether a process whose command line contains `needle` is running.
fn running(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(needle) && !text.contains("exec run")
        })
}

/// Kills, when dropped, any process left running `sleep MARKER` (only if the test failed:
/// the server was SIGKILLed and its command's group outlives it).
struct KillLeftover(String);

impl Drop for KillLeftover {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).replace('\0', " ").trim() == self.0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `deadline` passes; whether it held.
fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

#[test]
fn a_command_dies_when_its_client_vanishes_without_a_close() {
    if !can_make_namespaces("exec_vanish") {
        return;
    }
    let pid = std::process::id();
    let link = Link::new();
    let server_ip = SERVER_IP;

    let token = token_file("vanish-token-of-32-bytes-for-a-veth");
    let sockit = env!("CARGO_BIN_EXE_sockit");
    let mut server = Command::new("ip");
    server
        .args([
            "netns",
            "exec",
            &link.server.0,
            sockit,
            "exec",
            "serve",
            "--listen",
        ])
        .arg(format!("{server_ip}:0"))
        .args(["--keepalive", KEEPALIVE, "--token-file"])
        .arg(token.path())
        .stdout(Stdio::null());
    let mut server = Proc::spawn(server);
    let addr = server.listening_addr();

    // A quiet command with a name no other process has.
    let marker = format!("{}.{}", 100_000 + pid % 1000, pid);
    let _leftover = KillLeftover(format!("sleep {marker}"));
    let mut client = Command::new("ip");
    client
        .args([
            "netns",
            "exec",
            &link.client.0,
            sockit,
            "exec",
            "run",
            &addr,
            "--token-file",
        ])
        .arg(token.path())
        .args(["--", "sleep", &marker])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let client = Proc::spawn(client);
    assert!(
        wait_until(KILL_DEADLINE, || running(&format!("sleep {marker}"))),
        "the command started"
    );

    // The cable is pulled: nothing the client's kernel sends reaches the server any more,
    // not even the RST for the killed client's socket.
    link.set_client_up(false);
    drop(client);
    let started = Instant::now();
    assert!(
        wait_until(KILL_DEADLINE, || !running(&format!("sleep {marker}"))),
        "the command still runs {:?} after its client vanished",
        started.elapsed()
    );
    // Not at once: only keepalive could have told the server.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "killed after {:?}, before keepalive could have noticed (a reset got through?)",
        started.elapsed()
    );
    drop(server);
}
