//! Datagram echo end to end (UDP and Unix datagram), in-process.

mod common;

use std::time::Duration;

use common::{start_datagram, TEST_TIMEOUT};
use sockit::engine::{Config, Mode};
use sockit::net::Addr;
use sockit::service::echo::EchoDatagram;
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::time::timeout;

fn udp_target(addr: &Addr) -> std::net::SocketAddr {
    match addr {
        Addr::Inet(sa) => *sa,
        Addr::Unix(_) => unreachable!(),
    }
}

#[tokio::test]
async fn udp_echo_replies_to_each_datagram_source_in_both_modes() {
    for mode in [Mode::Concurrent, Mode::Sequential] {
        let config = Config {
            mode,
            ..Config::default()
        };
        let server =
            start_datagram("127.0.0.1:0", EchoDatagram::new(true, 1000, false), config).await;
        let target = udp_target(&server.addr);
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        a.send_to(b"from a", target).await.unwrap();
        b.send_to(b"from b", target).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = timeout(TEST_TIMEOUT, a.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"FROM A"[..], target));
        let (n, _) = timeout(TEST_TIMEOUT, b.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"FROM B");
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_datagram_larger_than_the_buffer_gets_no_reply_and_the_next_does() {
    let config = Config {
        max_datagram: 512,
        mode: Mode::Sequential,
        ..Config::default()
    };
    let server = start_datagram("127.0.0.1:0", EchoDatagram::new(false, 1000, false), config).await;
    let target = udp_target(&server.addr);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&[b'x'; 1000], target).await.unwrap();
    client.send_to(&[b'y'; 512], target).await.unwrap();
    // Loopback keeps order: the first reply must be the one for the datagram that fit.
    let mut buf = [0u8; 2048];
    let (n, _) = timeout(TEST_TIMEOUT, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], &[b'y'; 512][..]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_flooding_source_is_rate_limited() {
    // limit_loopback: treat the loopback client like a remote one for this test.
    let config = Config {
        mode: Mode::Sequential,
        ..Config::default()
    };
    let server = start_datagram("127.0.0.1:0", EchoDatagram::new(false, 20, true), config).await;
    let target = udp_target(&server.addr);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..200u32 {
        client.send_to(&i.to_be_bytes(), target).await.unwrap();
    }
    let mut replies = 0;
    let mut buf = [0u8; 16];
    // Count replies until the server has been quiet for a while: the bucket allows a burst of
    // one second's rate, plus what refills during the exchange.
    while let Ok(Ok(_)) = timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await {
        replies += 1;
    }
    assert!(
        replies >= 20,
        "only {replies} replies: the burst should pass"
    );
    assert!(
        replies < 60,
        "{replies} of 200 replies: the flood was not limited"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unix_datagram_echo_replies_to_a_named_client() {
    let dir = tempfile::tempdir().unwrap();
    let server_path = dir.path().join("echo.dgram");
    let server = start_datagram(
        &format!("unix:{}", server_path.display()),
        EchoDatagram::new(false, 1000, false),
        Config::default(),
    )
    .await;
    let client = UnixDatagram::bind(dir.path().join("client.dgram")).unwrap();
    client.send_to(b"over unix", &server_path).await.unwrap();
    let mut buf = [0u8; 64];
    let n = timeout(TEST_TIMEOUT, client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"over unix");
    server.stop().await.unwrap();
}

/// Plays a second echo server: answers every datagram from `server` with the same bytes, and
/// returns how many it got before the server went quiet (at most `cap`).
async fn bounce(reflector: &UdpSocket, server: std::net::SocketAddr, cap: usize) -> usize {
    let mut buf = [0u8; 64];
    let mut bounced = 0;
    while bounced < cap {
        let Ok(Ok((n, from))) =
            timeout(Duration::from_millis(300), reflector.recv_from(&mut buf)).await
        else {
            break;
        };
        assert_eq!(from, server);
        reflector.send_to(&buf[..n], server).await.unwrap();
        bounced += 1;
    }
    bounced
}

#[tokio::test]
async fn a_ping_pong_with_another_echo_ends() {
    let config = Config {
        mode: Mode::Sequential,
        ..Config::default()
    };
    let server = start_datagram("127.0.0.1:0", EchoDatagram::new(false, 1000, false), config).await;
    let target = udp_target(&server.addr);
    // A spoofed datagram makes two echoes answer each other; here the test is the other one,
    // with two datagrams in flight. Loopback is exempt from the per-source rate.
    let reflector = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    reflector.send_to(b"ping", target).await.unwrap();
    reflector.send_to(b"pong", target).await.unwrap();
    let bounced = bounce(&reflector, target, 10_000).await;
    assert!(
        bounced <= sockit::service::echo::LOOP_STREAK as usize + 2,
        "the loop went on for {bounced} datagrams"
    );
    // The guard is per source: a client sending its own data is still answered.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(b"hello", target).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = timeout(TEST_TIMEOUT, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"hello");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_source_on_a_service_port_gets_no_answer() {
    let config = Config {
        mode: Mode::Sequential,
        ..Config::default()
    };
    let server = start_datagram("127.0.0.1:0", EchoDatagram::new(false, 1000, false), config).await;
    let target = udp_target(&server.addr);
    // SSDP, CoAP and memcached ports need no privilege; one of them is free on any test host.
    let mut bound = None;
    for port in [1900, 5683, 11211] {
        if let Ok(socket) = UdpSocket::bind(("127.0.0.1", port)).await {
            bound = Some(socket);
            break;
        }
    }
    let Some(service) = bound else {
        eprintln!("skipped: ports 1900, 5683 and 11211 are all taken on 127.0.0.1");
        return;
    };
    service.send_to(b"M-SEARCH", target).await.unwrap();
    // A client sent after it is answered, so the service port's datagram was handled first.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(b"after", target).await.unwrap();
    let mut buf = [0u8; 16];
    timeout(TEST_TIMEOUT, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let unanswered = timeout(Duration::from_millis(200), service.recv_from(&mut buf)).await;
    assert!(unanswered.is_err(), "a service port was answered");
    server.stop().await.unwrap();

    let server = start_datagram(
        "127.0.0.1:0",
        EchoDatagram::new(false, 1000, false).answer_service_ports(true),
        Config::default(),
    )
    .await;
    service
        .send_to(b"M-SEARCH", udp_target(&server.addr))
        .await
        .unwrap();
    let (n, _) = timeout(TEST_TIMEOUT, service.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"M-SEARCH", "answered when allowed");
    server.stop().await.unwrap();
}
