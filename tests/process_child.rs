//! Process mode with a handler written in Rust, end to end in one binary: the tests below run
//! the engine with `Probe`, whose process form re-executes this binary, and this binary's
//! `main` serves the connection with `Probe` when it is such a copy, as a user's program does.
//! No test harness (`harness = false` in Cargo.toml): libtest would print its banner onto the
//! copy's stdout, which is the connection, before `main` could take it.

mod common;

use std::io;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::{start_at, TEST_TIMEOUT};
use sockit::engine::{
    serve_if_child_blocking, Config, Conn, ConnInfo, Handler, Mode, ProcessCommand, CHILD_ENV,
};
use sockit::net::{Addr, PeerAddr, Stream};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;

/// Answers one-line questions about the process serving the connection.
struct Probe;

impl Handler for Probe {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> io::Result<()> {
        let mut conn = BufReader::new(conn);
        let mut line = String::new();
        while conn.read_line(&mut line).await? > 0 {
            let answer = match line.trim() {
                "pid" => std::process::id().to_string(),
                "peer" => info.peer.to_string(),
                "local" => info.local.to_string(),
                "marker" => marker_seen_by_a_grandchild()?,
                "print" => {
                    println!("a stray line on stdout");
                    "printed".to_string()
                }
                "wait for shutdown" => {
                    info.shutdown.cancelled().await;
                    return conn.write_all(b"shutting down\n").await;
                }
                other => format!("unknown question {other:?}"),
            };
            conn.write_all(format!("{answer}\n").as_bytes()).await?;
            line.clear();
        }
        Ok(())
    }

    fn process_command(&self) -> Option<ProcessCommand> {
        ProcessCommand::reexec().ok()
    }
}

/// What a command the handler starts sees of the child marker.
fn marker_seen_by_a_grandchild() -> io::Result<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("printf %s \"${{{CHILD_ENV}-unset}}\"")])
        .stderr(Stdio::inherit())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() -> ExitCode {
    if let Some(served) = serve_if_child_blocking(&Probe) {
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("process_child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut passed = 0;
    for (name, test) in TESTS {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            // A failing test panics: the binary exits non-zero with its message.
            eprint!("test {name} ... ");
            runtime.block_on(test());
            eprintln!("ok");
            passed += 1;
        }
    }
    eprintln!("\ntest result: ok. {passed} passed");
    ExitCode::SUCCESS
}

type Test = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

const TESTS: &[(&str, Test)] = &[
    (
        "each_connection_is_served_by_its_own_copy_of_the_program",
        || Box::pin(each_connection_is_served_by_its_own_copy_of_the_program()),
    ),
    (
        "the_child_knows_its_peer_and_local_address_over_tcp_and_unix",
        || Box::pin(the_child_knows_its_peer_and_local_address_over_tcp_and_unix()),
    ),
    (
        "commands_the_handler_runs_do_not_inherit_the_child_marker",
        || Box::pin(commands_the_handler_runs_do_not_inherit_the_child_marker()),
    ),
    (
        "a_stray_print_in_the_handler_does_not_reach_the_peer",
        || Box::pin(a_stray_print_in_the_handler_does_not_reach_the_peer()),
    ),
    (
        "the_engines_idle_timeout_closes_an_idle_child_connection",
        || Box::pin(the_engines_idle_timeout_closes_an_idle_child_connection()),
    ),
    ("the_child_handler_sees_the_servers_shutdown", || {
        Box::pin(the_child_handler_sees_the_servers_shutdown())
    }),
    ("a_copy_whose_stdin_is_not_a_socket_fails_clearly", || {
        Box::pin(a_copy_whose_stdin_is_not_a_socket_fails_clearly())
    }),
];

fn process_mode() -> Config {
    Config {
        mode: Mode::Process,
        ..Config::default()
    }
}

/// A client connection that asks `Probe` questions.
struct Asker(BufReader<Stream>);

impl Asker {
    async fn connect(addr: &Addr) -> Asker {
        Asker(BufReader::new(Stream::connect(addr).await.unwrap()))
    }

    async fn ask(&mut self, question: &str) -> String {
        self.0
            .write_all(format!("{question}\n").as_bytes())
            .await
            .unwrap();
        self.read_line().await
    }

    async fn read_line(&mut self) -> String {
        let mut line = String::new();
        timeout(TEST_TIMEOUT, self.0.read_line(&mut line))
            .await
            .expect("an answer in time")
            .unwrap();
        line.trim_end().to_string()
    }
}

async fn each_connection_is_served_by_its_own_copy_of_the_program() {
    let server = start_at("127.0.0.1:0", Probe, process_mode()).await;
    let mut first = Asker::connect(&server.addr).await;
    let mut second = Asker::connect(&server.addr).await;
    let a: u32 = first.ask("pid").await.parse().unwrap();
    let b: u32 = second.ask("pid").await.parse().unwrap();
    assert_ne!(a, b, "two open connections served by one process");
    assert!(a != std::process::id() && b != std::process::id());
    // Each copy is this program.
    for pid in [a, b] {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, std::env::current_exe().unwrap());
    }
    drop((first, second));
    server.stop().await.unwrap();
}

async fn the_child_knows_its_peer_and_local_address_over_tcp_and_unix() {
    let server = start_at("127.0.0.1:0", Probe, process_mode()).await;
    let stream = Stream::connect(&server.addr).await.unwrap();
    let me = stream.local_addr().unwrap();
    let mut asker = Asker(BufReader::new(stream));
    assert_eq!(asker.ask("peer").await, me.to_string());
    assert_eq!(asker.ask("local").await, server.addr.to_string());
    drop(asker);
    server.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.sock");
    let unix = start_at(&format!("unix:{}", path.display()), Probe, process_mode()).await;
    let mut asker = Asker::connect(&unix.addr).await;
    assert_eq!(asker.ask("peer").await, PeerAddr::Unix(None).to_string());
    assert_eq!(asker.ask("local").await, unix.addr.to_string());
    drop(asker);
    unix.stop().await.unwrap();
}

async fn commands_the_handler_runs_do_not_inherit_the_child_marker() {
    let server = start_at("127.0.0.1:0", Probe, process_mode()).await;
    let mut asker = Asker::connect(&server.addr).await;
    assert_eq!(asker.ask("marker").await, "unset");
    drop(asker);
    server.stop().await.unwrap();
}

async fn a_stray_print_in_the_handler_does_not_reach_the_peer() {
    let server = start_at("127.0.0.1:0", Probe, process_mode()).await;
    let mut asker = Asker::connect(&server.addr).await;
    assert_eq!(asker.ask("print").await, "printed");
    assert!(asker.ask("pid").await.parse::<u32>().is_ok());
    drop(asker);
    server.stop().await.unwrap();
}

async fn the_engines_idle_timeout_closes_an_idle_child_connection() {
    let idle = Duration::from_millis(300);
    let config = Config {
        idle_timeout: Some(idle),
        ..process_mode()
    };
    let server = start_at("127.0.0.1:0", Probe, config).await;
    let mut asker = Asker::connect(&server.addr).await;
    // Once the child answers it is running; from then on the connection is idle.
    assert!(asker.ask("pid").await.parse::<u32>().is_ok());
    let quiet_since = Instant::now();
    assert_eq!(asker.read_line().await, "", "EOF from the child");
    assert!(quiet_since.elapsed() >= idle - Duration::from_millis(50));
    server.stop().await.unwrap();
}

async fn the_child_handler_sees_the_servers_shutdown() {
    let server = start_at("127.0.0.1:0", Probe, process_mode()).await;
    let mut asker = Asker::connect(&server.addr).await;
    assert!(asker.ask("pid").await.parse::<u32>().is_ok());
    asker.0.write_all(b"wait for shutdown\n").await.unwrap();
    // The engine's drain deadline (5 s) is well past this: a graceful goodbye, not a kill.
    let started = Instant::now();
    server.stop().await.unwrap();
    assert_eq!(asker.read_line().await, "shutting down");
    assert!(started.elapsed() < Config::default().drain_timeout);
}

async fn a_copy_whose_stdin_is_not_a_socket_fails_clearly() {
    let copy = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = timeout(TEST_TIMEOUT, copy).await.unwrap().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a connection"), "{err}");
}
