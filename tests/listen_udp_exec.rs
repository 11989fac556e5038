//! `listen --udp --keep-open --exec CMD`: a command per datagram, the datagram on its stdin and
//! its stdout sent back (issue 16 item 7); bounded in time, refused to service ports.

mod common;

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::Duration;

use common::{sockit, start_datagram, Proc, TEST_TIMEOUT};
use sockit::engine::{Config, ProcessCommand};
use sockit::tools::netcat::{DatagramExec, DatagramExecConfig};

/// `sockit listen --udp --keep-open` with `args` on a free loopback port.
fn start(args: &[&str]) -> (Proc, String) {
    let mut cmd = sockit();
    cmd.args(["listen", "--udp", "--keep-open", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    (server, addr)
}

/// A client socket on loopback that gives up after `wait`.
fn client(wait: Duration) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket
}

#[test]
fn each_datagram_runs_the_command_and_its_stdout_is_the_reply() {
    let (_server, addr) = start(&["--sh-exec", "tr a-z A-Z; echo \" from $SOCKIT_PROTO\""]);
    let socket = client(TEST_TIMEOUT);
    let mut buf = [0u8; 2048];
    for word in ["hello", "second datagram"] {
        socket.send_to(word.as_bytes(), &addr).unwrap();
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(from.to_string(), addr);
        let want = format!("{} from UDP\n", word.to_uppercase());
        assert_eq!(String::from_utf8_lossy(&buf[..n]), want);
    }
}

#[test]
fn udp_exec_without_keep_open_is_refused_plainly() {
    let out = sockit()
        .args(["listen", "--udp", "--exec", "cat", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("add --keep-open"), "{stderr}");
}

fn command(line: &str) -> ProcessCommand {
    ProcessCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), line.into()],
        env: Vec::new(),
    }
}

#[tokio::test]
async fn a_command_past_its_time_is_killed_and_the_server_answers_the_next() {
    let config = DatagramExecConfig {
        timeout: Duration::from_millis(300),
        ..DatagramExecConfig::new(command(
            "read line; case \"$line\" in slow*) sleep 30;; esac; echo \"got $line\"",
        ))
    };
    let server = start_datagram("127.0.0.1:0", DatagramExec::new(config), Config::default()).await;
    let addr = server.addr.to_string();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"slow\n", &addr).await.unwrap();
    socket.send_to(b"fast\n", &addr).await.unwrap();
    let mut buf = [0u8; 256];
    let (n, _) = tokio::time::timeout(TEST_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("the fast one is answered")
        .unwrap();
    assert_eq!(&buf[..n], b"got fast\n");
    // The slow one is killed at its timeout and never answered.
    let late = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await;
    assert!(late.is_err(), "the killed command was answered: {late:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn output_past_one_datagram_is_cut_to_the_largest_udp_payload() {
    let config = DatagramExecConfig::new(command("yes"));
    let server = start_datagram("127.0.0.1:0", DatagramExec::new(config), Config::default()).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"x", server.addr.to_string()).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, _) = tokio::time::timeout(TEST_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    assert_eq!(n, sockit::tools::netcat::MAX_DATAGRAM_REPLY_BYTES);
    server.stop().await.unwrap();
}
