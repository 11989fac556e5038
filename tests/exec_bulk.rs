//! Bulk output through exec: tens of MiB arrive byte-exact over plaintext (where the server
//! splices stdout into the socket) and TLS, to a fast and to a slow local stdout.

mod common;

use common::{start_exec, TestServer, TEST_TIMEOUT};
use sockit::net::tls::{ServerIdentity, ServerTrust, TlsAcceptor, TlsConnector};
use sockit::service::exec::{run, run_tls, ExecConfig, LocalIo, RemoteExit, RunRequest};
use sockit::session::Token;
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

fn local_io<O: AsyncWrite + Unpin>(
    stdout: O,
    stderr: &mut Vec<u8>,
) -> LocalIo<&[u8], O, &mut Vec<u8>> {
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
    let config = ExecConfig {
        tls: Some(acceptor),
        ..ExecConfig::default()
    };
    let (server, token) = start_exec(config).await;
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
    let io = local_io(&mut stdout, &mut stderr);
    let outcome = timeout(
        TEST_TIMEOUT,
        run(&server.addr, &token, &request(&["cat", path]), io),
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
    let io = local_io(&mut stdout, &mut stderr);
    let req = request(&["cat", path]);
    let outcome = timeout(TEST_TIMEOUT, run_tls(&server.addr, &tls, &token, &req, io))
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
    let io = local_io(stdout, &mut stderr);
    // stdout first, then a line on stderr: the two must not mix or reorder within a stream.
    let req = request(&["sh", "-c", "cat \"$0\" && echo done >&2", path]);
    let outcome = timeout(TEST_TIMEOUT, run(&server.addr, &token, &req, io))
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
