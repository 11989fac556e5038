//! An exec client that vanishes without a FIN or RST (a pulled cable) has its command killed
//! once TCP keepalive gives up on it. The server and the client run in two network
//! namespaces of this test's own, joined by a veth pair whose client end is then taken down.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{token_file, Proc};

/// `--keepalive` for the server: probes after 2 s of quiet, one a second, six unanswered.
const KEEPALIVE: &str = "2s";

/// How long the kill may take: the keepalive's own time (2 s + 6 × 1 s) and generous slack.
const KILL_DEADLINE: Duration = Duration::from_secs(30);

/// A network namespace removed (with its links) when dropped.
struct Netns(String);

impl Netns {
    fn add(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        Netns(name)
    }

    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.0];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether namespaces can be made here; says why the test is skipped if not.
fn can_make_namespaces() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !(root && ip) {
        eprintln!(
            "SKIPPED exec_vanish: needs root and iproute2's `ip` to make network namespaces \
             (CI runs as root and installs iproute2)"
        );
    }
    root && ip
}

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
    if !can_make_namespaces() {
        return;
    }
    let pid = std::process::id();
    let net = pid % 250;
    let server_ns = Netns::add(format!("sockit-s-{pid}"));
    let client_ns = Netns::add(format!("sockit-c-{pid}"));
    let (server_if, client_if) = (format!("sks{pid}"), format!("skc{pid}"));
    let (server_ip, client_ip) = (format!("10.203.{net}.1"), format!("10.203.{net}.2"));
    ip(&[
        "link",
        "add",
        &server_if,
        "netns",
        &server_ns.0,
        "type",
        "veth",
        "peer",
        "name",
        &client_if,
        "netns",
        &client_ns.0,
    ]);
    server_ns.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{server_ip}/30"),
        "dev",
        &server_if,
    ]);
    server_ns.exec(&["ip", "link", "set", &server_if, "up"]);
    client_ns.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{client_ip}/30"),
        "dev",
        &client_if,
    ]);
    client_ns.exec(&["ip", "link", "set", &client_if, "up"]);

    let token = token_file("vanish-token-of-32-bytes-for-a-veth");
    let sockit = env!("CARGO_BIN_EXE_sockit");
    let mut server = Command::new("ip");
    server
        .args([
            "netns",
            "exec",
            &server_ns.0,
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
            &client_ns.0,
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
    client_ns.exec(&["ip", "link", "set", &client_if, "down"]);
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
