//! Hostile frames against a framed server (the framed echo): each gets a clear error frame
//! or a clean close, and the next client is still served.

mod common;

use std::time::Duration;

use common::{start, TEST_TIMEOUT};
use sockit::engine::Config;
use sockit::net::{Addr, Stream};
use sockit::service::framed_echo::{EchoMessage, FramedEcho};
use sockit::wire::{Connection, ErrorFrame, MAX_HEADER_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

fn frame(header: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(header.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(header);
    out
}

/// Sends `bytes` raw (optionally half-closing), then expects an error frame with `code` and
/// the connection closed after it.
async fn expect_error(addr: &Addr, bytes: &[u8], half_close: bool, code: &str) {
    let mut s = Stream::connect(addr).await.unwrap();
    // The server may reject and close before reading everything; that is its right.
    let _ = s.write_all(bytes).await;
    if half_close {
        s.shutdown().await.unwrap();
    }
    let mut conn = Connection::new(s);
    let err: ErrorFrame = timeout(TEST_TIMEOUT, conn.read_frame())
        .await
        .unwrap()
        .unwrap()
        .expect("an error frame before the close");
    assert_eq!(err.code, code, "{}", err.message);
    let (mut s, rest) = conn.into_parts();
    assert!(rest.is_empty());
    let mut buf = [0u8; 1];
    let after = timeout(TEST_TIMEOUT, s.read(&mut buf)).await.unwrap();
    assert!(matches!(after, Ok(0) | Err(_)), "connection left open");
}

async fn next_client_is_served(addr: &Addr) {
    let mut conn = Connection::new(Stream::connect(addr).await.unwrap());
    let body = b"still serving";
    conn.write_frame(&EchoMessage::Echo { size: 13 }, body)
        .await
        .unwrap();
    let got: EchoMessage = conn.read_frame().await.unwrap().unwrap();
    assert_eq!(got, EchoMessage::Echo { size: 13 });
    let mut echoed = Vec::new();
    while let Some(chunk) = conn.read_body_chunk().await.unwrap() {
        echoed.extend_from_slice(&chunk);
    }
    assert_eq!(echoed, body);
}

#[tokio::test]
async fn framed_echo_streams_a_large_body_back() {
    let server = start(FramedEcho::default(), Config::default()).await;
    let Addr::Inet(sa) = server.addr else {
        unreachable!()
    };
    let (rd, mut wr) = tokio::net::TcpStream::connect(sa)
        .await
        .unwrap()
        .into_split();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let size = body.len() as u64;
    let mut bytes = bytes::BytesMut::new();
    sockit::wire::encode_frame(&EchoMessage::Echo { size }, &body, &mut bytes).unwrap();
    let writer = tokio::spawn(async move { wr.write_all(&bytes).await.map(|_| wr) });
    let mut conn = Connection::new(tokio::io::join(rd, tokio::io::sink()));
    let got: EchoMessage = timeout(TEST_TIMEOUT, conn.read_frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, EchoMessage::Echo { size });
    let mut echoed = Vec::with_capacity(body.len());
    while let Some(chunk) = conn.read_body_chunk().await.unwrap() {
        echoed.extend_from_slice(&chunk);
    }
    assert!(echoed == body, "body differs");
    drop(writer.await.unwrap().unwrap());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn hostile_frames_get_clear_errors_and_the_next_client_is_served() {
    let server = start(FramedEcho::default(), Config::default()).await;
    let addr = server.addr.clone();
    let nested = format!(
        r#"{{"type":"echo","x":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let oversized = format!(
        r#"{{"type":"echo","pad":"{}"}}"#,
        "a".repeat(MAX_HEADER_BYTES)
    );
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (
            "length 0xFFFFFFFF",
            vec![0xff, 0xff, 0xff, 0xff],
            false,
            "header_too_large",
        ),
        (
            "header over the limit",
            frame(oversized.as_bytes()),
            false,
            "header_too_large",
        ),
        (
            "not JSON",
            frame(b"this is not json"),
            false,
            "invalid_header",
        ),
        ("not an object", frame(b"[1,2,3]"), false, "invalid_header"),
        (
            "nested 10,000 deep",
            frame(nested.as_bytes()),
            false,
            "invalid_header",
        ),
        (
            "duplicate key",
            frame(br#"{"type":"echo","size":1,"size":2}"#),
            false,
            "invalid_header",
        ),
        (
            "unknown type",
            frame(br#"{"type":"rm -rf"}"#),
            false,
            "invalid_header",
        ),
        (
            "size -1",
            frame(br#"{"type":"echo","size":-1}"#),
            false,
            "invalid_header",
        ),
        (
            "body over the cap",
            frame(br#"{"type":"echo","size":18446744073709551615}"#),
            false,
            "body_too_large",
        ),
        ("EOF inside the length", vec![0, 0], true, "unexpected_eof"),
        (
            "EOF inside the header",
            frame(br#"{"type":"echo"}"#)[..8].to_vec(),
            true,
            "unexpected_eof",
        ),
    ];
    for (what, bytes, half_close, code) in cases {
        eprintln!("case: {what}");
        expect_error(&addr, &bytes, half_close, code).await;
        next_client_is_served(&addr).await;
    }
    // EOF inside a body: the header and the bytes that came were already streamed back, so
    // the server cannot append an error frame mid-body; it closes, and the frame stays short.
    let mut s = Stream::connect(&addr).await.unwrap();
    s.write_all(&[frame(br#"{"type":"echo","size":10}"#), b"abc".to_vec()].concat())
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    timeout(TEST_TIMEOUT, s.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert!(echoed.ends_with(b"abc") && echoed.len() < 4 + 40 + 10);
    next_client_is_served(&addr).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_frame_trickled_a_byte_at_a_time_is_cut_off_at_its_deadline() {
    // Each byte comes well within the idle limit; the whole frame does not come in time.
    let deadline = Duration::from_millis(300);
    let config = Config {
        idle_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let server = start(FramedEcho::with_header_deadline(deadline), config).await;
    let Addr::Inet(sa) = server.addr else {
        unreachable!()
    };
    let (rd, mut wr) = tokio::net::TcpStream::connect(sa)
        .await
        .unwrap()
        .into_split();
    let mut frame = bytes::BytesMut::new();
    sockit::wire::encode_frame(&EchoMessage::Echo { size: 0 }, b"", &mut frame).unwrap();
    // Paced, not synchronised: 100 ms a byte makes the frame take seconds to send.
    let trickle = tokio::spawn(async move {
        for byte in frame.iter() {
            if wr.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut conn = Connection::new(tokio::io::join(rd, tokio::io::sink()));
    let answer: ErrorFrame = timeout(TEST_TIMEOUT, conn.read_frame())
        .await
        .expect("the server answers before the trickle ends")
        .unwrap()
        .expect("an error frame");
    assert_eq!(answer.code, "timeout", "{answer:?}");
    trickle.abort();
    // The next client is served.
    let mut next = Stream::connect(&server.addr).await.unwrap();
    let mut frame = bytes::BytesMut::new();
    sockit::wire::encode_frame(&EchoMessage::Echo { size: 2 }, b"ok", &mut frame).unwrap();
    next.write_all(&frame).await.unwrap();
    let mut conn = Connection::new(next);
    let got: EchoMessage = timeout(TEST_TIMEOUT, conn.read_frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, EchoMessage::Echo { size: 2 });
    drop(conn);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_line_of_text_gets_one_plain_text_error_line_and_the_next_client_is_served() {
    // A long header deadline: a short line must be answered at once, not at the deadline.
    let server = start(
        FramedEcho::with_header_deadline(TEST_TIMEOUT * 10),
        Config::default(),
    )
    .await;
    let addr = server.addr.clone();
    for line in [&b"hello\n"[..], b"hi\n", b"GET / HTTP/1.1\r\n\r\n"] {
        let mut s = Stream::connect(&addr).await.unwrap();
        s.write_all(line).await.unwrap();
        // Like nc: the connection stays open for more typing; the reply must come anyway.
        let mut reply = Vec::new();
        timeout(TEST_TIMEOUT, s.read_to_end(&mut reply))
            .await
            .expect("answered before the header deadline")
            .unwrap();
        let reply = String::from_utf8(reply).expect("a text reply, not a frame");
        assert!(
            reply.starts_with("error: this port speaks sockit's framed protocol (framed echo)")
                && reply.ends_with('\n')
                && reply.matches('\n').count() == 1,
            "{line:?}: {reply}"
        );
        next_client_is_served(&addr).await;
    }
    server.stop().await.unwrap();
}
