//! The engine's handler plumbing: shared handlers, and a handler tested with no network.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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

/// Answers each line upper-cased until the server shuts down, then says goodbye.
struct Shouting;

impl Handler for Shouting {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> io::Result<()> {
        let mut conn = BufReader::new(conn);
        let mut line = String::new();
        loop {
            line.clear();
            // read_line is not cancel safe: a half-read line is lost at shutdown, as it may be.
            tokio::select! {
                read = conn.read_line(&mut line) => {
                    if read? == 0 {
                        return Ok(());
                    }
                    conn.write_all(line.to_uppercase().as_bytes()).await?;
                }
                () = info.shutdown.cancelled() => break,
            }
        }
        conn.write_all(b"bye\n").await?;
        conn.shutdown().await
    }
}

#[tokio::test]
async fn a_handler_is_tested_over_a_stream_pair_without_a_network() {
    let (mut client, server) = Stream::pair().unwrap();
    let shutdown = CancellationToken::new();
    let info = ConnInfo::new(
        PeerAddr::Unix(None),
        server.local_addr().unwrap(),
        shutdown.clone(),
    );
    let handling = tokio::spawn(async move { Shouting.handle(Conn::from(server), info).await });
    client.write_all(b"hello\n").await.unwrap();
    let mut reply = [0u8; 6];
    tokio::time::timeout(TEST_TIMEOUT, client.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"HELLO\n");
    shutdown.cancel();
    let mut rest = Vec::new();
    tokio::time::timeout(TEST_TIMEOUT, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"bye\n");
    handling.await.unwrap().unwrap();
}

#[tokio::test]
async fn both_ends_of_a_stream_pair_are_unix_streams_that_see_each_others_close() {
    let (a, mut b) = Stream::pair().unwrap();
    assert!(matches!((&a, &b), (Stream::Unix(_), Stream::Unix(_))));
    assert_eq!(a.peer_addr().unwrap(), PeerAddr::Unix(None));
    drop(a);
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(TEST_TIMEOUT, b.read(&mut buf)).await;
    assert_eq!(read.unwrap().unwrap(), 0);
}
