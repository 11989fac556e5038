//! The way in, under attack: silent and trickling unauthenticated peers, and parallel wrong
//! guesses, against every framed service, while a legitimate client gets its work done.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{start, start_exec, TestServer, TEST_TIMEOUT};
use sockit::engine::Config;
use sockit::net::Addr;
use sockit::service::chat::{self, Broker, BrokerConfig, ChatServer, ChatService, FramedConfig};
use sockit::service::exec::{self, ExecConfig, ExecError, LocalIo, RunRequest};
use sockit::service::files::{self, FilesConfig, Remote};
use sockit::session::{self, ClientOptions, Token, REFUSE_AFTER_FAILURES};
use sockit::stdio::Output;
use sockit::wire::Connection;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// Unauthenticated peers of each kind in the flood.
const FLOOD_PEERS: usize = 500;

/// How long a legitimate client may take with the flood going on.
const LEGIT_DEADLINE: Duration = Duration::from_secs(1);

/// Parallel wrong guesses from one source.
const GUESSES: usize = 200;

/// Raises the soft descriptor limit to the hard one: the flood holds over a thousand sockets
/// on each side in this one process.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= 4 * FLOOD_PEERS as u64 + 256,
        "the flood needs {} descriptors; the limit is {soft}",
        4 * FLOOD_PEERS + 256
    );
}

fn socket_addr(addr: &Addr) -> SocketAddr {
    match addr {
        Addr::Inet(sa) => *sa,
        Addr::Unix(_) => panic!("a TCP address"),
    }
}

/// Connects to `addr` from `source` (any address in 127.0.0.0/8 is this host).
async fn connect_from(source: &str, addr: &Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    timeout(TEST_TIMEOUT, socket.connect(socket_addr(addr)))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// The flood: [`FLOOD_PEERS`] connections that never say a word and as many that send one
/// byte of a frame every 3 s, spread over 250 sources in 127.0.1.0/24 (so both the per-source
/// and the total pending caps are hit). Dropping the returned set ends it.
async fn flood(addr: &Addr) -> (Vec<TcpStream>, JoinSet<()>) {
    let mut silent = Vec::with_capacity(FLOOD_PEERS);
    let mut tricklers = JoinSet::new();
    for i in 0..FLOOD_PEERS {
        silent.push(connect_from(&format!("127.0.1.{}", i % 250 + 1), addr).await);
        let mut slow = connect_from(&format!("127.0.1.{}", i % 250 + 1), addr).await;
        tricklers.spawn(async move {
            // A frame's length prefix, one byte at a time: never a whole hello.
            for _ in 0..100 {
                if slow.write_all(&[0]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        });
    }
    (silent, tricklers)
}

fn engine(service: &str) -> Config {
    Config {
        service: service.into(),
        ..Config::default()
    }
}

async fn run_echo(addr: &Addr, options: &ClientOptions) -> Result<u8, ExecError> {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (_signals, rx) = tokio::sync::mpsc::channel(1);
    let io = LocalIo {
        stdin: tokio::io::empty(),
        stdout: Output::new(&mut stdout),
        stderr: &mut stderr,
        signals: rx,
        resizes: None,
    };
    let request = RunRequest {
        argv: vec!["echo".into(), "through".into()],
        shell: false,
        pty: None,
    };
    let outcome = exec::run(addr, options, &request, io).await?;
    assert_eq!(stdout, b"through\n");
    Ok(outcome.exit.exit_code())
}

#[tokio::test]
async fn an_exec_client_gets_through_a_flood_of_silent_and_trickling_handshakes() {
    raise_fd_limit();
    let (server, token) = start_exec(ExecConfig::default()).await;
    let _flood = flood(&server.addr).await;
    let options = exec::client_options(token);
    let code = timeout(LEGIT_DEADLINE, run_echo(&server.addr, &options))
        .await
        .expect("the run completes within a second despite the flood")
        .expect("the run succeeds");
    assert_eq!(code, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_files_client_gets_through_a_flood_of_silent_and_trickling_handshakes() {
    raise_fd_limit();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("here.txt"), b"x").unwrap();
    let token = Token::generate().unwrap();
    let server = common::start_files(FilesConfig::new(root.path()), Some(token.clone())).await;
    let _flood = flood(&server.addr).await;
    let remote = Remote {
        token: Some(token),
        ..Remote::new(server.addr.clone())
    };
    let listed = timeout(LEGIT_DEADLINE, files::list(&remote, ""))
        .await
        .expect("the listing completes within a second despite the flood")
        .expect("the listing succeeds");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, "here.txt");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_chat_client_gets_through_a_flood_of_silent_and_trickling_handshakes() {
    raise_fd_limit();
    let token = Token::generate().unwrap();
    let broker = Broker::new(BrokerConfig::default());
    let service = ChatService::new(broker.clone(), FramedConfig::default());
    let server: TestServer = start(
        ChatServer::new(chat::gate(Some(token.clone())), service),
        engine("chat"),
    )
    .await;
    let _flood = flood(&server.addr).await;
    let options = chat::JoinOptions {
        nick: "alice".into(),
        room: None,
        token: Some(token),
        tls: None,
    };
    let client = timeout(LEGIT_DEADLINE, chat::join(&server.addr, &options))
        .await
        .expect("the join completes within a second despite the flood")
        .expect("the join succeeds");
    assert_eq!(client.nick, "alice");
    assert_eq!(broker.client_count(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn parallel_wrong_guesses_from_one_source_are_mostly_refused_unheard() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let addr = server.addr.clone();
    let guesses = Arc::new(exec::client_options(Token::generate().unwrap()));
    let mut attempts = JoinSet::new();
    for _ in 0..GUESSES {
        let (addr, guesses) = (addr.clone(), guesses.clone());
        attempts.spawn(async move {
            // The wrong guesses come from 127.0.0.1; the right client from 127.0.0.2.
            timeout(TEST_TIMEOUT, run_echo(&addr, &guesses))
                .await
                .expect("every attempt ends in time")
        });
    }
    let mut checked = 0;
    let mut refused = 0;
    while let Some(result) = attempts.join_next().await {
        match result.unwrap() {
            Ok(code) => panic!("a wrong token ran a command (exit {code})"),
            Err(e) if e.code() == "auth_failed" => checked += 1,
            Err(_) => refused += 1,
        }
    }
    // A guess is checked only while its source is not yet barred, and guesses in flight when
    // the bar falls are refused unheard: a burst gets no more checks than a sequence would
    // (plus one per runtime thread racing the bar).
    let most_checked = REFUSE_AFTER_FAILURES as usize + 2;
    assert!(
        checked <= most_checked,
        "{checked} of {GUESSES} wrong guesses were checked (at most {most_checked} expected)"
    );
    assert_eq!(checked + refused, GUESSES);
    // The source is now barred at connect, with a reason it can read.
    let barred = run_echo(&addr, &guesses).await.unwrap_err();
    assert_eq!(barred.code(), "too_many_failures", "{barred}");
    // The right token from another source is not held up by that. (The library client has no
    // source address to choose, so this runs the handshake itself, from 127.0.0.2.)
    let right = exec::client_options(token);
    let handshake = async {
        let mut conn = Connection::new(connect_from("127.0.0.2", &addr).await);
        session::connect(&mut conn, &right.session, right.token.as_ref()).await
    };
    timeout(LEGIT_DEADLINE, handshake)
        .await
        .expect("the right client is answered within a second")
        .expect("the right token from another source is accepted");
    server.stop().await.unwrap();
}
