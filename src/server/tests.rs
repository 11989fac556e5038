//! The engine's handler plumbing: shared handlers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::net::{BindOptions, Datagram};

/// Bounds every wait here, so a broken engine fails a test instead of hanging it.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts the connections (or datagrams) it has served and answers each with `ok`.
#[derive(Default)]
struct Counting {
    served: AtomicUsize,
}

impl Handler for Counting {
    async fn handle(&self, mut conn: Conn, _info: ConnInfo) -> io::Result<()> {
        self.served.fetch_add(1, Ordering::SeqCst);
        conn.write_all(b"ok").await?;
        conn.shutdown().await
    }
}

impl DatagramHandler for Counting {
    async fn handle(&self, _packet: &[u8], peer: &PeerAddr, socket: &Datagram) -> io::Result<()> {
        self.served.fetch_add(1, Ordering::SeqCst);
        socket.send_to(b"ok", peer).await.map(drop)
    }
}

#[tokio::test]
async fn a_shared_handler_is_served_and_its_owner_sees_the_state() {
    let addr: Addr = "127.0.0.1:0".parse().unwrap();
    let listener = Listener::bind(&addr, &BindOptions::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(Counting::default());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        Arc::clone(&handler),
        Config::default(),
        shutdown.clone(),
    ));
    for _ in 0..3 {
        let mut client = Stream::connect(&addr).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(TEST_TIMEOUT, client.read_to_end(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply, b"ok");
    }
    shutdown.cancel();
    tokio::time::timeout(TEST_TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(handler.served.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_shared_datagram_handler_is_served_and_its_owner_sees_the_state() {
    let addr: Addr = "127.0.0.1:0".parse().unwrap();
    let socket = Datagram::bind(&addr, &BindOptions::default())
        .await
        .unwrap();
    let Addr::Inet(server_addr) = socket.local_addr().unwrap() else {
        unreachable!("bound an IP address")
    };
    let handler = Arc::new(Counting::default());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_datagram(
        socket,
        Arc::clone(&handler),
        Config::default(),
        shutdown.clone(),
    ));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(server_addr).await.unwrap();
    for _ in 0..2 {
        client.send(b"ping").await.unwrap();
        let mut reply = [0u8; 8];
        let n = tokio::time::timeout(TEST_TIMEOUT, client.recv(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&reply[..n], b"ok");
    }
    shutdown.cancel();
    tokio::time::timeout(TEST_TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(handler.served.load(Ordering::SeqCst), 2);
}
