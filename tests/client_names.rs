//! Every client command takes a host name where it takes an address (`HOST:PORT`, resolved
//! through /etc/hosts and DNS, as `connect` does), and says which name failed when one does
//! not resolve.

mod common;

use std::fs;
use std::net::ToSocketAddrs;
use std::os::unix::fs::PermissionsExt;

use common::{run_with_input, sockit, Proc};

/// Runs `sockit ARGS...` with an empty stdin; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let mut cmd = sockit();
    cmd.args(args).env_remove("SOCKIT_TOKEN");
    let (code, out, err) = run_with_input(cmd, b"");
    (code, String::from_utf8_lossy(&out).into_owned(), err)
}

/// The machine's own name, if the resolver maps it to loopback (where the test servers
/// listen); besides `localhost`, which sockit reads without a resolver, it is the one name a
/// resolver always has.
fn loopback_host_name() -> Option<String> {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let host = host.trim().to_owned();
    let loopback = (host.as_str(), 1)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next().is_some_and(|a| a.ip().is_loopback()));
    (!host.is_empty() && loopback).then_some(host)
}

#[test]
fn put_and_ls_reach_a_server_by_host_name() {
    let Some(host) = loopback_host_name() else {
        eprintln!("SKIPPED put_and_ls_reach_a_server_by_host_name: this machine's name does not resolve to loopback");
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let mut cmd = sockit();
    cmd.args(["files", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(store.path())
        .env_remove("SOCKIT_TOKEN");
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    let port = addr.rsplit_once(':').unwrap().1;
    let by_name = format!("{host}:{port}");

    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("named.txt");
    fs::write(&file, b"reached by name").unwrap();
    let (code, _, err) = run(&["put", &by_name, file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read(store.path().join("named.txt")).unwrap(),
        b"reached by name"
    );
    let (code, out, err) = run(&["ls", &by_name]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("named.txt"), "{out}");
    drop(server);
}

#[test]
fn a_name_that_does_not_resolve_is_named_and_each_client_fails_its_own_way() {
    // `.invalid` never resolves (RFC 2606); exec exits 255 as ssh does for an unknown host,
    // the other clients 1.
    let name = "no-such-host.invalid:7009";
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("x");
    fs::write(&file, b"x").unwrap();
    let token = src.path().join("token");
    fs::write(&token, "0123456789abcdef0123456789abcdef").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let token = token.to_str().unwrap();
    for (args, want) in [
        (
            vec!["exec", "run", name, "--token-file", token, "--", "true"],
            255,
        ),
        (vec!["put", name, file.to_str().unwrap()], 1),
        (vec!["ls", name], 1),
        (vec!["chat", "join", name, "--nick", "ann"], 1),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.contains("no-such-host.invalid"), "{args:?}: {err}");
    }
}

#[test]
fn a_client_given_a_bare_port_is_told_the_host_is_missing() {
    for args in [
        vec!["ls", "7009"],
        vec!["chat", "join", "7009", "--nick", "ann"],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("without a host"), "{args:?}: {err}");
    }
}
