//! Bulk output through exec: tens of MiB arrive byte-exact over plaintext (where the server
//! splices stdout into the socket, and the client can splice it on into its output) and TLS,
//! to a fast and to a slow local stdout.

mod common;

use common::{start_exec, start_exec_at, start_exec_with, TestServer, TEST_TIMEOUT};
use sockit::net::tls::{ServerIdentity, ServerTrust, TlsAcceptor, TlsConnector};
use sockit::service::exec::{client_options, run, ExecConfig, LocalIo, RemoteExit, RunRequest};
use sockit::session::ClientOptions;
use sockit::session::Token;
use sockit::stdio::{Output, SpliceOutput, ThreadWriter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Output of the big runs: many full 1 MiB spliced frames and a ragged tail.
const BIG_BYTES: usize = 24 * 1024 * 1024 + 12_345;

/// Output of the slow-reader run.
const SLOW_BYTES: usize = 6 * 1024 * 1024 + 777;

/// The slow stdout: a pipe this small, drained this much per read, yielding between reads.
const SLOW_PIPE_BYTES: usize = 16 * 1024;
const SLOW_READ_BYTES: usize = 1024;

/// Non-repeating bytes (xorshift), so a dropped, repeated or reordered block changes the hash.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file
}

fn request(argv: &[&str]) -> RunRequest {
    RunRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        shell: false,
        pty: None,
    }
}

fn local_io<'a, W: AsyncWrite + Unpin>(
    stdout: Output<'a, W>,
    stderr: &'a mut Vec<u8>,
) -> LocalIo<'a, &'a [u8], W, &'a mut Vec<u8>> {
    let (_signals_tx, signals) = mpsc::channel(1);
    LocalIo {
        stdin: &b""[..],
        stdout,
        stderr,
        signals,
        resizes: None,
    }
}

async fn start_tls_exec() -> (TestServer, Token, TlsConnector) {
    let identity = ServerIdentity::self_signed(&"127.0.0.1:0".parse().unwrap()).unwrap();
    let acceptor = TlsAcceptor::new(identity).unwrap();
    let pin = ServerTrust::Pin(acceptor.fingerprint());
    let config = ExecConfig::default();
    let (server, token) = start_exec_with("127.0.0.1:0", config, Some(acceptor)).await;
    (server, token, TlsConnector::new(&pin).unwrap())
}

fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "byte count");
    assert_eq!(blake3::hash(got), blake3::hash(want), "content");
}

#[tokio::test]
async fn a_big_output_arrives_byte_exact_over_plaintext() {
    let data = noise(BIG_BYTES, 1);
    let file = file_with(&data);
    let path = file.path().to_str().unwrap();
    let (server, token) = start_exec(ExecConfig::default()).await;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let io = local_io(Output::new(&mut stdout), &mut stderr);
    let outcome = timeout(
        TEST_TIMEOUT,
        run(
            &server.addr,
            &client_options(token.clone()),
            &request(&["cat", path]),
            io,
        ),
    )
    .await
    .expect("in time")
    .expect("an exit status");
    assert_eq!(outcome.exit, RemoteExit::Code(0));
    assert_same(&stdout, &data);
    assert!(stderr.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_big_output_arrives_byte_exact_over_tls() {
    let data = noise(BIG_BYTES, 2);
    let file = file_with(&data);
    let path = file.path().to_str().unwrap();
    let (server, token, tls) = start_tls_exec().await;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let io = local_io(Output::new(&mut stdout), &mut stderr);
    let req = request(&["cat", path]);
    let outcome = timeout(
        TEST_TIMEOUT,
        run(&server.addr, &tls_options(&tls, &token), &req, io),
    )
    .await
    .expect("in time")
    .expect("an exit status");
    assert_eq!(outcome.exit, RemoteExit::Code(0));
    assert_same(&stdout, &data);
    server.stop().await.unwrap();
}

/// Reads `from` to its end in small steps, yielding between them, so the server keeps finding
/// the socket full.
async fn drain_slowly<R: AsyncRead + Unpin>(mut from: R) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; SLOW_READ_BYTES];
    loop {
        let n = from.read(&mut buf).await.expect("read");
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&buf[..n]);
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_slow_local_stdout_gets_every_byte_and_the_stderr_after_it() {
    let data = noise(SLOW_BYTES, 3);
    let file = file_with(&data);
    let path = file.path().to_str().unwrap();
    let (server, token) = start_exec(ExecConfig::default()).await;
    let (stdout, slow_end) = tokio::io::duplex(SLOW_PIPE_BYTES);
    let reader = tokio::spawn(drain_slowly(slow_end));
    let mut stderr = Vec::new();
    let io = local_io(Output::new(stdout), &mut stderr);
    // stdout first, then a line on stderr: the two must not mix or reorder within a stream.
    let req = request(&["sh", "-c", "cat \"$0\" && echo done >&2", path]);
    let outcome = timeout(
        TEST_TIMEOUT,
        run(&server.addr, &client_options(token.clone()), &req, io),
    )
    .await
    .expect("in time")
    .expect("an exit status");
    // `run` consumed and dropped the local stdout, which ends the slow reader.
    let got = timeout(TEST_TIMEOUT, reader)
        .await
        .expect("reader in time")
        .expect("reader task");
    assert_eq!(outcome.exit, RemoteExit::Code(0));
    assert_same(&got, &data);
    assert_eq!(stderr, b"done\n");
    server.stop().await.unwrap();
}

/// Runs `cat` of `data` between two `printf`s (small frames, often read with a header) with
/// stdout going to a splicing writer on `out`; returns the exit status once `out` is written.
async fn run_spliced(data: &[u8], out: std::fs::File) -> RemoteExit {
    let (server, token) = start_exec(ExecConfig::default()).await;
    run_spliced_on(server, token, data, out).await
}

async fn run_spliced_on(
    server: TestServer,
    token: Token,
    data: &[u8],
    out: std::fs::File,
) -> RemoteExit {
    let file = file_with(data);
    let path = file.path().to_str().unwrap();
    let mut stdout = ThreadWriter::spawn_splicing(out);
    assert!(stdout.splice_pipe().is_some());
    let mut stderr = Vec::new();
    let io = local_io(Output::splicing(&mut stdout), &mut stderr);
    let req = request(&["sh", "-c", "printf head; cat \"$0\"; printf tail", path]);
    let outcome = timeout(
        TEST_TIMEOUT,
        run(&server.addr, &client_options(token.clone()), &req, io),
    )
    .await
    .expect("in time")
    .expect("an exit status");
    stdout.finish().await.expect("output written");
    assert!(stderr.is_empty());
    server.stop().await.unwrap();
    outcome.exit
}

fn framed(data: &[u8]) -> Vec<u8> {
    [&b"head"[..], data, &b"tail"[..]].concat()
}

#[tokio::test]
async fn a_big_output_spliced_into_a_file_arrives_byte_exact() {
    let data = noise(BIG_BYTES, 4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let exit = run_spliced(&data, std::fs::File::create(&path).unwrap()).await;
    assert_eq!(exit, RemoteExit::Code(0));
    assert_same(&std::fs::read(&path).unwrap(), &framed(&data));
}

#[tokio::test]
async fn spliced_output_appended_to_a_file_keeps_what_the_file_held() {
    // A file opened for appending refuses splice(2): the output thread copies instead.
    let data = noise(SLOW_BYTES, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    std::fs::write(&path, b"before\n").unwrap();
    let out = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let exit = run_spliced(&data, out).await;
    assert_eq!(exit, RemoteExit::Code(0));
    let want = [&b"before\n"[..], &framed(&data)].concat();
    assert_same(&std::fs::read(&path).unwrap(), &want);
}

#[tokio::test]
async fn a_slow_pipe_behind_a_splicing_stdout_gets_every_byte() {
    let data = noise(SLOW_BYTES, 6);
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    // A one-page pipe read a little at a time: the client's own pipe fills up and waits.
    let _ = nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096));
    let reader = std::thread::spawn(move || {
        let mut from = std::fs::File::from(read_end);
        let mut all = Vec::new();
        let mut buf = [0u8; SLOW_READ_BYTES];
        loop {
            match std::io::Read::read(&mut from, &mut buf).expect("read") {
                0 => return all,
                n => all.extend_from_slice(&buf[..n]),
            }
            std::thread::yield_now();
        }
    });
    let exit = run_spliced(&data, std::fs::File::from(write_end)).await;
    assert_eq!(exit, RemoteExit::Code(0));
    let got = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .unwrap();
    assert_same(&got, &framed(&data));
}

#[tokio::test]
async fn a_big_output_over_a_unix_socket_reaches_a_splicing_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix:{}", dir.path().join("exec.sock").display());
    let (server, token) = start_exec_at(&socket, ExecConfig::default()).await;
    let data = noise(BIG_BYTES, 7);
    let path = dir.path().join("out");
    let exit = run_spliced_on(server, token, &data, std::fs::File::create(&path).unwrap()).await;
    assert_eq!(exit, RemoteExit::Code(0));
    assert_same(&std::fs::read(&path).unwrap(), &framed(&data));
}

fn tls_options(tls: &TlsConnector, token: &Token) -> ClientOptions {
    ClientOptions {
        tls: Some(tls.clone()),
        ..client_options(token.clone())
    }
}
