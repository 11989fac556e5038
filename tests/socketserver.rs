//! CPython's `Lib/test/test_socketserver.py`, the cases that apply to this engine: the echo
//! over every server kind and mode (`test_TCPServer` … `test_ForkingUnixStreamServer`),
//! `test_shutdown`, `test_close_immediately`, `test_tcpserver_bind_leak`, `ErrorHandlerTest`,
//! `test_shutdown_request_called_if_verify_request_false`, `test_threads_reaped` and
//! `SocketWriterTest.test_write`. Written for sockit, not translated: in-process servers on
//! port 0, process mode through the built binary.

mod common;

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{pattern, sockit, start_at, start_datagram, Proc, TestServer, TEST_TIMEOUT};
use sockit::engine::{serve, serve_datagram, Config, Conn, ConnInfo, Handler, Mode};
use sockit::net::{parse_net, Acl, Addr, BindOptions, Datagram, Listener, Stream};
use sockit::service::echo::{echo_stream, Echo, EchoDatagram};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Lines sent per connection, each read back before the next is sent.
const ROUNDS: usize = 3;
/// Connections (or datagram clients) per server in the echo cases.
const CLIENTS: usize = 2;

fn config(mode: Mode) -> Config {
    Config {
        mode,
        ..Config::default()
    }
}

/// The `round`th line a client sends.
fn line(client: usize, round: usize) -> String {
    format!("hello world, client {client}, round {round}\n")
}

/// `stream_examine`: each client sends a line and reads it back, [`ROUNDS`] times, on one
/// connection; clients one after the other, so a sequential server serves them all.
async fn stream_examine(addr: &Addr) {
    for client in 0..CLIENTS {
        let mut conn = BufReader::new(Stream::connect(addr).await.unwrap());
        for round in 0..ROUNDS {
            let sent = line(client, round);
            conn.write_all(sent.as_bytes()).await.unwrap();
            let mut back = String::new();
            timeout(TEST_TIMEOUT, conn.read_line(&mut back))
                .await
                .expect("the echo in time")
                .unwrap();
            assert_eq!(back, sent, "{addr}, client {client}");
        }
    }
}

/// `dgram_examine`: each client sends a datagram and reads the reply, [`ROUNDS`] times.
async fn dgram_examine(addr: &Addr, dir: &Path) {
    for client in 0..CLIENTS {
        let socket = match addr {
            Addr::Inet(_) => {
                Datagram::Udp(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap())
            }
            // A Unix datagram client needs a name of its own to be answered.
            Addr::Unix(_) => {
                let path = dir.join(format!("client{client}.sock"));
                Datagram::Unix(tokio::net::UnixDatagram::bind(path).unwrap(), None)
            }
        };
        let server = match addr {
            Addr::Inet(sa) => sockit::net::PeerAddr::Inet(*sa),
            Addr::Unix(path) => sockit::net::PeerAddr::Unix(Some(path.clone())),
        };
        for round in 0..ROUNDS {
            let sent = line(client, round);
            socket.send_to(sent.as_bytes(), &server).await.unwrap();
            let mut buf = [0u8; 256];
            let (n, _, _) = timeout(TEST_TIMEOUT, socket.recv_from(&mut buf))
                .await
                .expect("the echo in time")
                .unwrap();
            assert_eq!(&buf[..n], sent.as_bytes(), "{addr}, client {client}");
        }
    }
}

async fn check_stream_server(unix: bool, mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let at = match unix {
        true => format!("unix:{}", dir.path().join("echo.sock").display()),
        false => "127.0.0.1:0".to_string(),
    };
    let server = start_at(&at, Echo::default(), config(mode)).await;
    stream_examine(&server.addr).await;
    server.stop().await.unwrap();
}

async fn check_datagram_server(unix: bool, mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let at = match unix {
        true => format!("unix:{}", dir.path().join("echo.sock").display()),
        false => "127.0.0.1:0".to_string(),
    };
    let server = start_datagram(&at, EchoDatagram::new(false, 1000, false), config(mode)).await;
    dgram_examine(&server.addr, dir.path()).await;
    server.stop().await.unwrap();
}

/// The built binary's `sockit echo --mode process` on `listen`: the forking servers.
async fn check_process_server(unix: bool) {
    let dir = tempfile::tempdir().unwrap();
    let listen = match unix {
        true => format!("unix:{}", dir.path().join("echo.sock").display()),
        false => "127.0.0.1:0".to_string(),
    };
    let (_proc, addr) = start_binary(&["echo", "--mode", "process", "--listen", &listen]);
    stream_examine(&addr).await;
}

/// Starts the built binary and waits, bounded, for its `listening on ADDR` line.
fn start_binary(args: &[&str]) -> (Proc, Addr) {
    let mut cmd = sockit();
    cmd.args(args).stdin(Stdio::null());
    let mut proc = Proc::spawn(cmd);
    let stderr = proc.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    // Reads stderr to its end, so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in io::BufRead::lines(stderr).map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once("listening on ") {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(addr.parse::<Addr>());
            }
        }
    });
    let addr = rx
        .recv_timeout(TEST_TIMEOUT)
        .expect("the server says where it listens")
        .expect("a valid address");
    (proc, addr)
}

#[tokio::test]
async fn tcp_server() {
    check_stream_server(false, Mode::Sequential).await;
}

#[tokio::test]
async fn threading_tcp_server() {
    check_stream_server(false, Mode::Concurrent).await;
}

#[tokio::test]
async fn forking_tcp_server() {
    check_process_server(false).await;
}

#[tokio::test]
async fn unix_stream_server() {
    check_stream_server(true, Mode::Sequential).await;
}

#[tokio::test]
async fn threading_unix_stream_server() {
    check_stream_server(true, Mode::Concurrent).await;
}

#[tokio::test]
async fn forking_unix_stream_server() {
    check_process_server(true).await;
}

#[tokio::test]
async fn udp_server() {
    check_datagram_server(false, Mode::Sequential).await;
}

#[tokio::test]
async fn threading_udp_server() {
    check_datagram_server(false, Mode::Concurrent).await;
}

#[tokio::test]
async fn unix_datagram_server() {
    check_datagram_server(true, Mode::Sequential).await;
}

#[tokio::test]
async fn threading_unix_datagram_server() {
    check_datagram_server(true, Mode::Concurrent).await;
}

/// `ForkingUDPServer` has no counterpart: a datagram has no connection to hand a child.
#[tokio::test]
async fn a_forking_datagram_server_is_refused_not_run() {
    let socket = Datagram::bind(&"127.0.0.1:0".parse().unwrap(), &BindOptions::default())
        .await
        .unwrap();
    let handler = EchoDatagram::new(false, 1000, false);
    let served = serve_datagram(
        socket,
        handler,
        config(Mode::Process),
        CancellationToken::new(),
    );
    let err = timeout(TEST_TIMEOUT, served).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
}

#[tokio::test]
async fn shutdown_makes_every_server_return() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<TestServer> = Vec::new();
    for i in 0..20 {
        let mode = [Mode::Sequential, Mode::Concurrent][i % 2];
        let unix = format!("unix:{}", dir.path().join(format!("{i}.sock")).display());
        let server = match i % 4 {
            0 => start_at("127.0.0.1:0", Echo::default(), config(mode)).await,
            1 => start_at(&unix, Echo::default(), config(mode)).await,
            2 => {
                let echo = EchoDatagram::new(false, 1000, false);
                start_datagram("127.0.0.1:0", echo, config(mode)).await
            }
            _ => start_datagram(&unix, EchoDatagram::new(false, 1000, false), config(mode)).await,
        };
        servers.push(server);
    }
    for server in &servers {
        server.shutdown.cancel();
    }
    for (i, server) in servers.into_iter().enumerate() {
        let served = timeout(TEST_TIMEOUT, server.task).await;
        let served = served.unwrap_or_else(|_| panic!("server {i} still serving"));
        served.expect("no panic").expect("serving ends cleanly");
    }
}

#[tokio::test]
async fn a_server_shut_down_before_it_serves_returns_at_once() {
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), &BindOptions::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = serve(
        listener,
        Echo::default(),
        Config::default(),
        shutdown.clone(),
    );
    timeout(TEST_TIMEOUT, stream).await.unwrap().unwrap();
    assert!(
        Stream::connect(&addr).await.is_err(),
        "the listener is closed"
    );
    let socket = Datagram::bind(&"127.0.0.1:0".parse().unwrap(), &BindOptions::default())
        .await
        .unwrap();
    let echo = EchoDatagram::new(false, 1000, false);
    let datagram = serve_datagram(socket, echo, Config::default(), shutdown);
    timeout(TEST_TIMEOUT, datagram).await.unwrap().unwrap();
}

/// Descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Other tests in this binary open and close descriptors meanwhile: a leak of one per failed
/// bind shows as 1,024 more, far beyond what they hold at once.
const OTHER_TESTS_FDS: usize = 256;

#[tokio::test]
async fn failed_binds_leak_no_descriptors() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let unix_path = dir.path().join("taken.sock");
    let _unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    let taken = [
        Addr::Inet(tcp.local_addr().unwrap()),
        Addr::Inet(udp.local_addr().unwrap()),
        Addr::Unix(unix_path),
    ];
    // Not probing the live Unix socket: each probe would wait in its backlog.
    let opts = BindOptions {
        unlink_stale_unix: false,
        ..BindOptions::default()
    };
    let before = open_fds();
    for _ in 0..1024 {
        let errors = [
            Listener::bind(&taken[0], &opts).await.unwrap_err(),
            Datagram::bind(&taken[1], &opts).await.unwrap_err(),
            Listener::bind(&taken[2], &opts).await.unwrap_err(),
        ];
        for err in errors {
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        }
    }
    let after = open_fds();
    assert!(
        after < before + OTHER_TESTS_FDS,
        "{before} descriptors before 3,072 failed binds, {after} after"
    );
}

/// Fails the connection when the first line is `fail`, echoes it otherwise.
struct Faulty;

impl Handler for Faulty {
    async fn handle(&self, conn: Conn, _info: ConnInfo) -> io::Result<()> {
        let mut conn = BufReader::new(conn);
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        if line == "fail\n" {
            return Err(io::Error::other("the handler failed on purpose"));
        }
        conn.write_all(line.as_bytes()).await
    }
}

/// A log writer the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Reads until the server closes; true at EOF or reset, false if it stayed open.
async fn closed_by_server(conn: &mut Stream) -> bool {
    let mut buf = [0u8; 64];
    match timeout(TEST_TIMEOUT, conn.read(&mut buf)).await {
        Ok(Ok(0)) => true,
        Ok(Ok(n)) => panic!("unexpected bytes {:?}", &buf[..n]),
        Ok(Err(e)) => e.kind() == io::ErrorKind::ConnectionReset,
        Err(_) => false,
    }
}

/// This binary's log, kept for the tests to read. Global, since a subscriber set for one
/// thread misses spans whose callsites other threads registered first.
fn captured_log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    })
}

#[tokio::test]
async fn a_handler_error_is_logged_and_ends_only_its_connection() {
    let log = captured_log();
    for mode in [Mode::Sequential, Mode::Concurrent] {
        let server = start_at("127.0.0.1:0", Faulty, config(mode)).await;
        let mut failing = Stream::connect(&server.addr).await.unwrap();
        let failing_peer = failing.local_addr().unwrap().to_string();
        failing.write_all(b"fail\n").await.unwrap();
        assert!(closed_by_server(&mut failing).await);
        let mut next = BufReader::new(Stream::connect(&server.addr).await.unwrap());
        next.write_all(b"fine\n").await.unwrap();
        let mut back = String::new();
        timeout(TEST_TIMEOUT, next.read_line(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, "fine\n", "{mode:?}");
        server.stop().await.unwrap();
        let logged = log.text();
        let line = logged
            .lines()
            .find(|l| l.contains(&failing_peer))
            .unwrap_or_else(|| panic!("no log line for {failing_peer}:\n{logged}"));
        assert!(line.contains("connection ended with an error"), "{line}");
        assert!(line.contains("the handler failed on purpose"), "{line}");
    }
}

#[tokio::test]
async fn a_refused_peer_is_closed_once_and_the_server_keeps_serving() {
    let config = Config {
        acl: Acl {
            allow: Vec::new(),
            deny: vec![parse_net("127.0.0.1").unwrap()],
        },
        ..Config::default()
    };
    let server = start_at("127.0.0.1:0", Echo::default(), config).await;
    let Addr::Inet(server_addr) = server.addr else {
        unreachable!("bound an IP address")
    };
    // 127.0.0.2 is not denied: connect from it explicitly.
    let allowed = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        Stream::Tcp(socket.connect(server_addr).await.unwrap())
    };
    let mut kept = allowed().await;
    let mut buf = [0u8; 5];
    kept.write_all(b"first").await.unwrap();
    timeout(TEST_TIMEOUT, kept.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    for _ in 0..20 {
        let mut refused = Stream::connect(&server.addr).await.unwrap();
        assert!(closed_by_server(&mut refused).await);
        // Closed, and nothing follows: a second read sees the same end.
        let again = timeout(TEST_TIMEOUT, refused.read(&mut buf)).await.unwrap();
        assert!(matches!(again, Ok(0) | Err(_)), "{again:?}");
    }
    // Had a refused peer's descriptor been closed twice, the second close could have hit
    // the connection that reused its number: this one, opened before them all.
    kept.write_all(b"still").await.unwrap();
    timeout(TEST_TIMEOUT, kept.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still");
    let mut later = allowed().await;
    later.write_all(b"later").await.unwrap();
    timeout(TEST_TIMEOUT, later.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"later");
    drop((kept, later));
    server.stop().await.unwrap();
}

/// An echo that counts the connections it is serving: one more while a handler runs, one
/// less when its future is dropped, which is when the engine's task for it ends.
struct CountingLive {
    live: Arc<watch::Sender<usize>>,
    served: AtomicUsize,
}

struct LiveGuard(Arc<watch::Sender<usize>>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Handler for CountingLive {
    async fn handle(&self, conn: Conn, _info: ConnInfo) -> io::Result<()> {
        self.live.send_modify(|n| *n += 1);
        let _live = LiveGuard(self.live.clone());
        self.served.fetch_add(1, Ordering::SeqCst);
        echo_stream(conn, false).await.map(drop)
    }
}

#[tokio::test]
async fn finished_connections_are_reaped() {
    for mode in [Mode::Sequential, Mode::Concurrent] {
        let (live, mut live_now) = watch::channel(0usize);
        let handler = Arc::new(CountingLive {
            live: Arc::new(live),
            served: AtomicUsize::new(0),
        });
        // Served through `Arc<CountingLive>`, so the test keeps its own reference.
        let server = start_at("127.0.0.1:0", handler.clone(), config(mode)).await;
        for i in 0..10u8 {
            let mut client = Stream::connect(&server.addr).await.unwrap();
            client.write_all(&[i; 10]).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            timeout(TEST_TIMEOUT, client.read_to_end(&mut back))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(back, [i; 10]);
        }
        timeout(TEST_TIMEOUT, live_now.wait_for(|n| *n == 0))
            .await
            .unwrap_or_else(|_| panic!("{mode:?}: connections still live"))
            .unwrap();
        assert_eq!(handler.served.load(Ordering::SeqCst), 10);
        server.stop().await.unwrap();
    }
}

/// The children of `pid`, zombies included: a zombie is a child nobody reaped.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue; // gone meanwhile
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(child);
        }
    }
    children
}

/// How often [`finished_children_are_reaped`] looks at the process table.
const CHILD_POLL_INTERVAL: Duration = Duration::from_millis(20);

#[tokio::test]
async fn finished_children_are_reaped() {
    let (proc, addr) = start_binary(&["echo", "--mode", "process", "--listen", "127.0.0.1:0"]);
    for i in 0..10u8 {
        let mut client = Stream::connect(&addr).await.unwrap();
        client.write_all(&[b'a' + i; 10]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        timeout(TEST_TIMEOUT, client.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, [b'a' + i; 10]);
    }
    // Each child has closed its connection; it is reaped a moment after it exits.
    let server = proc.child.id();
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let children = children_of(server);
        if children.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "children left unreaped: {children:?}"
        );
        tokio::time::sleep(CHILD_POLL_INTERVAL).await;
    }
}

/// `SocketWriterTest.test_write`: 8 MiB through an echo, each way, while this process is
/// hit by SIGUSR1 (handled, so harmless) every millisecond: no byte may be lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_not_truncated_when_a_signal_interrupts_them() {
    const PAYLOAD_BYTES: usize = 8 << 20;
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .expect("a SIGUSR1 handler");
    for mode in [Mode::Sequential, Mode::Concurrent] {
        let server = start_at("127.0.0.1:0", Echo::default(), config(mode)).await;
        let Addr::Inet(addr) = server.addr else {
            unreachable!("bound an IP address")
        };
        let payload = pattern(PAYLOAD_BYTES, mode as u8);
        // Blocking client threads: their write and read calls are the ones a signal can cut.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let mut reader = client.try_clone().unwrap();
        let (mut writer, sent) = (client, payload.clone());
        let writing = std::thread::spawn(move || {
            writer.write_all(&sent)?;
            writer.shutdown(std::net::Shutdown::Write)
        });
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut back = Vec::with_capacity(PAYLOAD_BYTES);
            let _ = done_tx.send(reader.read_to_end(&mut back).map(|_| back));
        });
        let mut signals = tokio::time::interval(Duration::from_millis(1));
        let mut delivered = 0usize;
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        let echoed = loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{mode:?}: the echo did not finish"
            );
            match done_rx.try_recv() {
                Ok(echoed) => break echoed.expect("the echo reads back"),
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => panic!("the reader died"),
            }
            signals.tick().await;
            nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGUSR1)
                .unwrap();
            if timeout(Duration::from_millis(1), usr1.recv()).await.is_ok() {
                delivered += 1;
            }
        };
        writing.join().unwrap().expect("the payload is written");
        assert!(delivered > 0, "no signal arrived during the transfer");
        assert_eq!(echoed.len(), PAYLOAD_BYTES);
        assert!(echoed == payload, "{mode:?}: the echoed bytes differ");
        server.stop().await.unwrap();
    }
}

/// The lessons' "semi-connection pool" (`listen(5)` and one client at a time, issue 16 item 8):
/// `sockit echo --mode sequential --backlog 5` serves the first client while the next ones
/// wait, connected, in the kernel's queue, and serves each in turn when the one before leaves.
#[tokio::test]
async fn the_semi_connection_pool_serves_one_client_and_queues_the_rest() {
    let (_proc, addr) = start_binary(&[
        "echo",
        "--upper",
        "--mode",
        "sequential",
        "--backlog",
        "5",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut first = BufReader::new(Stream::connect(&addr).await.unwrap());
    first.write_all(b"first\n").await.unwrap();
    let mut back = String::new();
    timeout(TEST_TIMEOUT, first.read_line(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, "FIRST\n");
    let mut queued = Vec::new();
    for i in 0..3 {
        let mut conn = BufReader::new(Stream::connect(&addr).await.unwrap());
        conn.write_all(format!("queued {i}\n").as_bytes())
            .await
            .unwrap();
        queued.push(conn);
    }
    // While the first client stays, the queued ones are connected but not answered.
    let mut early = String::new();
    let waited = timeout(Duration::from_millis(300), queued[0].read_line(&mut early)).await;
    assert!(
        waited.is_err(),
        "a queued client was served early: {early:?}"
    );
    drop(first);
    for (i, conn) in queued.iter_mut().enumerate() {
        let mut back = String::new();
        timeout(TEST_TIMEOUT, conn.read_line(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, format!("QUEUED {i}\n"));
        conn.get_mut().shutdown().await.unwrap();
    }
}
