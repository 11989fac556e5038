use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::net::Addr;

fn local() -> Addr {
    "127.0.0.1:0".parse().unwrap()
}

fn acceptor() -> TlsAcceptor {
    TlsAcceptor::new(ServerIdentity::self_signed(&local()).unwrap()).unwrap()
}

/// A server identity issued by a fresh CA for `name` alone, loaded from PEM files as a user's
/// would be; the temp dir holding them, the acceptor, and the CA file for clients.
fn ca_issued(name: &str) -> (tempfile::TempDir, TlsAcceptor, std::path::PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_owned()])
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
    let acceptor = TlsAcceptor::new(ServerIdentity::from_pem_files(&cert, &key).unwrap()).unwrap();
    (dir, acceptor, ca)
}

/// Runs both handshakes over an in-memory pipe, then echoes one message through.
async fn handshake(
    acceptor: &TlsAcceptor,
    connector: &TlsConnector,
) -> (Result<(), TlsError>, Result<(), TlsError>) {
    let (client_io, server_io) = duplex(16 * 1024);
    let server = async {
        let mut tls = acceptor.accept(server_io).await?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf)
            .await
            .map_err(TlsError::Handshake)?;
        tls.write_all(&buf).await.map_err(TlsError::Handshake)?;
        tls.flush().await.map_err(TlsError::Handshake)
    };
    let client = async {
        let mut tls = connector.connect(&local(), client_io).await?;
        tls.write_all(b"hello").await.map_err(TlsError::Handshake)?;
        tls.flush().await.map_err(TlsError::Handshake)?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf)
            .await
            .map_err(TlsError::Handshake)?;
        assert_eq!(&buf, b"hello");
        Ok(())
    };
    tokio::join!(client, server)
}

#[test]
fn fingerprints_print_as_colon_hex_and_parse_back_in_any_common_form() {
    let fp = Fingerprint::of(b"not really a certificate");
    let shown = fp.to_string();
    assert!(shown.starts_with("sha256:"), "{shown}");
    assert_eq!(shown.len(), "sha256:".len() + 32 * 3 - 1);
    assert_eq!(shown.parse::<Fingerprint>().unwrap(), fp);
    let bare = shown.trim_start_matches("sha256:").replace(':', "");
    assert_eq!(bare.to_lowercase().parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(format!("SHA256:{bare}").parse::<Fingerprint>().unwrap(), fp);
    for bad in [
        "",
        "sha256:",
        "sha256:AB:CD",
        "md5:00",
        &format!("{bare}00"),
        "zz",
    ] {
        assert!(
            bad.parse::<Fingerprint>().is_err(),
            "{bad:?} should not parse"
        );
    }
}

#[tokio::test]
async fn a_pinned_self_signed_certificate_is_accepted() {
    let acceptor = acceptor();
    let connector = TlsConnector::new(&ServerTrust::Pin(acceptor.fingerprint())).unwrap();
    let (client, server) = handshake(&acceptor, &connector).await;
    client.unwrap();
    server.unwrap();
}

#[tokio::test]
async fn a_pin_that_does_not_match_is_refused_with_both_fingerprints() {
    let acceptor = acceptor();
    let wrong = Fingerprint::of(b"some other certificate");
    let connector = TlsConnector::new(&ServerTrust::Pin(wrong)).unwrap();
    let (client, server) = handshake(&acceptor, &connector).await;
    let err = client.unwrap_err();
    assert!(matches!(err, TlsError::PinMismatch { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&wrong.to_string()), "{message}");
    assert!(
        message.contains(&acceptor.fingerprint().to_string()),
        "{message}"
    );
    assert!(server.is_err());
}

#[tokio::test]
async fn a_server_that_sends_nothing_back_times_out_the_client() {
    let mut connector = TlsConnector::new(&ServerTrust::Pin(Fingerprint::of(b"whatever"))).unwrap();
    connector.handshake_timeout = Duration::from_millis(100);
    let (client_io, _server_io) = duplex(16 * 1024);
    let err = connector.connect(&local(), client_io).await.unwrap_err();
    assert!(matches!(err, TlsError::Timeout(_)), "{err}");
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_handshake_deadline() {
    let mut acceptor = acceptor();
    acceptor.handshake_timeout = Duration::from_millis(100);
    let (_client_io, server_io) = duplex(16 * 1024);
    let err = acceptor.accept(server_io).await.unwrap_err();
    assert!(matches!(err, TlsError::Timeout(_)), "{err}");
}

#[tokio::test]
async fn a_plaintext_peer_fails_the_server_handshake() {
    let acceptor = acceptor();
    let (mut client_io, server_io) = duplex(16 * 1024);
    client_io
        .write_all(b"\0\0\0\x2a{\"type\":\"hello\"}")
        .await
        .unwrap();
    let err = acceptor.accept(server_io).await.unwrap_err();
    assert!(matches!(err, TlsError::ClientNotTls), "{err:?}");
    assert!(err.to_string().contains("did not start TLS"), "{err}");
}

#[tokio::test]
async fn a_plaintext_server_is_named_whether_it_answers_or_just_closes() {
    let connector = TlsConnector::new(&ServerTrust::Pin(Fingerprint::of(b"any"))).unwrap();
    for answer in [&b"\0\0\0\x30{\"type\":\"error\"}"[..], b""] {
        let (client_io, mut server_io) = duplex(16 * 1024);
        let server = async move {
            let mut first = [0u8; 5];
            server_io.read_exact(&mut first).await.unwrap();
            assert!(looks_like_client_hello(&first));
            server_io.write_all(answer).await.unwrap();
        };
        let addr = local();
        let (client, ()) = tokio::join!(connector.connect(&addr, client_io), server);
        let err = client.unwrap_err();
        assert!(matches!(err, TlsError::ServerNotTls { .. }), "{err:?}");
        assert!(err.to_string().contains("does not speak TLS"), "{err}");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }
}

#[tokio::test]
async fn a_certificate_issued_by_a_trusted_ca_file_is_accepted_and_others_are_not() {
    let (_dir, acceptor, ca) = ca_issued("127.0.0.1");
    let connector = TlsConnector::new(&ServerTrust::CaFile(ca)).unwrap();
    let (client, server) = handshake(&acceptor, &connector).await;
    client.unwrap();
    server.unwrap();

    // The generated self-signed certificate is not from that CA.
    let (client, _) = handshake(&self::acceptor(), &connector).await;
    assert!(matches!(client, Err(TlsError::Handshake(_))), "{client:?}");
}

#[tokio::test]
async fn a_ca_issued_certificate_is_checked_for_the_host_name_the_user_typed() {
    // Valid for the name only, not for the loopback address connected to.
    let (_dir, acceptor, ca) = ca_issued("files.sockit.test");
    let trust = ServerTrust::CaFile(ca);

    let by_name = TlsConnector::new(&trust)
        .unwrap()
        .for_host("files.sockit.test")
        .unwrap();
    let (client, server) = handshake(&acceptor, &by_name).await;
    client.unwrap();
    server.unwrap();

    let by_address = TlsConnector::new(&trust).unwrap();
    let (client, _) = handshake(&acceptor, &by_address).await;
    assert!(matches!(client, Err(TlsError::Handshake(_))), "{client:?}");

    let other_name = TlsConnector::new(&trust)
        .unwrap()
        .for_host("other.sockit.test")
        .unwrap();
    let (client, _) = handshake(&acceptor, &other_name).await;
    assert!(matches!(client, Err(TlsError::Handshake(_))), "{client:?}");
    assert!(TlsConnector::new(&trust)
        .unwrap()
        .for_host("not a name")
        .is_err());
}

#[test]
fn unreadable_or_empty_pem_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = TlsConnector::new(&ServerTrust::CaFile(missing.clone())).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let err = TlsConnector::new(&ServerTrust::CaFile(empty)).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
    let err = ServerIdentity::from_pem_files(&missing, &missing).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
