//! The netcat role loses nothing, against itself and against the tools users already trust:
//! every pairing of `sockit listen`/`connect` with OpenBSD `nc -N`, `ncat` and `socat`, in
//! both roles, 100 MB each way at once, compared byte for byte. Each direction ends on its
//! own: stdin's end half-closes, the peer's end closes stdout, and both must be done before
//! either side exits.

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{have, sockit};

/// Bytes sent each way.
const SIZE: usize = 100 << 20;
/// How long a whole exchange may take (debug build, two cores shared with other tests).
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(120);
/// How long an external listener may take to start listening.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Peer {
    Sockit,
    Nc,
    Ncat,
    Socat,
}

impl Peer {
    fn program(self) -> &'static str {
        match self {
            Peer::Sockit => "sockit",
            Peer::Nc => "nc",
            Peer::Ncat => "ncat",
            Peer::Socat => "socat",
        }
    }

    fn listen(self, port: u16) -> Command {
        let mut cmd = self.command();
        let at = format!("127.0.0.1:{port}");
        match self {
            Peer::Sockit => cmd.args(["listen", &at]),
            // -N: shut the socket down on stdin's end, as sockit does without asking.
            Peer::Nc => cmd.args(["-N", "-l", "127.0.0.1", &port.to_string()]),
            Peer::Ncat => cmd.args(["-l", "127.0.0.1", &port.to_string()]),
            // -t: socat's default waits only 0.5 s for the other direction after one ends.
            Peer::Socat => cmd.args([
                "-t",
                "60",
                &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"),
                "STDIO",
            ]),
        };
        cmd
    }

    fn connect(self, port: u16) -> Command {
        let mut cmd = self.command();
        match self {
            Peer::Sockit => cmd.args(["connect", &format!("127.0.0.1:{port}")]),
            Peer::Nc => cmd.args(["-N", "127.0.0.1", &port.to_string()]),
            Peer::Ncat => cmd.args(["127.0.0.1", &port.to_string()]),
            Peer::Socat => cmd.args(["-t", "60", "STDIO", &format!("TCP:127.0.0.1:{port}")]),
        };
        cmd
    }

    fn command(self) -> Command {
        match self {
            Peer::Sockit => sockit(),
            other => Command::new(other.program()),
        }
    }
}

/// A file of `SIZE` pseudo-random bytes from `seed`.
fn data_file(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let mut out = BufWriter::new(File::create(&path).unwrap());
    let mut x = seed | 1;
    for _ in 0..SIZE / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.write_all(&x.to_le_bytes()).unwrap();
    }
    out.flush().unwrap();
    path
}

/// A port free now (the kernel's pick for port 0, released): external listeners take a port
/// number, and a connection made to test readiness would consume a one-shot listener.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// Waits until something listens on 127.0.0.1:`port`, read from /proc/net/tcp without
/// connecting.
fn wait_listening(port: u16) {
    let wanted = format!("0100007F:{port:04X}");
    let started = Instant::now();
    while started.elapsed() < LISTEN_DEADLINE {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let listening = table.lines().skip(1).any(|line| {
            let fields: Vec<_> = line.split_whitespace().collect();
            fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A")
        });
        if listening {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listened on port {port} within {LISTEN_DEADLINE:?}");
}

/// Waits for `child` until the shared deadline; kills it and fails past that.
fn wait(child: &mut Child, what: &str, started: Instant) -> ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > EXCHANGE_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {EXCHANGE_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(mut cmd: Command, stdin: &Path, stdout: &Path) -> Child {
    cmd.stdin(File::open(stdin).unwrap())
        .stdout(File::create(stdout).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    a.len() == b.len() && a == b
}

/// `listener` and `connector` exchange 100 MB each way at once; both must get everything
/// and exit 0.
fn exchange(listener: Peer, connector: Peer, test: &str) {
    for peer in [listener, connector] {
        if peer != Peer::Sockit && !have(peer.program(), test) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let to_connector = data_file(dir.path(), "a", 0x9e37_79b9_7f4a_7c15);
    let to_listener = data_file(dir.path(), "b", 0xd1b5_4a32_d192_ed03);
    let (got_listener, got_connector) = (dir.path().join("got-l"), dir.path().join("got-c"));
    let port = free_port();
    let started = Instant::now();
    let mut l = spawn(listener.listen(port), &to_connector, &got_listener);
    wait_listening(port);
    let mut c = spawn(connector.connect(port), &to_listener, &got_connector);
    let c_status = wait(&mut c, "the connector", started);
    let l_status = wait(&mut l, "the listener", started);
    let stderr = |child: &mut Child| {
        let mut text = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
        }
        text
    };
    let (c_err, l_err) = (stderr(&mut c), stderr(&mut l));
    assert!(
        same_file(&to_listener, &got_listener),
        "{listener:?} listening got {} of {SIZE} bytes from {connector:?}",
        std::fs::metadata(&got_listener).unwrap().len()
    );
    assert!(
        same_file(&to_connector, &got_connector),
        "{connector:?} connecting got {} of {SIZE} bytes from {listener:?}",
        std::fs::metadata(&got_connector).unwrap().len()
    );
    assert!(
        c_status.success(),
        "{connector:?} connecting: {c_status}: {c_err}"
    );
    assert!(
        l_status.success(),
        "{listener:?} listening: {l_status}: {l_err}"
    );
}

#[test]
fn sockit_to_sockit() {
    exchange(Peer::Sockit, Peer::Sockit, "sockit_to_sockit");
}

#[test]
fn sockit_listen_nc_connect() {
    exchange(Peer::Sockit, Peer::Nc, "sockit_listen_nc_connect");
}

#[test]
fn nc_listen_sockit_connect() {
    exchange(Peer::Nc, Peer::Sockit, "nc_listen_sockit_connect");
}

#[test]
fn sockit_listen_ncat_connect() {
    exchange(Peer::Sockit, Peer::Ncat, "sockit_listen_ncat_connect");
}

#[test]
fn ncat_listen_sockit_connect() {
    exchange(Peer::Ncat, Peer::Sockit, "ncat_listen_sockit_connect");
}

#[test]
fn sockit_listen_socat_connect() {
    exchange(Peer::Sockit, Peer::Socat, "sockit_listen_socat_connect");
}

#[test]
fn socat_listen_sockit_connect() {
    exchange(Peer::Socat, Peer::Sockit, "socat_listen_sockit_connect");
}

/// The issue's own report: a listener with nothing to say (stdin at its end at once) still
/// gets every byte the connector sends, and both exit 0.
#[test]
fn a_listener_with_empty_stdin_gets_everything_sent_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let sent = data_file(dir.path(), "sent", 42);
    let (empty, got, nothing) = (
        dir.path().join("empty"),
        dir.path().join("got"),
        dir.path().join("nothing"),
    );
    File::create(&empty).unwrap();
    let port = free_port();
    let started = Instant::now();
    let mut l = spawn(Peer::Sockit.listen(port), &empty, &got);
    wait_listening(port);
    let mut c = spawn(Peer::Sockit.connect(port), &sent, &nothing);
    assert!(wait(&mut c, "connect", started).success());
    assert!(wait(&mut l, "listen", started).success());
    assert!(
        same_file(&sent, &got),
        "{} bytes arrived",
        std::fs::metadata(&got).unwrap().len()
    );
}

/// With `--quit-after`, a session ends that long after its first direction, even though the
/// peer keeps its own side open; without it, it would wait for the peer.
#[test]
fn quit_after_ends_the_session_after_the_first_direction() {
    let dir = tempfile::tempdir().unwrap();
    let (hello, got) = (dir.path().join("hello"), dir.path().join("got"));
    std::fs::write(&hello, b"hello\n").unwrap();
    // A listener that never ends its side: it reads until killed.
    let port = free_port();
    let mut l = sockit()
        .args(["listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(File::create(&got).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    let started = Instant::now();
    let mut c = sockit()
        .args([
            "connect",
            &format!("127.0.0.1:{port}"),
            "--quit-after",
            "200ms",
        ])
        .stdin(File::open(&hello).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait(&mut c, "connect --quit-after", started).success());
    let _ = l.kill();
    let _ = l.wait();
    assert_eq!(std::fs::read(&got).unwrap(), b"hello\n");
}

/// `--send-only` ends once stdin is sent; `--recv-only` never reads stdin.
#[test]
fn send_only_and_recv_only_move_one_direction() {
    let dir = tempfile::tempdir().unwrap();
    let (words, got, none) = (
        dir.path().join("words"),
        dir.path().join("got"),
        dir.path().join("none"),
    );
    std::fs::write(&words, b"one way\n").unwrap();
    let port = free_port();
    let started = Instant::now();
    // The receiver's stdin holds bytes it must not send.
    let mut l = sockit()
        .args(["listen", &format!("127.0.0.1:{port}"), "--recv-only"])
        .stdin(File::open(&words).unwrap())
        .stdout(File::create(&got).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    let mut c = spawn(Peer::Sockit.connect(port), &words, &none);
    assert!(wait(&mut c, "connect", started).success());
    assert!(wait(&mut l, "listen --recv-only", started).success());
    assert_eq!(std::fs::read(&got).unwrap(), b"one way\n");
    assert_eq!(
        std::fs::read(&none).unwrap(),
        b"",
        "the receiver sent nothing"
    );

    // A sender that ignores what comes back and ends when its stdin is sent, although the
    // listener keeps its side open.
    let port = free_port();
    let mut l = sockit()
        .args(["listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::piped())
        .stdout(File::create(&got).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    let started = Instant::now();
    let mut c = sockit()
        .args(["connect", &format!("127.0.0.1:{port}"), "--send-only"])
        .stdin(File::open(&words).unwrap())
        .stdout(File::create(&none).unwrap())
        .spawn()
        .unwrap();
    assert!(wait(&mut c, "connect --send-only", started).success());
    // The sender is done once its bytes are in the socket; the listener writes them out in
    // its own time, and is stopped only after.
    while std::fs::read(&got).unwrap() != b"one way\n" && started.elapsed() < EXCHANGE_DEADLINE {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = l.kill();
    let _ = l.wait();
    assert_eq!(std::fs::read(&got).unwrap(), b"one way\n");
}

/// `listen --idle-timeout` closes a quiet peer in plain, `--keep-open` and `--exec` modes
/// (ncat -i).
#[test]
fn listen_idle_timeout_closes_a_quiet_peer_in_every_mode() {
    for mode in [&[][..], &["--keep-open"][..], &["--exec", "cat"][..]] {
        let port = free_port();
        let mut l = sockit()
            .args([
                "listen",
                &format!("127.0.0.1:{port}"),
                "--idle-timeout",
                "300ms",
            ])
            .args(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(port);
        let mut quiet = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        quiet
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 16];
        let read = std::io::Read::read(&mut quiet, &mut buf);
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{mode:?}: the quiet peer was not closed: {read:?}"
        );
        let timed_out = matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(!timed_out, "{mode:?}: still open after 10 s");
        let _ = l.kill();
        let _ = l.wait();
    }
}

/// `connect --udp` splits a large stdin read into datagrams a UDP socket can carry, and
/// reports a closed port as ncat and socat do.
#[test]
fn udp_connect_splits_large_reads_and_reports_a_closed_port() {
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    // One 64 KiB read is over UDP's 65,507-byte limit as a single datagram.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &payload).unwrap();
    let mut client = sockit()
        .args(["connect", "--udp", &format!("127.0.0.1:{port}")])
        .stdin(File::open(&big).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while got.len() < payload.len() {
        let (n, _) = server
            .recv_from(&mut buf)
            .expect("every datagram arrives on loopback");
        assert!(n <= 16 * 1024, "a {n}-byte datagram");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == payload, "the datagrams carry stdin in order");
    let status = wait(&mut client, "connect --udp", Instant::now());
    assert!(status.success(), "{status}");

    // A port nobody listens on: the ICMP refusal is an error, exit 1.
    let closed = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let hello = dir.path().join("hello");
    std::fs::write(&hello, b"anyone?\n").unwrap();
    let out = sockit()
        .args(["connect", "--udp", &format!("127.0.0.1:{closed}")])
        .stdin(File::open(&hello).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "{err}");
}

/// A bind on the path of a live Unix socket fails without connecting to it, so a one-shot
/// `nc -lU` is not consumed; `sockit listen unix:` removes its socket file when it ends.
#[test]
fn a_live_unix_listener_is_not_consumed_by_a_failed_bind() {
    if !have(
        "nc",
        "a_live_unix_listener_is_not_consumed_by_a_failed_bind",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sock");
    let got = dir.path().join("got");
    let mut nc = Command::new("nc")
        .arg("-lU")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(File::create(&got).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < LISTEN_DEADLINE, "nc -lU did not bind");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = sockit()
        .args(["listen", &format!("unix:{}", path.display())])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "a second listener on a live path"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("in use"), "{err}");
    // nc still waits for its one real client.
    let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    client.write_all(b"the real client\n").unwrap();
    drop(client);
    assert!(wait(&mut nc, "nc -lU", started).success());
    assert_eq!(std::fs::read(&got).unwrap(), b"the real client\n");

    // sockit's own listener leaves no file behind once its peer is done.
    let own = dir.path().join("own.sock");
    let mut listen = sockit()
        .args(["listen", &format!("unix:{}", own.display())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !own.exists() {
        assert!(
            started.elapsed() < LISTEN_DEADLINE,
            "sockit listen did not bind"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(std::os::unix::net::UnixStream::connect(&own).unwrap());
    assert!(wait(&mut listen, "sockit listen unix:", started).success());
    assert!(!own.exists(), "the socket file was left behind");
}
