//! The programs in `examples/`, built and run as real processes on port 0: each answers
//! upper-cased, with the scheduling of the socketserver class it mirrors, and exits 0 on
//! SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use common::TEST_TIMEOUT;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a cold `cargo build --examples` may take before the test gives up.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Variables cargo sets for a test run (besides `CARGO_PKG_*`), not in its own environment.
const CARGO_SET_FOR_TESTS: [&str; 5] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
];

/// The directory of the example binaries, built once per run with the profile and target
/// directory of this test: `cargo test` builds examples, `cargo test --test examples` does
/// not, and a binary left from an older build would test old code. A no-op when up to date.
fn examples_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // This test runs from <target>/<profile>/deps/.
        let test_exe = std::env::current_exe().unwrap();
        let profile_dir = test_exe.parent().and_then(Path::parent).unwrap();
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
        cargo
            .args(["build", "--examples", "--quiet", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // What cargo sets for this test would differ from the outer cargo's own environment,
        // and build scripts that watch those variables (ring's) would rebuild back and forth.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_") || CARGO_SET_FOR_TESTS.contains(&name.as_ref()) {
                cargo.env_remove(name.as_ref());
            }
        }
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => drop(cargo.arg("--release")),
            Some(other) => drop(cargo.args(["--profile", other])),
            None => panic!("unexpected test path {test_exe:?}"),
        }
        let child = cargo.spawn().expect("cargo runs");
        let status = wait_bounded(child, BUILD_TIMEOUT, "cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
        profile_dir.join("examples")
    })
}

/// Waits for `child` at most `limit`; kills it and fails the test past that.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> ExitStatus {
    let pid = Pid::from_raw(child.id() as i32);
    let mut stderr = child.stderr.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut err = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut err);
        }
        let _ = tx.send((child.wait(), err));
    });
    match rx.recv_timeout(limit) {
        Ok((status, err)) => {
            eprint!("{err}");
            status.unwrap()
        }
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// A running example, killed if the test fails before stopping it.
struct Example {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
}

impl Example {
    /// Starts `examples/NAME.rs` on port 0 and waits for its `listening on ADDR` line.
    fn start(name: &str) -> Example {
        Example::start_with(name, &["0"], &[])
    }

    /// Starts `examples/NAME.rs` with `args` and `env`, and waits for its `listening on ADDR`
    /// line.
    fn start_with(name: &str, args: &[&str], env: &[(&str, &str)]) -> Example {
        let mut child = Command::new(examples_dir().join(name))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        // Reads stderr to its end, so the example never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.parse::<SocketAddr>());
                }
            }
        });
        let mut example = Example {
            pid: child.id(),
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        example.addr = rx
            .recv_timeout(TEST_TIMEOUT)
            .expect("the example says where it listens")
            .expect("an IP address and port");
        assert_ne!(example.addr.port(), 0);
        example
    }

    /// A TCP client with every read bounded.
    fn connect(&self) -> TcpStream {
        let client = TcpStream::connect(self.addr).unwrap();
        client.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        client
    }

    /// Ctrl-C's sibling, SIGTERM: the example stops serving and exits 0.
    fn stop(mut self) {
        kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut child = self.child.take().expect("running");
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(TEST_TIMEOUT)
            .expect("the example exits on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `msg` and reads as many bytes back.
fn round_trip(client: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    client.write_all(msg).unwrap();
    let mut reply = vec![0u8; msg.len()];
    client.read_exact(&mut reply).unwrap();
    reply
}

#[test]
fn the_threaded_example_serves_clients_at_the_same_time() {
    let example = Example::start("upper_echo_threaded");
    let mut first = example.connect();
    let mut second = example.connect();
    assert_eq!(round_trip(&mut first, b"hello"), b"HELLO");
    // The first is still connected: the second is served all the same.
    assert_eq!(round_trip(&mut second, b"world 42"), b"WORLD 42");
    assert_eq!(round_trip(&mut first, b"again"), b"AGAIN");
    drop((first, second));
    example.stop();
}

#[test]
fn the_sequential_example_serves_one_client_at_a_time() {
    let example = Example::start("upper_echo_sequential");
    let mut first = example.connect();
    assert_eq!(round_trip(&mut first, b"hello"), b"HELLO");
    // The second connects (the backlog holds it) but waits while the first is served.
    let mut second = example.connect();
    second.write_all(b"next").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut reply = [0u8; 4];
    let waited = second.read_exact(&mut reply);
    assert!(waited.is_err(), "served while another client was");
    drop(first);
    second.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    second.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"NEXT");
    drop(second);
    example.stop();
}

#[test]
fn the_udp_example_answers_each_datagram_upper_cased() {
    let example = Example::start("upper_udp");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    client.connect(example.addr).unwrap();
    for msg in [&b"hello"[..], b"datagram two", b"x"] {
        client.send(msg).unwrap();
        let mut reply = [0u8; 64];
        let n = client.recv(&mut reply).unwrap();
        assert_eq!(&reply[..n], msg.to_ascii_uppercase());
    }
    example.stop();
}

#[test]
fn the_forking_example_serves_each_client_in_a_child_of_its_own() {
    let example = Example::start("upper_echo_forking");
    let mut first = example.connect();
    let mut second = example.connect();
    // Both answered while both are open: each child is running its client's handler.
    assert_eq!(round_trip(&mut first, b"hello"), b"HELLO");
    assert_eq!(round_trip(&mut second, b"world"), b"WORLD");
    let children = live_children(example.pid);
    let served_by = |client: &TcpStream| {
        let port = client.local_addr().unwrap().port().to_string();
        let child = children
            .iter()
            .find(|(_, remote_port)| *remote_port == port)
            .unwrap_or_else(|| panic!("no child serves port {port}: {children:?}"));
        child.0
    };
    let (a, b) = (served_by(&first), served_by(&second));
    assert_ne!(a, b, "one child served both clients");
    // Each child is the example program itself, started again.
    let exe = std::fs::read_link(format!("/proc/{}/exe", example.pid)).unwrap();
    for pid in [a, b] {
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(), exe);
    }
    assert_eq!(round_trip(&mut first, b"still me"), b"STILL ME");
    drop((first, second));
    example.stop();
}

/// The live (not zombie) children of `parent`, with the client port in their environment.
fn live_children(parent: u32) -> Vec<(u32, String)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // gone meanwhile
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.len() < 2 || fields[0] == "Z" || fields[1] != parent.to_string() {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let port = environ
            .split(|&b| b == 0)
            .filter_map(|var| var.strip_prefix(b"SOCKIT_REMOTE_PORT="))
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .next()
            .unwrap_or_default();
        children.push((pid, port));
    }
    children
}

/// Runs `framed_auth ask ADDR TEXT` with `token` (or none) in SOCKIT_TOKEN; its exit code,
/// stdout and stderr.
fn ask(addr: SocketAddr, token: Option<&str>, text: &str) -> (i32, String, String) {
    let mut cmd = Command::new(examples_dir().join("framed_auth"));
    cmd.args(["ask", &addr.to_string(), text])
        .env_remove("SOCKIT_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("SOCKIT_TOKEN", token);
    }
    let child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(TEST_TIMEOUT)
        .expect("the client finishes in time")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn framed_auth_answers_clients_with_the_token_and_refuses_the_rest() {
    let token = "0123456789abcdef0123456789abcdef";
    let server = Example::start_with("framed_auth", &["serve", "0"], &[("SOCKIT_TOKEN", token)]);
    let (code, out, err) = ask(server.addr, Some(token), "hello framed world");
    assert_eq!((code, out.as_str()), (0, "HELLO FRAMED WORLD\n"), "{err}");
    let (code, out, err) = ask(server.addr, Some("fedcba9876543210fedcba9876543210"), "x");
    assert_eq!(code, 1);
    assert!(out.is_empty() && err.contains("wrong token"), "{err}");
    let (code, _, err) = ask(server.addr, None, "x");
    assert_eq!(code, 1);
    assert!(err.contains("requires a token"), "{err}");
    // Still serving after the refusals.
    let (code, out, _) = ask(server.addr, Some(token), "again");
    assert_eq!((code, out.as_str()), (0, "AGAIN\n"));
    server.stop();
}
