//! The exec service over TLS: generated certificates pinned by fingerprint, refused pins,
//! plaintext and TLS peers that do not match, the TLS handshake deadline, and the CLI flags.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    argv_request, run_exec, run_with_input, sockit, start_exec, start_exec_with, token_file, Proc,
    TestServer, TEST_TIMEOUT,
};
use sockit::net::tls::{
    Fingerprint, ServerIdentity, ServerTrust, TlsAcceptor, TlsConnector, TlsError,
};
use sockit::net::{Addr, Stream};
use sockit::service::exec::{ExecConfig, ExecError, RemoteExit, RunOutcome};
use sockit::session::{ClientError, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// An exec server with a generated certificate; returns it, its token and its acceptor.
async fn start_tls_exec(handshake_timeout: Duration) -> (TestServer, Token, TlsAcceptor) {
    let identity = ServerIdentity::self_signed(&"127.0.0.1:0".parse().unwrap()).unwrap();
    let mut acceptor = TlsAcceptor::new(identity).unwrap();
    acceptor.handshake_timeout = handshake_timeout;
    let config = ExecConfig::default();
    let (server, token) = start_exec_with("127.0.0.1:0", config, Some(acceptor.clone())).await;
    (server, token, acceptor)
}

fn pinned(fingerprint: Fingerprint) -> TlsConnector {
    TlsConnector::new(&ServerTrust::Pin(fingerprint)).unwrap()
}

/// Runs `argv`; `tls: None` runs plaintext. Returns the outcome and stdout.
async fn exec(
    addr: &Addr,
    tls: Option<&TlsConnector>,
    token: &Token,
    argv: &[&str],
) -> (Result<RunOutcome, ExecError>, Vec<u8>) {
    let (_signals_tx, signals) = mpsc::channel(1);
    let ran = run_exec(addr, tls, token, &argv_request(argv), b"", signals).await;
    (ran.outcome, ran.stdout)
}

async fn assert_serves_tls(addr: &Addr, tls: &TlsConnector, token: &Token) {
    let (outcome, stdout) = exec(addr, Some(tls), token, &["echo", "over tls"]).await;
    assert_eq!(outcome.expect("an exit status").exit, RemoteExit::Code(0));
    assert_eq!(stdout, b"over tls\n");
}

/// Reads until the server closes the stream (EOF or reset), bounded by the test timeout.
async fn closed_by_server(stream: &mut Stream) {
    let mut buf = [0u8; 1024];
    let closed = timeout(TEST_TIMEOUT, async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

#[tokio::test]
async fn a_generated_certificate_pinned_by_its_fingerprint_runs_the_command() {
    let (server, token, acceptor) = start_tls_exec(Duration::from_secs(10)).await;
    assert_serves_tls(&server.addr, &pinned(acceptor.fingerprint()), &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_pin_that_does_not_match_is_refused_and_nothing_runs() {
    let (server, token, acceptor) = start_tls_exec(Duration::from_secs(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let wrong = Fingerprint::of(b"another certificate");
    let marker_arg = marker.to_str().unwrap();
    let (outcome, _) = exec(
        &server.addr,
        Some(&pinned(wrong)),
        &token,
        &["touch", marker_arg],
    )
    .await;
    let err = outcome.unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Client(ClientError::Tls(TlsError::PinMismatch { .. }))
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("pinned"), "{err}");
    assert_eq!(err.code(), "tls");
    assert!(!marker.exists(), "the command ran despite the failed pin");
    assert_serves_tls(&server.addr, &pinned(acceptor.fingerprint()), &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_plaintext_client_against_a_tls_server_fails_and_the_next_tls_client_is_served() {
    let (server, token, acceptor) = start_tls_exec(Duration::from_secs(10)).await;
    let (outcome, _) = exec(&server.addr, None, &token, &["echo", "plain"]).await;
    let err = outcome.unwrap_err();
    assert!(
        matches!(err, ExecError::Client(ClientError::ServerSpeaksTls { .. })),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("the server at {} speaks TLS", server.addr)),
        "{message}"
    );
    assert!(message.contains("--tls-pin"), "{message}");
    assert_serves_tls(&server.addr, &pinned(acceptor.fingerprint()), &token).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_tls_client_against_a_plaintext_server_fails_and_never_falls_back() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let tls = pinned(Fingerprint::of(b"any"));
    let (outcome, _) = exec(
        &server.addr,
        Some(&tls),
        &token,
        &["touch", marker.to_str().unwrap()],
    )
    .await;
    let err = outcome.unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Client(ClientError::Tls(TlsError::ServerNotTls { .. }))
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("the server at {} does not speak TLS", server.addr)),
        "{message}"
    );
    assert!(!marker.exists(), "the command ran in plaintext");
    let (outcome, stdout) = exec(&server.addr, None, &token, &["echo", "plain"]).await;
    assert_eq!(outcome.expect("an exit status").exit, RemoteExit::Code(0));
    assert_eq!(stdout, b"plain\n", "the next plaintext client is served");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn silent_and_dribbling_clients_are_closed_at_the_tls_deadline_and_others_are_served() {
    let (server, token, acceptor) = start_tls_exec(Duration::from_millis(300)).await;
    let mut silent = Stream::connect(&server.addr).await.unwrap();
    let mut dribbler = Stream::connect(&server.addr).await.unwrap();
    // The start of a ClientHello record that announces 512 bytes, sent a byte at a time.
    dribbler.write_all(&[0x16]).await.unwrap();
    let (mut dribble_rd, mut dribble_wr) = tokio::io::split(dribbler);
    let dribbling = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for byte in [0x03, 0x01, 0x02, 0x00]
            .into_iter()
            .chain(std::iter::repeat(0))
        {
            tick.tick().await;
            if dribble_wr.write_all(&[byte]).await.is_err() {
                break;
            }
        }
    });
    assert_serves_tls(&server.addr, &pinned(acceptor.fingerprint()), &token).await;
    closed_by_server(&mut silent).await;
    let mut buf = [0u8; 64];
    let closed = timeout(TEST_TIMEOUT, async {
        while matches!(dribble_rd.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the dribbling client was never closed");
    timeout(TEST_TIMEOUT, dribbling).await.unwrap().unwrap();
    assert_serves_tls(&server.addr, &pinned(acceptor.fingerprint()), &token).await;
    server.stop().await.unwrap();
}

// ---- the CLI ----

fn exec_run(addr: &str, token: &std::path::Path, tls: &[&str], command: &[&str]) -> Command {
    let mut cmd = sockit();
    cmd.args(["exec", "run", addr, "--token-file"])
        .arg(token)
        .args(tls)
        .arg("--")
        .args(command);
    cmd
}

#[test]
fn exec_serve_tls_prints_a_fingerprint_that_exec_run_pins_and_a_wrong_pin_exits_255() {
    let token = token_file(Token::generate().unwrap().reveal());
    let mut cmd = sockit();
    cmd.args([
        "exec",
        "serve",
        "--tls",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
    ])
    .arg(token.path())
    .stdout(Stdio::piped());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    let mut line = String::new();
    BufReader::new(server.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let fingerprint = line
        .trim()
        .strip_prefix("tls fingerprint: ")
        .expect("a fingerprint line")
        .to_owned();
    assert!(fingerprint.parse::<Fingerprint>().is_ok(), "{fingerprint}");

    let pin = ["--tls", "--tls-pin", fingerprint.as_str()];
    let (code, out, err) =
        run_with_input(exec_run(&addr, token.path(), &pin, &["echo", "hi"]), b"");
    assert_eq!((code, out.as_slice()), (0, &b"hi\n"[..]), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let wrong = Fingerprint::of(b"another certificate").to_string();
    let wrong_pin = ["--tls", "--tls-pin", wrong.as_str()];
    let touch = ["touch", marker.to_str().unwrap()];
    let (code, _, err) = run_with_input(exec_run(&addr, token.path(), &wrong_pin, &touch), b"");
    assert_eq!(code, 255, "{err}");
    assert!(err.contains("pinned"), "{err}");
    assert!(!marker.exists(), "the command ran despite the failed pin");

    let (code, _, err) = run_with_input(exec_run(&addr, token.path(), &[], &touch), b"");
    assert_eq!(code, 255, "a plaintext client fails: {err}");
    assert!(err.contains("speaks TLS: use --tls"), "{err}");
    assert!(!marker.exists());

    let (code, out, err) =
        run_with_input(exec_run(&addr, token.path(), &pin, &["echo", "again"]), b"");
    assert_eq!((code, out.as_slice()), (0, &b"again\n"[..]), "{err}");
}

#[test]
fn exec_run_tls_without_a_pin_or_ca_is_a_usage_error_that_says_where_the_pin_comes_from() {
    let token = token_file(Token::generate().unwrap().reveal());
    let (code, _, err) = run_with_input(
        exec_run("127.0.0.1:1", token.path(), &["--tls"], &["true"]),
        b"",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tls-pin"), "{err}");
    assert!(err.contains("tls fingerprint"), "{err}");

    let (code, _, err) = run_with_input(
        exec_run(
            "127.0.0.1:1",
            token.path(),
            &["--tls", "--tls-pin", "sha256:not-hex"],
            &["true"],
        ),
        b"",
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn exec_run_tls_ca_checks_the_name_typed_not_the_address_it_resolved_to() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    // Valid for the name `localhost` only: not for 127.0.0.1.
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&ca, ca_cert.pem()).unwrap();

    let token = token_file(Token::generate().unwrap().reveal());
    let mut cmd = sockit();
    cmd.args(["exec", "serve", "--tls", "--listen", "127.0.0.1:0"])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--token-file")
        .arg(token.path());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    let port = addr.rsplit_once(':').unwrap().1;
    let ca_flag = ["--tls-ca", ca.to_str().unwrap()];

    let by_name = format!("localhost:{port}");
    let (code, out, err) = run_with_input(
        exec_run(&by_name, token.path(), &ca_flag, &["echo", "hi"]),
        b"",
    );
    assert_eq!((code, out.as_slice()), (0, &b"hi\n"[..]), "{err}");

    let (code, out, err) = run_with_input(
        exec_run(&addr, token.path(), &ca_flag, &["echo", "hi"]),
        b"",
    );
    assert_eq!(
        code, 255,
        "a certificate for the name is not one for the address: {err}"
    );
    assert!(out.is_empty());
}
