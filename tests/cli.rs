//! The built binary: exit codes, signals, process mode, netcat role, `serve`, fd exhaustion,
//! and real peers (nc, socat, ncat, Python).

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{have, run_with_input, sockit, Proc, TEST_TIMEOUT};

fn start_echo(args: &[&str]) -> (Proc, String) {
    let mut cmd = sockit();
    cmd.args(["echo", "--listen", "127.0.0.1:0"]).args(args);
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    (proc, addr)
}

fn tcp_round_trip(addr: &str, msg: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    s.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn invalid_command_line_input_exits_2_with_clap_error() {
    for args in [
        &["echo", "--listen", "nonsense"][..],
        &["echo", "--mode", "forking"],
        &["echo", "--udp", "--mode", "process"],
        &["connect"],
        &["bench", "echo", "127.0.0.1:1", "--conns", "many"],
        // More history than a joining client's queue could take in one replay.
        &["chat", "serve", "--history-bytes", "3M"],
        &["frobnicate"],
    ] {
        let out = sockit().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn an_address_already_in_use_is_a_clear_error_with_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sockit().args(["echo", "--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
}

#[test]
fn connecting_to_a_closed_port_exits_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = sockit();
    cmd.args(["connect", &format!("127.0.0.1:{port}")]);
    let (code, _, err) = run_with_input(cmd, b"");
    assert_eq!(code, 1);
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn sigterm_shuts_down_gracefully_with_exit_0() {
    let (mut proc, addr) = start_echo(&["--upper"]);
    assert_eq!(tcp_round_trip(&addr, b"tutorial"), b"TUTORIAL");
    let status = proc.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(&addr).is_err());
}

#[test]
fn process_mode_runs_a_child_per_connection() {
    let (_proc, addr) = start_echo(&["--mode", "process", "--upper"]);
    let mut a = TcpStream::connect(&addr).unwrap();
    let mut b = TcpStream::connect(&addr).unwrap();
    for (s, msg) in [(&mut a, &b"first"[..]), (&mut b, b"second")] {
        s.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        s.write_all(msg).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, msg.to_ascii_uppercase());
    }
    // Half-close: the child sees EOF, exits, and the peer sees the close.
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn listen_exec_gives_the_child_the_peer_address() {
    let mut cmd = sockit();
    cmd.args([
        "listen",
        "127.0.0.1:0",
        "--sh-exec",
        "echo \"$SOCKIT_PROTO $SOCKIT_REMOTE_ADDR $SOCKIT_REMOTE_PORT $SOCKIT_LOCAL_PORT\"",
    ]);
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let me = s.local_addr().unwrap();
    let server_port = addr.rsplit(':').next().unwrap();
    assert_eq!(
        out.trim(),
        format!("TCP {} {} {server_port}", me.ip(), me.port())
    );
    // Without --keep-open one peer is served, then listen exits (as ncat).
    assert_eq!(proc.wait_exit().code(), Some(0));
}

#[test]
fn listen_exec_with_keep_open_runs_a_command_for_each_peer() {
    let mut cmd = sockit();
    cmd.args([
        "listen",
        "127.0.0.1:0",
        "--keep-open",
        "--sh-exec",
        "echo hi",
    ]);
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hi\n");
    }
    assert!(proc.child.try_wait().unwrap().is_none(), "still listening");
}

#[test]
fn process_mode_closes_an_idle_connection_at_the_idle_timeout() {
    let mut cmd = sockit();
    cmd.args([
        "echo",
        "--listen",
        "127.0.0.1:0",
        "--mode",
        "process",
        "--idle-timeout",
        "300ms",
    ]);
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    s.write_all(b"hi").unwrap();
    let mut got = [0u8; 2];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");
    // Then silence: the child gives up at the idle timeout and the peer sees EOF, long
    // before the test's own timeout.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("closed by the server, not timed out here");
    assert!(rest.is_empty());
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "the server goes on"
    );
}

#[test]
fn exec_on_a_public_address_without_allow_is_refused() {
    let out = sockit()
        .args(["listen", "0.0.0.0:0", "--exec", "/bin/cat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow"));
}

#[test]
fn connect_sends_stdin_half_closes_and_exits_when_the_peer_closes() {
    let (_proc, addr) = start_echo(&[]);
    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut cmd = sockit();
    cmd.args(["connect", &addr]);
    let (code, out, err) = run_with_input(cmd, &input);
    assert_eq!(code, 0, "{err}");
    assert!(out == input, "echoed bytes differ");
}

#[test]
fn listen_and_connect_make_a_one_to_one_chat() {
    let mut listen = sockit();
    listen
        .args(["listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut server = Proc::spawn(listen);
    let addr = server.listening_addr();
    let mut server_in = server.child.stdin.take().unwrap();
    let mut server_out = server.child.stdout.take().unwrap();

    let mut connect = sockit();
    connect
        .args(["connect", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut client = Proc::spawn(connect);
    let mut client_in = client.child.stdin.take().unwrap();
    let mut client_out = client.child.stdout.take().unwrap();

    client_in.write_all(b"hi from the client\n").unwrap();
    let mut buf = [0u8; 19];
    server_out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi from the client\n");
    server_in.write_all(b"hi back\n").unwrap();
    let mut buf = [0u8; 8];
    client_out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi back\n");
    // The client hangs up; the listener sees EOF and exits 0.
    drop(client_in);
    drop(server_in);
    assert_eq!(client.child.wait().unwrap().code(), Some(0));
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
}

#[test]
fn serve_runs_the_configured_set_and_stops_together() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\nudp = true\nupper = true\n",
    )
    .unwrap();
    let mut cmd = sockit();
    cmd.args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn(cmd);
    let mut stdout = std::io::BufReader::new(proc.child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        lines.push(line);
    }
    let addr_of = |transport: &str| {
        let line = lines.iter().find(|l| l.contains(transport)).unwrap();
        line.split_whitespace().last().unwrap().to_string()
    };
    assert_eq!(tcp_round_trip(&addr_of(" tcp "), b"abc"), b"abc");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    udp.send_to(b"dgram", addr_of(" udp ")).unwrap();
    let mut buf = [0u8; 16];
    let n = udp.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"DGRAM");
    assert!(lines[2].contains("serving 2 services"));
    assert_eq!(proc.terminate().code(), Some(0));
}

#[test]
fn serve_default_config_binds_loopback_only() {
    let out = sockit().args(["serve", "--print-config"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let listens: Vec<_> = text.lines().filter(|l| l.starts_with("listen")).collect();
    assert!(!listens.is_empty());
    assert!(
        listens.iter().all(|l| l.contains("127.0.0.1")),
        "{listens:?}"
    );
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_file_descriptors_backs_off_without_spinning_and_recovers() {
    if !have("prlimit", "running_out_of_file_descriptors") {
        return;
    }
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64", "--"])
        .arg(env!("CARGO_BIN_EXE_sockit"))
        .args(["echo", "--listen", "127.0.0.1:0"]);
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    // More clients than the server has descriptors: accept starts failing with EMFILE.
    let clients: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    proc.wait_for_stderr("backing off");
    let pid = proc.child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1)); // an interval to measure CPU over
    let used = cpu_ticks(pid) - before;
    // 100 ticks would be one core spinning for the whole second.
    assert!(
        used < 20,
        "server used {used} ticks of CPU in 1 s while out of fds"
    );
    drop(clients);
    // Once descriptors free up, new clients are served.
    assert_eq!(tcp_round_trip(&addr, b"recovered"), b"recovered");
}

#[test]
fn real_peers_nc_socat_and_python_talk_to_echo() {
    let (_proc, addr) = start_echo(&["--upper"]);
    let (host, port) = addr.rsplit_once(':').unwrap();
    if have("nc", "real_peers: nc") {
        let mut cmd = Command::new("nc");
        cmd.args(["-N", host, port]);
        let (code, out, err) = run_with_input(cmd, b"from nc\n");
        assert_eq!((code, out.as_slice()), (0, &b"FROM NC\n"[..]), "{err}");
    }
    if have("socat", "real_peers: socat") {
        let mut cmd = Command::new("socat");
        cmd.args(["-", &format!("TCP:{addr}")]);
        let (code, out, err) = run_with_input(cmd, b"from socat\n");
        assert_eq!((code, out.as_slice()), (0, &b"FROM SOCAT\n"[..]), "{err}");
    }
    if have("python3", "real_peers: python3") {
        // The lessons' client: send a line, recv(1024), print it.
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n\
             s.connect(('{host}', {port}))\ns.send(b'hello from python')\n\
             print(s.recv(1024).decode())\ns.close()\n"
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "HELLO FROM PYTHON"
        );
    }
}

#[test]
fn udp_echo_and_connect_work_with_socat_and_each_other() {
    let (_proc, addr) = start_echo(&["--udp"]);
    let mut cmd = sockit();
    cmd.args(["connect", "--udp", &addr]);
    let (code, out, err) = run_with_input(cmd, b"datagram\n");
    assert_eq!((code, out.as_slice()), (0, &b"datagram\n"[..]), "{err}");
    if have("socat", "udp_echo: socat") {
        let mut cmd = Command::new("socat");
        cmd.args(["-", &format!("UDP:{addr}")]);
        let (_, out, err) = run_with_input(cmd, b"via socat\n");
        assert_eq!(out, b"via socat\n", "{err}");
    }
}

#[test]
fn sockit_connect_talks_to_an_nc_listener() {
    if !have("nc", "sockit_connect_talks_to_an_nc_listener") {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // nc -l prints nothing when ready, so retry connecting until it listens (bounded).
    let mut nc = Command::new("nc")
        .args(["-l", "127.0.0.1", &port.to_string()])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TEST_TIMEOUT;
    let addr = format!("127.0.0.1:{port}");
    let (code, err) = loop {
        let mut cmd = sockit();
        cmd.args(["connect", &addr]);
        let (code, _, err) = run_with_input(cmd, b"to nc\n");
        if code == 0 || Instant::now() > deadline {
            break (code, err);
        }
        std::thread::sleep(Duration::from_millis(20)); // retry interval while nc starts
    };
    assert_eq!(code, 0, "{err}");
    let mut got = String::new();
    nc.stdout.take().unwrap().read_to_string(&mut got).unwrap();
    let _ = nc.wait();
    assert_eq!(got, "to nc\n");
}

#[test]
fn telnet_talks_to_echo() {
    if !have("telnet", "telnet_talks_to_echo") {
        return;
    }
    let (_proc, addr) = start_echo(&["--upper"]);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut telnet = Command::new("telnet")
        .args([host, port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = telnet.stdin.take().unwrap();
    let stdout = telnet.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    stdin.write_all(b"hello telnet\r\n").unwrap();
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("HELLO TELNET") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    drop(stdin);
    let _ = telnet.kill();
    let _ = telnet.wait();
    assert!(found, "telnet never showed the echo; saw {seen:?}");
}

#[test]
fn listen_keep_open_serves_many_peers_and_broadcasts_stdin() {
    let mut listen = sockit();
    listen
        .args(["listen", "127.0.0.1:0", "--keep-open"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut server = Proc::spawn(listen);
    let addr = server.listening_addr();
    let mut server_in = server.child.stdin.take().unwrap();
    let mut server_out = std::io::BufReader::new(server.child.stdout.take().unwrap());
    let mut peers: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    for (i, p) in peers.iter_mut().enumerate() {
        p.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        p.write_all(format!("peer {i}\n").as_bytes()).unwrap();
    }
    let mut lines = vec![String::new(), String::new()];
    for line in &mut lines {
        std::io::BufRead::read_line(&mut server_out, line).unwrap();
    }
    lines.sort();
    assert_eq!(lines, ["peer 0\n", "peer 1\n"]);
    // Both peers announced themselves, so both are subscribed: stdin reaches each.
    server_in.write_all(b"to all\n").unwrap();
    for p in &mut peers {
        let mut buf = [0u8; 7];
        p.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"to all\n");
    }
}

#[test]
fn connect_speaks_unix_stream_and_unix_datagram() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, name) in [(None, "stream.sock"), (Some("--udp"), "dgram.sock")] {
        let path = format!("unix:{}", dir.path().join(name).display());
        let mut cmd = sockit();
        cmd.args(["echo", "--upper", "--listen", &path]).args(flag);
        let mut server = Proc::spawn(cmd);
        server.wait_for_stderr("listening on");
        let mut cmd = sockit();
        cmd.arg("connect").args(flag).arg(&path);
        let (code, out, err) = run_with_input(cmd, b"over a unix socket\n");
        assert_eq!(code, 0, "{flag:?}: {err}");
        assert_eq!(out, b"OVER A UNIX SOCKET\n", "{flag:?}");
    }
}

/// `sockit serve` running the set `toml` describes (with no `SOCKIT_TOKEN`), its stdout, and
/// the directory holding the config.
fn serve_set(
    toml: &str,
) -> (
    Proc,
    std::io::BufReader<std::process::ChildStdout>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = sockit();
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env_remove("SOCKIT_TOKEN")
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn(cmd);
    let stdout = std::io::BufReader::new(proc.child.stdout.take().unwrap());
    (proc, stdout, dir)
}

#[test]
fn serve_runs_exec_with_a_generated_token_shown_once() {
    let (mut proc, mut stdout, _dir) =
        serve_set("[[service]]\nkind = \"exec\"\nlisten = \"127.0.0.1:0\"\n");
    let mut read_line = || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        line
    };
    let banner = read_line();
    assert!(banner.starts_with("exec"), "{banner}");
    let addr = banner.split_whitespace().last().unwrap().to_string();
    let note = read_line();
    let token = note
        .split_whitespace()
        .nth(1)
        .filter(|_| note.trim_start().starts_with("token:"))
        .unwrap_or_else(|| panic!("no token line: {note}"))
        .to_string();
    let out = sockit()
        .args(["exec", "run", &addr, "--", "echo", "via serve"])
        .env("SOCKIT_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"via serve\n");
    let logs = proc.terminate();
    assert_eq!(logs.code(), Some(0));
}

/// The engine flags every server command takes, under one spelling.
const ENGINE_FLAGS: [&str; 11] = [
    "--max-conns",
    "--max-pending",
    "--max-pending-per-source",
    "--max-conns-per-source",
    "--idle-timeout",
    "--drain-timeout",
    "--allow",
    "--deny",
    "--backlog",
    "--reuse-port",
    "--keepalive",
];

#[test]
fn every_server_command_takes_every_engine_flag() {
    let servers: [&[&str]; 7] = [
        &["echo"],
        &["listen"],
        &["exec", "serve"],
        &["files", "serve"],
        &["recv"],
        &["chat", "serve"],
        &["http", "serve"],
    ];
    for command in servers {
        let out = sockit().args(command).arg("--help").output().unwrap();
        assert!(out.status.success(), "{command:?} --help");
        let help = String::from_utf8(out.stdout).unwrap();
        for flag in ENGINE_FLAGS {
            // A flag's own line in the help: "  --flag <VALUE>" or "  --flag".
            let listed = help
                .lines()
                .any(|l| l.trim_start().split([' ', '=']).next() == Some(flag));
            assert!(
                listed,
                "`sockit {}` lacks {flag}:\n{help}",
                command.join(" ")
            );
        }
    }
    // And every `sockit serve` kind takes them as keys.
    let out = sockit().args(["serve", "--print-config"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for kind in ["echo", "exec", "files", "chat", "http"] {
        let section = text
            .split("# kind = ")
            .find(|s| s.starts_with(&format!("\"{kind}\"")))
            .unwrap_or_else(|| panic!("--print-config has no {kind} section"));
        for flag in ENGINE_FLAGS {
            let key = flag.trim_start_matches("--");
            assert!(
                section.contains(&format!("#   {key} = ")),
                "serve's {kind} entries lack `{key}`"
            );
        }
    }
}

#[test]
fn a_bad_service_set_exits_2_naming_the_entry_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let entry = |extra: &str| {
        format!(
            "[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\n{extra}"
        )
    };
    let cases = [
        (entry("lisen = \"x\"\n"), "`lisen`"),
        (entry("dir = \"x\"\n"), "`dir`"),
        (entry("idle-timeout = \"-5s\"\n"), "idle-timeout"),
        (
            "[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:7109\"\n\n\
             [[service]]\nkind = \"files\"\nlisten = \"127.0.0.1:7109\"\ndir = \"d\"\n"
                .to_owned(),
            "entries 1 and 2",
        ),
    ];
    for (i, (toml, named)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&config, toml).unwrap();
        let out = sockit()
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{toml}: {err}");
        assert!(err.contains(named), "{toml}: {err}");
        if *named != "entries 1 and 2" {
            assert!(err.contains("entry 2"), "{toml}: {err}");
        }
        assert!(
            out.stdout.is_empty(),
            "nothing was bound or announced: {toml}"
        );
    }
}

#[test]
fn completions_and_manual_pages_are_generated_from_the_command_line() {
    for shell in ["bash", "zsh", "fish"] {
        let out = sockit().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("sockit") && script.contains("exec"),
            "{shell}"
        );
    }
    let bash = sockit().args(["completions", "bash"]).output().unwrap();
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&bash.stdout)?;
            child.wait()
        });
    match checked {
        Ok(status) => assert!(status.success(), "the bash script does not parse"),
        Err(e) => eprintln!("skipped the bash syntax check: cannot run bash ({e})"),
    }
    let page = sockit().arg("man").output().unwrap();
    assert!(page.status.success());
    let page = String::from_utf8(page.stdout).unwrap();
    assert!(page.contains(".TH sockit 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let status = sockit()
        .args(["man", "--dir"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let run = std::fs::read_to_string(dir.path().join("sockit-exec-run.1")).unwrap();
    assert!(run.contains(r"\-\-token\-file"), "{run}");
}

#[test]
fn a_missing_config_file_exits_2_like_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = sockit()
        .args(["serve", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("nope.toml"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_set_of_one_says_serving_1_service() {
    let (mut proc, mut stdout, _dir) =
        serve_set("[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\n");
    let mut lines = String::new();
    while !lines.contains("serving") {
        let n = std::io::BufRead::read_line(&mut stdout, &mut lines).unwrap();
        assert!(n > 0, "no serving line: {lines}");
    }
    assert!(lines.contains("serving 1 service;"), "{lines}");
    assert_eq!(proc.terminate().code(), Some(0));
}

#[test]
fn two_unix_datagram_entries_on_one_path_are_not_called_udp() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dgram.toml");
    let sock = dir.path().join("d.sock");
    let entry = format!(
        "[[service]]\nkind = \"echo\"\nlisten = \"unix:{}\"\nudp = true\n",
        sock.display()
    );
    std::fs::write(&config, format!("{entry}\n{entry}")).unwrap();
    let out = sockit()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("entries 1 and 2"), "{err}");
    assert!(
        err.contains("(datagram)") && !err.contains("(udp)"),
        "{err}"
    );
}

#[test]
fn tls_pin_alone_means_tls() {
    let token = common::token_file(sockit::session::Token::generate().unwrap().reveal());
    // A plaintext server: a client that tries TLS is told the server does not speak it.
    let (_server, addr) = common::start_exec_binary(token.path());
    let pin = format!("sha256:{}", "ab".repeat(32));
    let out = sockit()
        .args(["exec", "run", &addr, "--tls-pin", &pin, "--token-file"])
        .arg(token.path())
        .args(["--", "true"])
        .env_remove("SOCKIT_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not speak TLS"), "{err}");
    assert_eq!(out.status.code(), Some(255), "{err}");
}

/// What `sockit [--color WHEN] echo` writes on stderr from start to a SIGTERM (its log lines
/// include the shutdown one), stderr being a pipe or, with `on_a_terminal`, a pty.
fn echo_stderr(color: Option<&str>, no_color: bool, on_a_terminal: bool) -> String {
    let mut cmd = sockit();
    if let Some(when) = color {
        cmd.args(["--color", when]);
    }
    cmd.args(["echo", "--listen", "127.0.0.1:0"]);
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let (mut child, mut reader): (std::process::Child, Box<dyn Read + Send>) = if on_a_terminal {
        let pty = nix::pty::openpty(None, None).unwrap();
        let child = cmd.stderr(Stdio::from(pty.slave)).spawn().unwrap();
        (child, Box::new(std::fs::File::from(pty.master)))
    } else {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        (child, Box::new(stderr))
    };
    // The `cmd` holding the pty slave is gone, so the reader ends once the child has exited.
    drop(cmd);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        // A pty reports the end as EIO.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("listening on") {
                let _ = tx.send(None);
            }
        }
        let _ = tx.send(Some(String::from_utf8_lossy(&seen).into_owned()));
    });
    assert_eq!(
        rx.recv_timeout(TEST_TIMEOUT).unwrap(),
        None,
        "never listened"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    loop {
        if let Some(seen) = rx.recv_timeout(TEST_TIMEOUT).unwrap() {
            assert!(seen.contains("shutting down"), "no log line: {seen}");
            return seen;
        }
    }
}

#[test]
fn log_colours_follow_color_and_no_color() {
    let coloured = |s: &str| s.contains('\x1b');
    assert!(coloured(&echo_stderr(Some("always"), true, false)));
    assert!(!coloured(&echo_stderr(None, false, false)), "a pipe");
    assert!(!coloured(&echo_stderr(Some("never"), false, true)));
    assert!(coloured(&echo_stderr(None, false, true)), "a terminal");
    assert!(!coloured(&echo_stderr(None, true, true)), "NO_COLOR");
    assert!(coloured(&echo_stderr(Some("always"), true, true)));
}
