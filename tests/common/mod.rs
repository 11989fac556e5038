//! Shared test helpers: in-process servers on port 0, and the built binary as a child.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, SystemTime};

use sockit::engine::{serve, serve_datagram, Config, DatagramHandler, Handler};
use sockit::net::tls::{TlsAcceptor, TlsConnector};
use sockit::net::{Addr, BindOptions, Datagram, Listener, Stream};
use sockit::service::exec::{
    self, ExecConfig, ExecError, ExecServer, ExecService, LocalIo, RemoteExit, RunOutcome,
    RunRequest, SignalName,
};
use sockit::service::files::{
    self, FilesConfig, FilesServer, FilesService, PutOptions, PutReport, Remote,
};
use sockit::session::{self, ClientOptions, GateConfig, Token};
use sockit::stdio::Output;
use sockit::wire::Connection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod browser;
pub mod netns;
pub mod pids;

/// Bounds every wait in tests so a broken server fails the test instead of hanging it.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A server running in-process.
pub struct TestServer {
    pub addr: Addr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Cancels the server and waits for `serve` to return.
    pub async fn stop(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(TEST_TIMEOUT, self.task)
            .await
            .expect("server did not stop")
            .expect("server task panicked")
    }
}

/// Starts a stream server on `addr` (use port 0).
pub async fn start_at<H: Handler>(addr: &str, handler: H, config: Config) -> TestServer {
    let listener = Listener::bind(&addr.parse().unwrap(), &BindOptions::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, handler, config, shutdown.clone()));
    TestServer {
        addr,
        shutdown,
        task,
    }
}

/// Starts a stream server on 127.0.0.1:0.
pub async fn start<H: Handler>(handler: H, config: Config) -> TestServer {
    start_at("127.0.0.1:0", handler, config).await
}

/// Starts a datagram server on `addr`.
pub async fn start_datagram<H: DatagramHandler>(
    addr: &str,
    handler: H,
    config: Config,
) -> TestServer {
    let socket = Datagram::bind(&addr.parse().unwrap(), &BindOptions::default())
        .await
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_datagram(socket, handler, config, shutdown.clone()));
    TestServer {
        addr,
        shutdown,
        task,
    }
}

/// The built `sockit` binary.
pub fn sockit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sockit"))
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub stderr: Option<BufReader<ChildStderr>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `cmd` with stderr piped.
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn sockit");
        let stderr = child.stderr.take().map(BufReader::new);
        Proc { child, stderr }
    }

    /// Reads stderr lines until one contains `needle`; returns that line. Panics at EOF.
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        let stderr = self.stderr.as_mut().expect("stderr piped");
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            let n = stderr.read_line(&mut line).expect("read stderr");
            assert!(n > 0, "stderr closed before {needle:?}; saw:\n{seen}");
            if line.contains(needle) {
                return line;
            }
            seen.push_str(&line);
        }
    }

    /// Waits for the "listening on ADDR" line and returns ADDR.
    pub fn listening_addr(&mut self) -> String {
        let line = self.wait_for_stderr("listening on ");
        let rest = line.split("listening on ").nth(1).unwrap().trim();
        rest.split_whitespace().next().unwrap().to_string()
    }

    /// Waits (bounded by [`TEST_TIMEOUT`]) for the process to exit on its own.
    pub fn wait_exit(mut self) -> std::process::ExitStatus {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(self.child.wait());
            drop(self);
        });
        rx.recv_timeout(TEST_TIMEOUT)
            .expect("the process exits in time")
            .unwrap()
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap()
    }
}

/// Reads `sockit serve`'s banner from its stdout up to the `serving N services` line.
pub fn read_banner(stdout: &mut BufReader<std::process::ChildStdout>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "banner ended early: {lines:?}");
        let done = line.starts_with("serving ");
        lines.push(line.trim_end().to_owned());
        if done {
            return lines;
        }
    }
}

/// The address on the banner line of `service` (`exec     tcp      127.0.0.1:PORT`).
pub fn address_of(banner: &[String], service: &str, transport: &str) -> String {
    banner
        .iter()
        .find_map(|line| {
            let words: Vec<_> = line.split_whitespace().collect();
            (words.len() == 3 && words[0] == service && words[1] == transport)
                .then(|| words[2].to_owned())
        })
        .unwrap_or_else(|| panic!("no {service} {transport} line in {banner:?}"))
}

/// Whether an external program is installed; prints why a test is skipped if not.
pub fn have(program: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED {test}: `{program}` is not installed (CI installs it via .ci/run)");
    }
    found
}

/// The TCP port of an `Addr`.
pub fn port(addr: &Addr) -> u16 {
    match addr {
        Addr::Inet(sa) => sa.port(),
        Addr::Unix(_) => panic!("not an IP address"),
    }
}

/// Runs `cmd` with `input` on stdin (and no inherited `SOCKIT_TOKEN`); returns (exit code,
/// stdout, stderr). Bounded by a timeout: a command that does not exit is killed.
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = cmd
        .env_remove("SOCKIT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(TEST_TIMEOUT) else {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("command did not exit: {cmd:?}");
    };
    let out = out.unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A token file for `--token-file`: `NamedTempFile` is created 0600, as a token file must be.
pub fn token_file(token: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{token}").unwrap();
    file
}

/// Starts an exec server in-process on 127.0.0.1:0 with a fresh token.
pub async fn start_exec(config: ExecConfig) -> (TestServer, Token) {
    start_exec_at("127.0.0.1:0", config).await
}

/// Starts an exec server in-process on `addr` (e.g. `unix:/path`) with a fresh token.
pub async fn start_exec_at(addr: &str, config: ExecConfig) -> (TestServer, Token) {
    start_exec_with(addr, config, None).await
}

/// Starts an exec server in-process on `addr` with a fresh token, over TLS with `tls`.
pub async fn start_exec_with(
    addr: &str,
    config: ExecConfig,
    tls: Option<TlsAcceptor>,
) -> (TestServer, Token) {
    let token = Token::generate().unwrap();
    let gate = GateConfig {
        tls,
        ..exec::gate(token.clone())
    };
    let engine = Config {
        service: "exec".into(),
        idle_timeout: None,
        ..Config::default()
    };
    let server = start_at(
        addr,
        ExecServer::new(gate, ExecService::new(config)),
        engine,
    )
    .await;
    (server, token)
}

/// The built binary's `exec serve` on 127.0.0.1:0 with `token_path`, and its address.
pub fn start_exec_binary(token_path: &Path) -> (Proc, String) {
    let mut cmd = sockit();
    cmd.args(["exec", "serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(token_path)
        .stdout(Stdio::null());
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    (proc, addr)
}

/// A framed connection to an exec server that has completed the handshake.
pub async fn authenticated_exec(addr: &Addr, token: &Token) -> Connection<Stream> {
    let mut conn = Connection::new(Stream::connect(addr).await.unwrap());
    tokio::time::timeout(
        TEST_TIMEOUT,
        session::connect(&mut conn, &exec::session_config(), Some(token)),
    )
    .await
    .unwrap()
    .expect("handshake");
    conn
}

/// Starts a file server in-process on 127.0.0.1:0.
pub async fn start_files(config: FilesConfig, token: Option<Token>) -> TestServer {
    start_files_with(config, files::gate(token)).await
}

/// Starts a file server in-process on 127.0.0.1:0 behind `gate`.
pub async fn start_files_with(config: FilesConfig, gate: GateConfig) -> TestServer {
    let engine = Config {
        service: "files".into(),
        ..Config::default()
    };
    let service = FilesService::new(config).unwrap();
    start(FilesServer::new(gate, service), engine).await
}

/// What a directory holds: every entry under `root` by relative path, with a file's bytes or
/// `None` for a directory (or a symlink's target path). The store's `.sockit-partial` is left
/// out: it holds resumable data, never a file under its final name.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new(".sockit-partial") {
                continue;
            }
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, Some(target.into_os_string().into_encoded_bytes()));
            } else if kind.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

/// `put` with default options, bounded by [`TEST_TIMEOUT`].
pub async fn put_all(addr: &Addr, paths: &[PathBuf], to: Option<&str>) -> PutReport {
    let remote = Remote::new(addr.clone());
    let options = PutOptions::default();
    let putting = files::put(&remote, paths, to, &options);
    tokio::time::timeout(TEST_TIMEOUT, putting)
        .await
        .expect("put in time")
        .expect("put runs")
}

/// Writes a file (and its parents) with a mode and an mtime of `mtime_secs` + 123456789 ns.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, mtime_secs: u64) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    let when = SystemTime::UNIX_EPOCH + Duration::new(mtime_secs, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// Sets `path`'s modification time `age` into the past.
pub fn age_by(path: &Path, age: Duration) {
    let then = SystemTime::now() - age;
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(then)
        .unwrap();
}

/// What one run through the library exec client returned.
pub struct Ran {
    pub outcome: Result<RunOutcome, ExecError>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Ran {
    /// The remote exit; panics on a refused or failed run.
    pub fn exit(&self) -> RemoteExit {
        self.outcome.as_ref().expect("an exit status").exit
    }

    /// Stdout as text (a pty's output, say).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `request` through the library client (over TLS with `tls`), with `stdin` as input
/// and whatever arrives on `signals` forwarded; bounded by [`TEST_TIMEOUT`].
pub async fn run_exec(
    addr: &Addr,
    tls: Option<&TlsConnector>,
    token: &Token,
    request: &RunRequest,
    stdin: &[u8],
    signals: mpsc::Receiver<SignalName>,
) -> Ran {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let io = LocalIo {
        stdin,
        stdout: Output::new(&mut stdout),
        stderr: &mut stderr,
        signals,
        resizes: None,
    };
    let options = ClientOptions {
        tls: tls.cloned(),
        ..exec::client_options(token.clone())
    };
    let running = exec::run(addr, &options, request, io);
    let outcome = tokio::time::timeout(TEST_TIMEOUT, running)
        .await
        .expect("the run finishes in time");
    Ran {
        outcome,
        stdout,
        stderr,
    }
}

/// A request to run `argv` as it is (no shell, no pty).
pub fn argv_request(argv: &[&str]) -> RunRequest {
    RunRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        shell: false,
        pty: None,
    }
}

/// Deterministic bytes that differ by `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A file-service connection past the handshake (no token), for hand-written frames.
pub async fn raw_files(addr: &Addr) -> sockit::wire::Connection<sockit::net::Stream> {
    let stream = sockit::net::Stream::connect(addr).await.unwrap();
    let mut conn = sockit::wire::Connection::new(stream);
    let cfg = sockit::service::files::session_config();
    tokio::time::timeout(
        TEST_TIMEOUT,
        sockit::session::connect(&mut conn, &cfg, None),
    )
    .await
    .unwrap()
    .expect("handshake");
    conn
}
