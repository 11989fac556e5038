//! `connect` and `listen` addresses and reports, run as the built binary: names resolve, nc's
//! `HOST PORT` form, a bare port for `listen`, and `-v` as `nc -v` reports.

mod common;

use std::io::Read;
use std::net::ToSocketAddrs;
use std::process::Stdio;

use common::{run_with_input, sockit, Proc};

/// `sockit listen ARGS...` with `stdin`; returns it and the address it reports.
fn listen(args: &[&str]) -> (Proc, String) {
    let mut cmd = sockit();
    cmd.arg("listen")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    (proc, addr)
}

fn stdout_of(proc: &mut Proc) -> Vec<u8> {
    let mut out = Vec::new();
    proc.child
        .stdout
        .take()
        .expect("stdout piped")
        .read_to_end(&mut out)
        .expect("read stdout");
    out
}

fn port_of(addr: &str) -> String {
    addr.rsplit_once(':').expect("HOST:PORT").1.to_owned()
}

fn connect(args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut cmd = sockit();
    cmd.args(args);
    run_with_input(cmd, input)
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn connect_takes_nc_style_host_and_port_through_the_resolver_and_reports_with_v() {
    let (mut server, addr) = listen(&["127.0.0.1:0"]);
    // Two words: `localhost` goes to the system resolver (/etc/hosts), not the parser.
    let (code, _, err) = connect(&["-v", "connect", "localhost", &port_of(&addr)], b"by name");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("connected to {addr}")), "{err}");
    assert_eq!(stdout_of(&mut server), b"by name");
    assert!(server.wait_exit().success());
}

#[test]
fn connect_without_v_says_nothing_on_success() {
    let (mut server, addr) = listen(&["127.0.0.1:0"]);
    let (code, _, err) = connect(&["connect", &addr], b"quiet");
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "", "connect is silent without -v, as nc");
    assert_eq!(stdout_of(&mut server), b"quiet");
}

#[test]
fn a_host_name_in_host_colon_port_resolves() {
    // The machine's own name is the one name besides localhost a resolver always has; it
    // must point at this host's loopback for a loopback listener to be reachable by it.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim().to_owned();
    let loopback = (host.as_str(), 1)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next().is_some_and(|a| a.ip().is_loopback()));
    if host.is_empty() || !loopback {
        eprintln!("SKIPPED a_host_name_in_host_colon_port_resolves: {host:?} does not resolve to loopback here");
        return;
    }
    let (mut server, addr) = listen(&[&format!("{host}:0")]);
    let (code, _, err) = connect(
        &["connect", &format!("{host}:{}", port_of(&addr))],
        b"hosts",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout_of(&mut server), b"hosts");
}

#[test]
fn listen_takes_a_bare_port_as_loopback_and_nc_style_host_and_port() {
    let port = free_port();
    let (_server, addr) = listen(&[&port.to_string()]);
    assert_eq!(addr, format!("127.0.0.1:{port}"));

    let port = free_port();
    let (mut server, addr) = listen(&["127.0.0.1", &port.to_string()]);
    assert_eq!(addr, format!("127.0.0.1:{port}"));
    let (code, _, err) = connect(&["connect", "127.0.0.1", &port.to_string()], b"pair");
    assert_eq!(code, 0, "{err}");
    assert_eq!(stdout_of(&mut server), b"pair");
}

#[test]
fn a_bare_port_for_connect_says_the_host_is_missing() {
    let (code, _, err) = connect(&["connect", "9000"], b"");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("without a host") && err.contains("127.0.0.1:9000"),
        "{err}"
    );
}

#[test]
fn malformed_and_unknown_targets_are_named() {
    for (args, code, needle) in [
        (
            &["connect", "no-such-host.invalid:80"][..],
            1,
            "cannot resolve",
        ),
        (
            &["connect", "no-such-host.invalid", "80"],
            1,
            "cannot resolve",
        ),
        (&["connect", "example.org"], 2, "port is missing"),
        (&["connect", "127.0.0.1", "http"], 2, "not a number"),
        (&["listen", "unix:/tmp/x.sock", "80"], 2, "takes no port"),
    ] {
        let (got, _, err) = connect(args, b"");
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn connect_v_reports_each_refused_address() {
    let port = free_port().to_string();
    let (code, _, err) = connect(&["-v", "connect", "127.0.0.1", &port], b"");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn listen_reports_a_unix_peer_with_its_path_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let server_path = dir.path().join("s.sock");
    let (mut server, _) = listen(&["-v", &format!("unix:{}", server_path.display())]);
    // The client binds a name of its own with a terminal escape in it: peer text.
    let client_path = dir.path().join("c\x1b[2Jx.sock");
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    sock.bind(&socket2::SockAddr::unix(&client_path).unwrap())
        .unwrap();
    sock.connect(&socket2::SockAddr::unix(&server_path).unwrap())
        .unwrap();
    let line = server.wait_for_stderr("connection from");
    assert!(line.contains("c\\x1b[2Jx.sock"), "{line:?}");
    assert!(!line.contains('\x1b'), "{line:?}");
    drop(sock);
}
