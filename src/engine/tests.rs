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

/// Answers one line per turn, then parks the connection for `park_for`; keeps each turn's
/// wait deadline as it was handed over, and tells each park.
struct Parking {
    park_for: Duration,
    turns: std::sync::Mutex<Vec<Option<Instant>>>,
    parked: tokio::sync::mpsc::UnboundedSender<Instant>,
}

impl Parking {
    fn new(park_for: Duration) -> (Arc<Parking>, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
        let (parked, parks) = tokio::sync::mpsc::unbounded_channel();
        let handler = Parking {
            park_for,
            turns: std::sync::Mutex::default(),
            parked,
        };
        (Arc::new(handler), parks)
    }

    fn turns(&self) -> Vec<Option<Instant>> {
        self.turns.lock().unwrap().clone()
    }
}

impl Handler for Parking {
    async fn handle(&self, _conn: Conn, _info: ConnInfo) -> io::Result<()> {
        unreachable!("the engine calls handle_parkable")
    }

    async fn handle_parkable(&self, mut conn: Conn, _info: ConnInfo) -> Handled {
        self.turns.lock().unwrap().push(conn.wait_deadline().get());
        // A byte at a time: nothing past the line is read, so nothing is held at the park.
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            match conn.read_u8().await {
                Ok(byte) => line.push(byte),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Handled::Done(Ok(())),
                Err(e) => return Handled::Done(Err(e)),
            }
        }
        if let Err(e) = conn.write_all(&line).await {
            return Handled::Done(Err(e));
        }
        let until = Instant::now() + self.park_for;
        let _ = self.parked.send(until);
        Handled::Park(conn, until)
    }
}

/// Serves `handler` on a loopback port with `config`; the server's task and its address.
async fn serve_on_loopback<H: Handler>(
    handler: H,
    config: Config,
    shutdown: &CancellationToken,
) -> (tokio::task::JoinHandle<io::Result<()>>, Addr) {
    let addr: Addr = "127.0.0.1:0".parse().unwrap();
    let listener = Listener::bind(&addr, &BindOptions::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(listener, handler, config, shutdown.clone()));
    (server, addr)
}

/// Sends `line` and reads it back.
async fn echo_line(client: &mut Stream, line: &[u8]) {
    client.write_all(line).await.unwrap();
    let mut reply = vec![0u8; line.len()];
    tokio::time::timeout(TEST_TIMEOUT, client.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, line);
}

/// Whether the server closes `client` within the test's bound.
async fn is_closed(client: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(TEST_TIMEOUT, client.read(&mut byte)).await;
    matches!(read, Ok(Ok(0)))
}

#[tokio::test]
async fn a_parked_connection_is_served_again_under_its_deadline_and_closed_at_shutdown() {
    let (handler, mut parks) = Parking::new(Duration::from_secs(60));
    let shutdown = CancellationToken::new();
    let (server, addr) =
        serve_on_loopback(Arc::clone(&handler), Config::default(), &shutdown).await;
    let mut client = Stream::connect(&addr).await.unwrap();
    echo_line(&mut client, b"one\n").await;
    let until = parks.recv().await.unwrap();
    echo_line(&mut client, b"two\n").await;
    parks.recv().await.unwrap();
    // The second turn began with the deadline the connection parked with.
    assert_eq!(handler.turns(), vec![None, Some(until)]);
    shutdown.cancel();
    assert!(
        is_closed(&mut client).await,
        "a parked connection outlived shutdown"
    );
    tokio::time::timeout(TEST_TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_parked_connection_keeps_its_place_under_the_connection_limit_until_its_deadline() {
    let (handler, mut parks) = Parking::new(Duration::from_millis(300));
    let config = Config {
        max_conns: 1,
        ..Config::default()
    };
    let shutdown = CancellationToken::new();
    let (_server, addr) = serve_on_loopback(Arc::clone(&handler), config, &shutdown).await;
    let mut first = Stream::connect(&addr).await.unwrap();
    echo_line(&mut first, b"first\n").await;
    let until = parks.recv().await.unwrap();
    // Beyond the limit: it waits in the backlog while the first is parked.
    let mut second = Stream::connect(&addr).await.unwrap();
    second.write_all(b"second\n").await.unwrap();
    let mut reply = [0u8; 7];
    tokio::time::timeout(TEST_TIMEOUT, second.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(
        Instant::now() >= until,
        "the second connection was served while the first held the only place"
    );
    assert!(is_closed(&mut first).await, "not closed at its deadline");
    assert_eq!(handler.turns().len(), 2);
    assert_eq!(&reply, b"second\n");
    shutdown.cancel();
}
