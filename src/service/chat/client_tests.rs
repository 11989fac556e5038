use std::time::Duration;

use tokio::io::{BufStream, DuplexStream};

use super::*;
use crate::session::AuthLimiter;

/// Guards against a hang only: every step here completes as soon as the bytes are written.
const HANG_GUARD: Duration = Duration::from_secs(10);

fn options(nick: &str) -> JoinOptions {
    JoinOptions {
        nick: nick.into(),
        room: None,
        token: None,
        tls: None,
    }
}

/// The server's end of a chat session, past the handshake (no token).
async fn accepted(stream: DuplexStream) -> Connection<DuplexStream> {
    let mut conn = Connection::new(stream);
    session::accept(
        &mut conn,
        &session_config(),
        None,
        None,
        &AuthLimiter::new(),
    )
    .await
    .expect("handshake");
    conn
}

/// A framed server that accepts the session and the nick, and sends `ready` with a notice
/// right behind it in the same write.
async fn fake_server(stream: DuplexStream) -> Connection<DuplexStream> {
    let mut conn = accepted(stream).await;
    let nick = match conn.read_frame::<ClientMessage>().await.expect("register") {
        Some(ClientMessage::Register { nick, .. }) => nick,
        other => panic!("expected register, got {other:?}"),
    };
    let mut pipelined = bytes::BytesMut::new();
    let ready = ServerMessage::Ready { nick, room: None };
    crate::wire::encode_frame(&ready, &[], &mut pipelined).expect("encode");
    let notice = ServerMessage::Notice {
        time: 0,
        room: None,
        text: "right behind ready".into(),
    };
    crate::wire::encode_frame(&notice, &[], &mut pipelined).expect("encode");
    tokio::io::AsyncWriteExt::write_all(conn.get_mut(), &pipelined)
        .await
        .expect("write");
    conn
}

#[tokio::test]
async fn a_joined_client_keeps_frames_pipelined_behind_ready_and_flushes_what_it_sends() {
    let (near, far) = tokio::io::duplex(4096);
    let server = tokio::spawn(fake_server(far));
    // A buffering stream (a proxy, a `BufStream`) holds writes until flushed.
    let client = join_on(BufStream::new(near), &options("alice"))
        .await
        .expect("join");
    let mut server = server.await.expect("server task");
    assert_eq!(client.nick, "alice");
    let ChatClient {
        mut sender,
        mut receiver,
        ..
    } = client;

    let next = tokio::time::timeout(HANG_GUARD, receiver.recv()).await;
    match next {
        Ok(Ok(Some(ServerMessage::Notice { text, .. }))) => assert_eq!(text, "right behind ready"),
        other => panic!("expected the pipelined notice, got {other:?}"),
    }

    let say = ClientMessage::Say { text: "hi".into() };
    sender.send(&say).await.expect("send");
    let got = tokio::time::timeout(HANG_GUARD, server.read_frame::<ClientMessage>())
        .await
        .expect("the command was flushed, not left in the stream's buffer");
    assert_eq!(got.expect("read"), Some(say));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_says_ready_fails_the_join_at_the_handshake_deadline() {
    let (near, far) = tokio::io::duplex(4096);
    let server = tokio::spawn(async move {
        let mut conn = accepted(far).await;
        // Takes the nick, then says nothing: the connection stays open.
        let _ = conn.read_frame::<ClientMessage>().await;
        std::future::pending::<()>().await;
    });
    let err = join_on(near, &options("alice"))
        .await
        .err()
        .expect("no ready, no join");
    assert!(
        matches!(
            err,
            ChatError::Client(ClientError::Session(SessionError::Timeout(_)))
        ),
        "{err:?}"
    );
    server.abort();
}
