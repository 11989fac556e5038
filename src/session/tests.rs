//! Handshake tests over in-memory pipes, with paused time so delays and deadlines cost nothing.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;
use tokio::io::{duplex, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use super::*;
use crate::session::auth::Nonce;
use crate::session::auth::NONCE_BYTES;
use crate::session::limiter::FIRST_FAILURE_DELAY;
use crate::session::HANDSHAKE_TIMEOUT;
use crate::session::REFUSE_AFTER_FAILURES;
use crate::wire::{encode_frame, Message, WireError};

type Conn = Connection<DuplexStream>;

const PEER: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));

fn pair() -> (Conn, Conn) {
    let (client, server) = duplex(64 * 1024);
    (Connection::new(client), Connection::new(server))
}

fn token(secret: &str) -> Token {
    Token::for_tests(secret)
}

/// Runs both halves to completion over a fresh pipe.
async fn run(
    client_cfg: &SessionConfig,
    client_token: Option<&Token>,
    server_token: Option<&Token>,
    limiter: &AuthLimiter,
) -> (
    Result<(), SessionError>,
    Result<(), SessionError>,
    Conn,
    Conn,
) {
    let (mut client, mut server) = pair();
    let server_cfg = SessionConfig::new("exec");
    let (client_res, server_res) = tokio::join!(
        connect(&mut client, client_cfg, client_token),
        accept(&mut server, &server_cfg, server_token, PEER, limiter),
    );
    (client_res, server_res, client, server)
}

/// A message type no handshake expects.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Rogue {
    Exec { argv: Vec<String> },
}

impl Message for Rogue {}

async fn send_hello(client: &mut Conn, service: &str, version: u32) {
    let hello = Hello {
        service: service.into(),
        version,
    };
    client.write_frame(&hello, &[]).await.expect("hello");
}

async fn read_challenge(client: &mut Conn) -> Nonce {
    match client.read_frame::<ServerMessage>().await {
        Ok(Some(ServerMessage::Challenge { nonce })) => decode_hex32(&nonce).expect("hex nonce"),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

async fn read_error_code(client: &mut Conn) -> String {
    match client.read_frame::<ErrorFrame>().await {
        Ok(Some(frame)) => frame.code,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// A correct `auth` answer to `server_nonce`, as an honest client would send it.
fn answer(token: &Token, server_nonce: &Nonce) -> ClientMessage {
    let client_nonce = [7u8; NONCE_BYTES];
    let transcript = Transcript {
        service: "exec",
        server_nonce,
        client_nonce: &client_nonce,
    };
    ClientMessage::Auth {
        nonce: hex::encode(client_nonce),
        mac: hex::encode(transcript.client_proof(token).expect("mac")),
    }
}

#[tokio::test(start_paused = true)]
async fn matching_tokens_authenticate_both_ways_and_lift_the_pre_auth_limits() {
    let (t, limiter) = (token("secret"), AuthLimiter::new());
    let cfg = SessionConfig::new("exec");
    let (client_res, server_res, mut client, mut server) =
        run(&cfg, Some(&t), Some(&t), &limiter).await;
    client_res.expect("client authenticated the server");
    server_res.expect("server authenticated the client");
    // A 20 KiB header would break the 16 KiB pre-auth cap.
    let big = ErrorFrame::new("note", "x".repeat(20 * 1024));
    client.write_frame(&big, &[]).await.expect("write");
    server.write_frame(&big, &[]).await.expect("write");
    assert_eq!(server.read_frame().await.ok(), Some(Some(big.clone())));
    assert_eq!(client.read_frame().await.ok(), Some(Some(big)));
}

#[tokio::test(start_paused = true)]
async fn a_wrong_token_is_auth_failed_on_both_sides() {
    let limiter = AuthLimiter::new();
    let cfg = SessionConfig::new("exec");
    let (client_res, server_res, ..) = run(
        &cfg,
        Some(&token("guess")),
        Some(&token("secret")),
        &limiter,
    )
    .await;
    let (client_err, server_err) = (client_res.unwrap_err(), server_res.unwrap_err());
    assert!(matches!(server_err, SessionError::AuthFailed));
    assert!(matches!(&client_err, SessionError::Remote(f) if f.code == "auth_failed"));
    assert_eq!(client_err.code(), "auth_failed");
}

#[tokio::test(start_paused = true)]
async fn a_client_without_a_token_is_told_the_server_requires_one() {
    let (mut client, mut server) = pair();
    let (t, cfg, limiter) = (
        token("secret"),
        SessionConfig::new("exec"),
        AuthLimiter::new(),
    );
    let tokenless = async move {
        // The caller drops the connection after a failed handshake, as a client would.
        connect(&mut client, &cfg, None).await
    };
    let server_cfg = SessionConfig::new("exec");
    let (client_res, server_res) = tokio::join!(
        tokenless,
        accept(&mut server, &server_cfg, Some(&t), PEER, &limiter)
    );
    assert!(matches!(client_res, Err(SessionError::TokenRequired)));
    assert_eq!(client_res.unwrap_err().code(), "token_required");
    assert!(matches!(server_res, Err(SessionError::Closed)));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_skips_auth_is_refused_with_auth_required() {
    let (mut client, mut server) = pair();
    let (t, limiter, cfg) = (
        token("secret"),
        AuthLimiter::new(),
        SessionConfig::new("exec"),
    );
    let rogue = async {
        send_hello(&mut client, "exec", PROTOCOL_VERSION).await;
        read_challenge(&mut client).await;
        let exec = Rogue::Exec {
            argv: vec!["id".into()],
        };
        client.write_frame(&exec, &[]).await.expect("write");
        read_error_code(&mut client).await
    };
    let (code, server_res) =
        tokio::join!(rogue, accept(&mut server, &cfg, Some(&t), PEER, &limiter));
    assert_eq!(code, "auth_required");
    assert!(matches!(server_res, Err(SessionError::AuthRequired)));
    assert_eq!(limiter.penalty(PEER), FIRST_FAILURE_DELAY);
}

#[tokio::test(start_paused = true)]
async fn a_replayed_auth_answer_fails_on_a_new_connection() {
    let (t, limiter, cfg) = (
        token("secret"),
        AuthLimiter::new(),
        SessionConfig::new("exec"),
    );
    let (mut client, mut server) = pair();
    let recorded = async {
        send_hello(&mut client, "exec", PROTOCOL_VERSION).await;
        let auth = answer(&t, &read_challenge(&mut client).await);
        client.write_frame(&auth, &[]).await.expect("write");
        let welcome = client.read_frame::<ServerMessage>().await.expect("read");
        assert!(matches!(
            welcome,
            Some(ServerMessage::Welcome { mac: Some(_) })
        ));
        auth
    };
    let (auth, first) = tokio::join!(
        recorded,
        accept(&mut server, &cfg, Some(&t), PEER, &limiter)
    );
    first.expect("the original answer is accepted");

    let (mut client, mut server) = pair();
    let replay = async {
        send_hello(&mut client, "exec", PROTOCOL_VERSION).await;
        read_challenge(&mut client).await;
        client.write_frame(&auth, &[]).await.expect("write");
        read_error_code(&mut client).await
    };
    let (code, second) = tokio::join!(replay, accept(&mut server, &cfg, Some(&t), PEER, &limiter));
    assert_eq!(code, "auth_failed");
    assert!(matches!(second, Err(SessionError::AuthFailed)));
}

#[tokio::test(start_paused = true)]
async fn a_server_with_another_token_is_detected_by_the_client() {
    let (mut client, mut server) = pair();
    let cfg = SessionConfig::new("exec");
    let fake = async {
        let _hello: Hello = server.read_frame().await.expect("read").expect("hello");
        let server_nonce = [3u8; NONCE_BYTES];
        let challenge = ServerMessage::Challenge {
            nonce: hex::encode(server_nonce),
        };
        server.write_frame(&challenge, &[]).await.expect("write");
        let Some(ClientMessage::Auth { nonce, .. }) = server.read_frame().await.expect("read")
        else {
            panic!("expected auth");
        };
        let client_nonce = decode_hex32(&nonce).expect("hex");
        let transcript = Transcript {
            service: "exec",
            server_nonce: &server_nonce,
            client_nonce: &client_nonce,
        };
        let mac = transcript
            .server_proof(&token("not-the-secret"))
            .expect("mac");
        let welcome = ServerMessage::Welcome {
            mac: Some(hex::encode(mac)),
        };
        server.write_frame(&welcome, &[]).await.expect("write");
    };
    let secret = token("secret");
    let (client_res, ()) = tokio::join!(connect(&mut client, &cfg, Some(&secret)), fake);
    let err = client_res.unwrap_err();
    assert!(matches!(err, SessionError::ServerNotAuthenticated));
    assert_eq!(err.code(), "server_not_authenticated");
}

#[tokio::test(start_paused = true)]
async fn a_client_holding_a_token_refuses_a_server_that_skips_the_challenge() {
    let cfg = SessionConfig::new("exec");
    let t = token("secret");
    let (client_res, server_res, ..) = run(&cfg, Some(&t), None, &AuthLimiter::new()).await;
    let err = client_res.expect_err("a token holder refuses an open server");
    assert!(matches!(err, SessionError::ServerSkippedAuth), "{err:?}");
    assert!(
        err.to_string().contains("unset SOCKIT_TOKEN"),
        "the message says how to join an open server: {err}"
    );
    server_res.expect("an open server welcomes anyone");
    let (client_res, server_res, ..) = run(&cfg, None, None, &AuthLimiter::new()).await;
    client_res.expect("no token, no auth");
    server_res.expect("no token, no auth");
}

#[tokio::test(start_paused = true)]
async fn a_client_at_the_wrong_service_gets_wrong_service() {
    let cfg = SessionConfig::new("files");
    let t = token("secret");
    let (client_res, server_res, ..) = run(&cfg, Some(&t), Some(&t), &AuthLimiter::new()).await;
    match client_res {
        Err(SessionError::Remote(frame)) => {
            assert_eq!(frame.code, "wrong_service");
            assert_eq!(frame.message, "this port serves exec, not files");
        }
        other => panic!("expected wrong_service, got {other:?}"),
    }
    assert!(matches!(server_res, Err(SessionError::WrongService { .. })));
}

#[tokio::test(start_paused = true)]
async fn an_unsupported_version_is_refused() {
    let (mut client, mut server) = pair();
    let (t, cfg) = (token("secret"), SessionConfig::new("exec"));
    let future_client = async {
        send_hello(&mut client, "exec", PROTOCOL_VERSION + 1).await;
        read_error_code(&mut client).await
    };
    let limiter = AuthLimiter::new();
    let (code, server_res) = tokio::join!(
        future_client,
        accept(&mut server, &cfg, Some(&t), PEER, &limiter)
    );
    assert_eq!(code, "unsupported_version");
    assert!(matches!(
        server_res,
        Err(SessionError::UnsupportedVersion { asked: 2, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn an_oversized_pre_auth_header_is_rejected() {
    let (mut client, mut server) = pair();
    let (t, cfg) = (token("secret"), SessionConfig::new("exec"));
    let hog = async {
        send_hello(&mut client, &"x".repeat(20 * 1024), PROTOCOL_VERSION).await;
        read_error_code(&mut client).await
    };
    let limiter = AuthLimiter::new();
    let (code, server_res) = tokio::join!(hog, accept(&mut server, &cfg, Some(&t), PEER, &limiter));
    assert_eq!(code, "header_too_large");
    assert!(matches!(
        server_res,
        Err(SessionError::Wire(WireError::HeaderTooLarge {
            max: 16384,
            ..
        }))
    ));
}

/// The first bytes of a TLS 1.2-style ClientHello record and of a fatal alert record.
const CLIENT_HELLO_START: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
const TLS_ALERT: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];

#[tokio::test(start_paused = true)]
async fn a_tls_client_on_a_plaintext_port_is_named_and_gets_no_plaintext_reply() {
    let (mut client, mut server) = pair();
    let (t, cfg, limiter) = (
        token("secret"),
        SessionConfig::new("exec"),
        AuthLimiter::new(),
    );
    client
        .get_mut()
        .write_all(CLIENT_HELLO_START)
        .await
        .unwrap();
    let server_res = accept(&mut server, &cfg, Some(&t), PEER, &limiter).await;
    let err = server_res.unwrap_err();
    assert!(matches!(err, SessionError::ClientSpeaksTls), "{err:?}");
    assert!(
        err.to_string().contains("tried TLS on a plaintext port"),
        "{err}"
    );
    drop(server);
    // Nothing was written back: a TLS client could not parse a plaintext frame anyway.
    assert!(matches!(
        client.read_frame::<ServerMessage>().await,
        Ok(None)
    ));
    assert_eq!(limiter.penalty(PEER), Duration::ZERO, "not an auth failure");
}

#[tokio::test(start_paused = true)]
async fn a_plaintext_client_answered_with_a_tls_alert_says_the_server_speaks_tls() {
    let (mut client, mut server) = pair();
    let tls_server = async {
        let mut hello = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(server.get_mut(), &mut hello)
            .await
            .unwrap();
        server.get_mut().write_all(TLS_ALERT).await.unwrap();
    };
    let (t, cfg) = (token("secret"), SessionConfig::new("exec"));
    let (client_res, ()) = tokio::join!(connect(&mut client, &cfg, Some(&t)), tls_server);
    let err = client_res.unwrap_err();
    assert!(matches!(err, SessionError::ServerSpeaksTls), "{err:?}");
    assert!(err.to_string().contains("--tls"), "{err}");
    assert_eq!(err.code(), "server_speaks_tls");
}

#[tokio::test(start_paused = true)]
async fn a_slowloris_hello_is_closed_at_the_handshake_timeout() {
    let (client_io, server_io) = duplex(64 * 1024);
    let (mut client_io, mut server) = (client_io, Connection::new(server_io));
    let mut hello = bytes::BytesMut::new();
    let hello_msg = Hello {
        service: "exec".into(),
        version: 1,
    };
    encode_frame(&hello_msg, &[], &mut hello).expect("encode");
    assert!(hello.len() > 20, "the hello outlasts the deadline");
    let (t, cfg, limiter) = (
        token("secret"),
        SessionConfig::new("exec"),
        AuthLimiter::new(),
    );
    let start = Instant::now();
    let drip = async {
        for byte in hello.iter() {
            client_io.write_all(&[*byte]).await.expect("write");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let server_side = async {
        let res = accept(&mut server, &cfg, Some(&t), PEER, &limiter).await;
        (res, start.elapsed())
    };
    let ((), (server_res, elapsed)) = tokio::join!(drip, server_side);
    assert!(matches!(server_res, Err(SessionError::Timeout(d)) if d == HANDSHAKE_TIMEOUT));
    assert!(elapsed >= HANDSHAKE_TIMEOUT && elapsed < HANDSHAKE_TIMEOUT + Duration::from_secs(1));
    drop(server);
    let mut client = Connection::new(client_io);
    assert_eq!(read_error_code(&mut client).await, "timeout");
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_from_one_source_wait_longer_each_time() {
    let limiter = AuthLimiter::new();
    let (good, bad) = (token("secret"), token("guess"));
    let cfg = SessionConfig::new("exec");
    let mut waits = Vec::new();
    for _ in 0..REFUSE_AFTER_FAILURES {
        let start = Instant::now();
        let (client_res, ..) = run(&cfg, Some(&bad), Some(&good), &limiter).await;
        assert_eq!(client_res.unwrap_err().code(), "auth_failed");
        waits.push(start.elapsed());
    }
    // Each attempt waits out the delay it owes, then the doubled delay of its own failure.
    let expected = [100, 100 + 200, 200 + 400].map(Duration::from_millis);
    for (wait, expected) in waits.iter().zip(expected) {
        assert!(
            *wait >= expected && *wait < expected + Duration::from_millis(50),
            "{waits:?}"
        );
    }
    assert_eq!(limiter.penalty(PEER), Duration::from_millis(400));
    // Barred now: even a guess that got past the connect-time check is refused unheard.
    let (client_res, ..) = run(&cfg, Some(&bad), Some(&good), &limiter).await;
    assert_eq!(client_res.unwrap_err().code(), "too_many_failures");
    assert_eq!(
        limiter.penalty(PEER),
        Duration::from_millis(400),
        "not counted"
    );
}

#[tokio::test(start_paused = true)]
async fn the_right_token_clears_a_sources_failures() {
    let limiter = AuthLimiter::new();
    let (good, bad) = (token("secret"), token("guess"));
    let cfg = SessionConfig::new("exec");
    let (client_res, ..) = run(&cfg, Some(&bad), Some(&good), &limiter).await;
    assert_eq!(client_res.unwrap_err().code(), "auth_failed");
    assert_eq!(limiter.penalty(PEER), FIRST_FAILURE_DELAY);
    let (client_res, server_res, ..) = run(&cfg, Some(&good), Some(&good), &limiter).await;
    client_res.expect("the right token still works");
    server_res.expect("the right token still works");
    assert_eq!(limiter.penalty(PEER), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_framed_client_at_a_text_server_says_so_and_quotes_its_greeting() {
    let (mut client, mut server) = pair();
    let text_server = async {
        let greeting = b"* welcome to sockit chat; send your nick\n";
        server.get_mut().write_all(greeting).await.unwrap();
    };
    let cfg = SessionConfig::new("chat");
    let (client_res, ()) = tokio::join!(connect(&mut client, &cfg, None), text_server);
    let err = client_res.unwrap_err();
    assert!(
        matches!(&err, SessionError::ServerSpeaksText { said }
            if said == "* welcome to sockit chat; send your nick"),
        "{err:?}"
    );
    assert!(err.to_string().contains("plain text"), "{err}");
    assert_eq!(err.code(), "server_speaks_text");
}

/// Reads everything the server wrote before closing, as `nc` would show it.
async fn read_all(client: &mut Conn) -> String {
    let mut out = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(client.get_mut(), &mut out)
        .await
        .unwrap();
    String::from_utf8(out).expect("a text client gets text")
}

#[tokio::test(start_paused = true)]
async fn nc_at_a_framed_port_gets_one_readable_line_with_the_hint() {
    let (mut client, mut server) = pair();
    let cfg = SessionConfig {
        text_client_hint: Some("try the line port".into()),
        ..SessionConfig::new("chat")
    };
    client.get_mut().write_all(b"alice\n").await.unwrap();
    let err = accept(&mut server, &cfg, None, PEER, &AuthLimiter::new())
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::ClientSpeaksText), "{err:?}");
    drop(server);
    let said = read_all(&mut client).await;
    assert_eq!(said, text_client_reply(&cfg));
    assert!(
        said.starts_with("error: this port speaks sockit's framed protocol (service chat)")
            && said.ends_with(": try the line port\n")
            && said.lines().count() == 1,
        "{said:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_line_shorter_than_a_length_prefix_is_answered_in_text_at_once() {
    let (mut client, mut server) = pair();
    let cfg = SessionConfig::new("exec");
    // The client stays connected, waiting for an answer (nc without -q).
    client.get_mut().write_all(b"ls\n").await.unwrap();
    let started = Instant::now();
    let err = accept(&mut server, &cfg, None, PEER, &AuthLimiter::new())
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::ClientSpeaksText), "{err:?}");
    assert!(
        started.elapsed() < cfg.handshake_timeout,
        "answered after {:?}, not at the deadline",
        started.elapsed()
    );
    drop(server);
    assert_eq!(read_all(&mut client).await, text_client_reply(&cfg));
}

#[tokio::test]
async fn a_short_line_then_eof_is_still_answered_in_text() {
    let (mut client, mut server) = pair();
    let cfg = SessionConfig::new("exec");
    // `printf 'ls\n' | nc -N`: the line arrives in pieces, then the client's half-close.
    client.get_mut().write_all(b"l").await.unwrap();
    client.get_mut().write_all(b"s\n").await.unwrap();
    client.get_mut().shutdown().await.unwrap();
    let err = accept(&mut server, &cfg, None, PEER, &AuthLimiter::new())
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::ClientSpeaksText), "{err:?}");
    drop(server);
    assert_eq!(read_all(&mut client).await, text_client_reply(&cfg));
}
