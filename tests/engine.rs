//! The engine end to end, in-process on port 0: modes, limits, access lists, timeouts,
//! panics, abrupt peers and shutdown.

mod common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{start, start_at, TEST_TIMEOUT};
use sockit::engine::{Config, Conn, ConnInfo, Handler, Mode};
use sockit::net::{parse_net, Acl, Addr, Stream};
use sockit::service::echo::Echo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

async fn round_trip(addr: &Addr, msg: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = Stream::connect(addr).await?;
    s.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    timeout(TEST_TIMEOUT, s.read_exact(&mut buf)).await??;
    Ok(buf)
}

/// Reads until EOF or error; true if the server closed the connection.
async fn closed_by_server(s: &mut Stream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        timeout(TEST_TIMEOUT, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn echo_serves_tcp_v4_v6_and_unix() {
    let v4 = start(Echo::default(), Config::default()).await;
    assert_eq!(round_trip(&v4.addr, b"four").await.unwrap(), b"four");
    // IPv6 loopback may be absent in some sandboxes; the v4 check above still stands.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = start_at("[::1]:0", Echo::default(), Config::default()).await;
        assert_eq!(round_trip(&v6.addr, b"six").await.unwrap(), b"six");
        v6.stop().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = format!("unix:{}", dir.path().join("echo.sock").display());
    let unix = start_at(&path, Echo { upper: true }, Config::default()).await;
    assert_eq!(round_trip(&unix.addr, b"unix").await.unwrap(), b"UNIX");
    unix.stop().await.unwrap();
    v4.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_accepting_at_once_and_serve_returns() {
    let server = start(Echo::default(), Config::default()).await;
    let addr = server.addr.clone();
    assert_eq!(round_trip(&addr, b"x").await.unwrap(), b"x");
    server.stop().await.unwrap();
    assert!(
        Stream::connect(&addr).await.is_err(),
        "listener still open after shutdown"
    );
}

#[tokio::test]
async fn a_connected_idle_client_is_drained_then_forced_at_the_deadline() {
    let config = Config {
        drain_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let server = start(Echo::default(), config).await;
    let mut client = Stream::connect(&server.addr).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    client.read_exact(&mut buf).await.unwrap();
    // The echo handler ignores the shutdown signal, so only the drain deadline ends it.
    let started = tokio::time::Instant::now();
    server.stop().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(closed_by_server(&mut client).await);
}

/// Waits for shutdown, then says goodbye: a handler that drains gracefully.
struct Polite;

impl Handler for Polite {
    async fn handle(&self, mut conn: Conn, info: ConnInfo) -> io::Result<()> {
        conn.write_all(b"hello\n").await?;
        info.shutdown.cancelled().await;
        conn.write_all(b"bye\n").await?;
        conn.shutdown().await
    }
}

#[tokio::test]
async fn handlers_see_the_shutdown_signal_and_finish_in_time() {
    let server = start(Polite, Config::default()).await;
    let mut client = Stream::connect(&server.addr).await.unwrap();
    let mut hello = [0u8; 6];
    client.read_exact(&mut hello).await.unwrap();
    server.stop().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"bye\n");
}

#[tokio::test]
async fn sequential_mode_serves_one_client_at_a_time() {
    let config = Config {
        mode: Mode::Sequential,
        ..Config::default()
    };
    let server = start(Echo::default(), config).await;
    let mut first = Stream::connect(&server.addr).await.unwrap();
    first.write_all(b"1").await.unwrap();
    let mut b = [0u8; 1];
    first.read_exact(&mut b).await.unwrap();
    // The second connects (kernel backlog) but is not served while the first is open.
    let mut second = Stream::connect(&server.addr).await.unwrap();
    second.write_all(b"2").await.unwrap();
    let waited = timeout(Duration::from_millis(300), second.read_exact(&mut b)).await;
    assert!(waited.is_err(), "second client was served concurrently");
    drop(first);
    timeout(TEST_TIMEOUT, second.read_exact(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&b, b"2");
    drop(second);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn twice_max_conns_clients_wait_and_none_is_lost() {
    let config = Config {
        max_conns: 4,
        ..Config::default()
    };
    let server = start(Echo::default(), config).await;
    let mut clients = Vec::new();
    for i in 0..8u8 {
        let mut s = Stream::connect(&server.addr).await.unwrap();
        s.write_all(&[i; 100]).await.unwrap();
        clients.push(s);
    }
    // The first four are served; the rest wait in the backlog until a slot frees.
    let mut served = Vec::new();
    for (i, s) in clients.iter_mut().enumerate().take(4) {
        let mut buf = [0u8; 100];
        timeout(TEST_TIMEOUT, s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, [i as u8; 100]);
        served.push(i);
    }
    let mut fifth = [0u8; 100];
    let waited = timeout(
        Duration::from_millis(300),
        clients[4].read_exact(&mut fifth),
    )
    .await;
    assert!(waited.is_err(), "a fifth client was served past max_conns");
    // Closing the first four lets every waiting client through, data intact.
    clients.drain(..4);
    for (i, mut s) in clients.into_iter().enumerate() {
        let mut buf = [0u8; 100];
        timeout(TEST_TIMEOUT, s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, [(i + 4) as u8; 100]);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_peer_is_closed_at_the_idle_timeout_and_the_next_is_served() {
    let config = Config {
        idle_timeout: Some(Duration::from_millis(200)),
        ..Config::default()
    };
    let server = start(Echo::default(), config).await;
    let mut idle = Stream::connect(&server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(closed_by_server(&mut idle).await);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(round_trip(&server.addr, b"next").await.unwrap(), b"next");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_abrupt_reset_mid_stream_ends_only_that_connection() {
    let server = start(Echo::default(), Config::default()).await;
    let Addr::Inet(sa) = server.addr else {
        unreachable!()
    };
    for _ in 0..20 {
        let s = std::net::TcpStream::connect(sa).unwrap();
        let sock = socket2::Socket::from(s);
        // SO_LINGER 0: close sends RST instead of FIN, with echo data still in flight.
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        let mut s: std::net::TcpStream = sock.into();
        std::io::Write::write_all(&mut s, &[1u8; 200_000]).unwrap();
        drop(s);
    }
    assert_eq!(
        round_trip(&server.addr, b"still here").await.unwrap(),
        b"still here"
    );
    server.stop().await.unwrap();
}

/// Panics when the first byte is `!`, echoes otherwise.
struct Fragile {
    panics: Arc<AtomicUsize>,
}

impl Handler for Fragile {
    async fn handle(&self, mut conn: Conn, _info: ConnInfo) -> io::Result<()> {
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).await?;
        if b[0] == b'!' {
            self.panics.fetch_add(1, Ordering::SeqCst);
            panic!("handler bug triggered by a peer");
        }
        conn.write_all(&b).await
    }
}

#[tokio::test]
async fn a_panicking_handler_ends_only_its_own_connection() {
    let panics = Arc::new(AtomicUsize::new(0));
    let server = start(
        Fragile {
            panics: panics.clone(),
        },
        Config::default(),
    )
    .await;
    let mut bad = Stream::connect(&server.addr).await.unwrap();
    bad.write_all(b"!").await.unwrap();
    assert!(closed_by_server(&mut bad).await);
    assert_eq!(panics.load(Ordering::SeqCst), 1);
    assert_eq!(round_trip(&server.addr, b"k").await.unwrap(), b"k");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_denied_peer_is_closed_at_once_and_allowed_peers_are_served() {
    let config = Config {
        acl: Acl {
            allow: vec![parse_net("127.0.0.0/8").unwrap()],
            deny: vec![parse_net("127.0.0.1").unwrap()],
        },
        ..Config::default()
    };
    let server = start_at("127.0.0.1:0", Echo::default(), config).await;
    let port = common::port(&server.addr);
    let denied: Addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = Stream::connect(&denied).await.unwrap();
    let _ = s.write_all(b"x").await;
    assert!(closed_by_server(&mut s).await);
    // 127.0.0.2 is allowed: connect from it explicitly.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut ok = sock
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    ok.write_all(b"allowed").await.unwrap();
    let mut buf = [0u8; 7];
    timeout(TEST_TIMEOUT, ok.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"allowed");
    drop(ok);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn process_mode_without_a_process_form_is_refused() {
    struct Inline;
    impl Handler for Inline {
        async fn handle(&self, _c: Conn, _i: ConnInfo) -> io::Result<()> {
            Ok(())
        }
    }
    let listener = sockit::net::Listener::bind(
        &"127.0.0.1:0".parse().unwrap(),
        &sockit::net::BindOptions::default(),
    )
    .await
    .unwrap();
    let config = Config {
        mode: Mode::Process,
        ..Config::default()
    };
    let err = sockit::engine::serve(listener, Inline, config, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
}

/// A TCP connection to `addr` from the loopback address `from` (any port).
async fn connect_from(from: &str, addr: &Addr) -> tokio::net::TcpStream {
    let Addr::Inet(target) = addr else {
        unreachable!("a TCP test server")
    };
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(*target).await.unwrap()
}

/// Whether `stream` still gets its bytes echoed.
async fn echoes(stream: &mut tokio::net::TcpStream) -> bool {
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(timeout(TEST_TIMEOUT, stream.read_exact(&mut buf)).await, Ok(Ok(_)) if &buf == b"ping")
}

#[tokio::test]
async fn one_source_gets_at_most_its_share_of_connections() {
    let config = Config {
        max_conns_per_source: 2,
        ..Config::default()
    };
    let server = start(Echo::default(), config).await;
    // 127.0.0.2 stands for a remote host (127.0.0.1, which every local client shares, is not
    // counted).
    let mut first = connect_from("127.0.0.2", &server.addr).await;
    let mut second = connect_from("127.0.0.2", &server.addr).await;
    assert!(echoes(&mut first).await && echoes(&mut second).await);
    let mut third = connect_from("127.0.0.2", &server.addr).await;
    assert!(
        !echoes(&mut third).await,
        "a third connection from one source is closed"
    );
    let mut other = connect_from("127.0.0.3", &server.addr).await;
    assert!(echoes(&mut other).await, "another source is served");
    let mut locals = Vec::new();
    for _ in 0..5 {
        let mut local = connect_from("127.0.0.1", &server.addr).await;
        assert!(
            echoes(&mut local).await,
            "local clients are not capped per source"
        );
        locals.push(local);
    }
    // A freed place is reused once the server has seen the close.
    drop(first);
    let served = async {
        loop {
            let mut again = connect_from("127.0.0.2", &server.addr).await;
            if echoes(&mut again).await {
                break;
            }
        }
    };
    timeout(TEST_TIMEOUT, served)
        .await
        .expect("a place freed by a closed connection is given to the next");
    drop((second, third, other, locals));
    server.stop().await.unwrap();
}
