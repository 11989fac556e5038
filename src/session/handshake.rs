//! The two halves of the handshake: `accept` for servers, `connect` for clients.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep, timeout};

use super::auth::{decode_hex32, fresh_nonce, ClientMessage, ServerMessage, Transcript};
use super::{
    escape_peer_text, quote_first_line, AuthLimiter, SessionConfig, SessionError, Token,
    PROTOCOL_VERSION,
};
use crate::net::tls::{looks_like_client_hello, looks_like_tls};
use crate::wire::{
    looks_like_text, Connection, ErrorFrame, Hello, Limits, WireError, TEXT_SNIFF_BYTES,
};

/// Deadline for writing the final error frame to a peer that may not be reading.
const ERROR_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the server side of the handshake on a fresh connection.
///
/// Reads the hello, checks service and version, and, given a `token`, challenges the client
/// and proves knowledge of the token back; with `None` the client is welcomed without auth.
/// The connection reads under `Limits::pre_auth` until then and under `cfg.limits` after.
/// A source with recent failures in `limiter` waits out its delay first, and each failed
/// attempt waits a growing delay before its `auth_failed` reply. Logs one line per outcome.
///
/// # Errors
///
/// Any [`SessionError`]; the matching error frame has already been sent (when the stream
/// still works), and the caller should just drop the connection. A handshake that takes longer
/// than `cfg.handshake_timeout` ends with [`SessionError::Timeout`].
///
/// # Cancel safety
///
/// Not cancel safe: a cancelled handshake leaves the connection unusable.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &SessionConfig,
    token: Option<&Token>,
    peer_ip: Option<IpAddr>,
    limiter: &AuthLimiter,
) -> Result<(), SessionError> {
    conn.set_limits(Limits::pre_auth());
    let owed = limiter.penalty(peer_ip);
    if !owed.is_zero() {
        sleep(owed).await;
    }
    let handshake = serve_handshake(conn, cfg, token, peer_ip, limiter);
    let result = match timeout(cfg.handshake_timeout, handshake).await {
        Ok(result) => result,
        // A short line ("hi\n") is no frame's length prefix: the read waited for more.
        Err(_) if conn.at_frame_start() && looks_like_text(conn.buffered()) => {
            Err(SessionError::ClientSpeaksText)
        }
        Err(_) => Err(SessionError::Timeout(cfg.handshake_timeout)),
    };
    let peer = peer_ip.map_or_else(|| "local".to_owned(), |ip| ip.to_string());
    match result {
        Ok(()) => {
            limiter.record_success(peer_ip);
            conn.set_limits(cfg.limits);
            let auth = if token.is_some() { "token" } else { "none" };
            tracing::info!(%peer, service = %cfg.service, result = "ok", auth, "session accepted");
            Ok(())
        }
        Err(err) => {
            let delay = if err.is_failed_attempt() {
                limiter.record_failure(peer_ip)
            } else {
                Duration::ZERO
            };
            let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(
                %peer, service = %cfg.service, result = err.code(), delay_ms, error = %err,
                "session refused"
            );
            sleep(delay).await;
            if matches!(err, SessionError::ClientSpeaksText) {
                // Best effort, as below: a frame would be binary noise on an `nc` terminal.
                let _ = timeout(ERROR_REPLY_TIMEOUT, write_text_client_reply(conn, cfg)).await;
            } else if let Some(frame) = err.reply_frame() {
                // Best effort: the peer may be gone or not reading, and we are closing anyway.
                let _ = timeout(ERROR_REPLY_TIMEOUT, conn.write_error(frame)).await;
            }
            Err(err)
        }
    }
}

/// Runs the client side of the handshake: hello for `cfg.service`, then, if challenged,
/// proves knowledge of `token` and checks the server's proof in return.
///
/// The connection reads under `Limits::pre_auth` until the welcome and under `cfg.limits`
/// after it.
///
/// # Errors
///
/// [`SessionError::Remote`] with the server's error frame (e.g. `wrong_service`,
/// `auth_failed`), [`SessionError::TokenRequired`] when challenged without a token,
/// [`SessionError::ServerNotAuthenticated`] when the server's proof is wrong or missing while
/// we hold a token, [`SessionError::Timeout`] after `cfg.handshake_timeout`, and wire errors.
///
/// # Cancel safety
///
/// Not cancel safe: a cancelled handshake leaves the connection unusable.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &SessionConfig,
    token: Option<&Token>,
) -> Result<(), SessionError> {
    conn.set_limits(Limits::pre_auth());
    let result = timeout(cfg.handshake_timeout, join_handshake(conn, cfg, token))
        .await
        .unwrap_or(Err(SessionError::Timeout(cfg.handshake_timeout)));
    match &result {
        Ok(()) => conn.set_limits(cfg.limits),
        Err(err) => tracing::debug!(service = %cfg.service, result = err.code(), error = %err,
            "session handshake failed"),
    }
    result
}

async fn serve_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &SessionConfig,
    token: Option<&Token>,
    peer_ip: Option<IpAddr>,
    limiter: &AuthLimiter,
) -> Result<(), SessionError> {
    // A line shorter than a length prefix ("ls\n" typed into nc) would leave the frame read
    // waiting for its fourth byte until the deadline: answer it as soon as it is whole.
    while conn.at_frame_start() && conn.buffered().len() < TEXT_SNIFF_BYTES {
        if looks_like_text(conn.buffered()) {
            return Err(SessionError::ClientSpeaksText);
        }
        if conn.read_more().await? == 0 {
            break;
        }
    }
    let hello: Hello = match conn.read_frame().await {
        Ok(hello) => hello.ok_or(SessionError::Closed)?,
        Err(_) if looks_like_client_hello(conn.buffered()) => {
            return Err(SessionError::ClientSpeaksTls)
        }
        // A line ("alice\n") reads as an absurd length; the prefix stays in `buffered`.
        Err(WireError::HeaderTooLarge { .. }) if looks_like_text(conn.buffered()) => {
            return Err(SessionError::ClientSpeaksText)
        }
        Err(e) => return Err(e.into()),
    };
    if hello.service != cfg.service {
        return Err(SessionError::WrongService {
            served: cfg.service.clone(),
            asked: escape_peer_text(&hello.service),
        });
    }
    if hello.version != PROTOCOL_VERSION {
        return Err(SessionError::UnsupportedVersion {
            supported: PROTOCOL_VERSION,
            asked: hello.version,
        });
    }
    let Some(token) = token else {
        conn.write_frame(&ServerMessage::Welcome { mac: None }, &[])
            .await?;
        return Ok(());
    };
    let server_nonce = fresh_nonce()?;
    let challenge = ServerMessage::Challenge {
        nonce: hex::encode(server_nonce),
    };
    conn.write_frame(&challenge, &[]).await?;
    let answer = conn.read_frame::<ClientMessage>().await?;
    let (nonce, mac) = match answer.ok_or(SessionError::Closed)? {
        ClientMessage::Auth { nonce, mac } => (nonce, mac),
        ClientMessage::Other => return Err(SessionError::AuthRequired),
    };
    let (Some(client_nonce), Some(proof)) = (decode_hex32(&nonce), decode_hex32(&mac)) else {
        return Err(SessionError::AuthFailed);
    };
    let transcript = Transcript {
        service: &cfg.service,
        server_nonce: &server_nonce,
        client_nonce: &client_nonce,
    };
    // Guesses that were in flight when their source was barred are refused unheard, so a
    // burst of parallel guesses gets no more checked than a sequence of them.
    if let Some(owed) = limiter.refusal(peer_ip) {
        return Err(SessionError::Penalised(owed));
    }
    if !transcript.verify_client(token, &proof) {
        return Err(SessionError::AuthFailed);
    }
    let welcome = ServerMessage::Welcome {
        mac: Some(hex::encode(transcript.server_proof(token)?)),
    };
    conn.write_frame(&welcome, &[]).await?;
    Ok(())
}

async fn join_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &SessionConfig,
    token: Option<&Token>,
) -> Result<(), SessionError> {
    let hello = Hello {
        service: cfg.service.clone(),
        version: PROTOCOL_VERSION,
    };
    conn.write_frame(&hello, &[]).await?;
    let first = match conn.read_frame().await {
        Ok(first) => first.ok_or(SessionError::Closed)?,
        Err(e) => return Err(first_reply_error(e, conn.buffered(), cfg)),
    };
    let server_nonce = match first {
        ServerMessage::Challenge { nonce } => nonce,
        // A bare welcome is fine only for a client that expects no auth; one holding a token
        // must not be downgraded by a server that skips the challenge.
        ServerMessage::Welcome { mac: None } if token.is_none() => return Ok(()),
        ServerMessage::Welcome { mac: None } => return Err(SessionError::ServerSkippedAuth),
        ServerMessage::Welcome { .. } => return Err(SessionError::ServerNotAuthenticated),
        ServerMessage::Error { code, message } => return Err(remote_error(&code, &message)),
    };
    let token = token.ok_or(SessionError::TokenRequired)?;
    let server_nonce = decode_hex32(&server_nonce)
        .ok_or_else(|| SessionError::Protocol("the challenge nonce is not 64 hex digits".into()))?;
    let client_nonce = fresh_nonce()?;
    let transcript = Transcript {
        service: &cfg.service,
        server_nonce: &server_nonce,
        client_nonce: &client_nonce,
    };
    let auth = ClientMessage::Auth {
        nonce: hex::encode(client_nonce),
        mac: hex::encode(transcript.client_proof(token)?),
    };
    conn.write_frame(&auth, &[]).await?;
    let server_proof = match read_server_message(conn).await? {
        ServerMessage::Welcome { mac: Some(mac) } => decode_hex32(&mac),
        ServerMessage::Welcome { mac: None } => None,
        ServerMessage::Challenge { .. } => {
            return Err(SessionError::Protocol("a second challenge".into()))
        }
        ServerMessage::Error { code, message } => return Err(remote_error(&code, &message)),
    };
    match server_proof {
        Some(proof) if transcript.verify_server(token, &proof) => Ok(()),
        _ => Err(SessionError::ServerNotAuthenticated),
    }
}

/// Why the server's first reply to our hello is no handshake frame, told by what it sent: a
/// TLS server, a text server, or something that is not a sockit server at all.
fn first_reply_error(err: WireError, buffered: &[u8], cfg: &SessionConfig) -> SessionError {
    match err {
        // A TLS server answers a plaintext hello with an alert record, whose first bytes read
        // as an absurd frame length.
        _ if looks_like_tls(buffered) => SessionError::ServerSpeaksTls,
        // A text server (a chat line port) greets first; its line reads as an absurd length.
        WireError::HeaderTooLarge { .. } if looks_like_text(buffered) => {
            SessionError::ServerSpeaksText {
                said: quote_first_line(buffered),
            }
        }
        WireError::HeaderTooLarge { len, .. } => SessionError::NotSockit {
            service: cfg.service.clone(),
            why: format!(
                "its reply starts with a length of {len} bytes (a --compat tutorial server?)"
            ),
        },
        WireError::InvalidHeader(detail) => {
            // serde names the `type` it did not expect: our own `hello` means an echo.
            let why = if detail.contains("`hello`") {
                "it sent the greeting back (an echo server?)".to_owned()
            } else {
                format!(
                    "its first frame is no handshake reply ({})",
                    escape_peer_text(&detail)
                )
            };
            SessionError::NotSockit {
                service: cfg.service.clone(),
                why,
            }
        }
        e => e.into(),
    }
}

/// The one line a plain-text client (`nc`) at a framed port gets, then end of stream.
fn text_client_reply(cfg: &SessionConfig) -> String {
    let service = &cfg.service;
    let hint = cfg
        .text_client_hint
        .as_deref()
        .unwrap_or("connect with a sockit client");
    format!(
        "error: this port speaks sockit's framed protocol (service {service}), not plain text: \
         {hint}\n"
    )
}

async fn write_text_client_reply<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    cfg: &SessionConfig,
) -> std::io::Result<()> {
    let stream = conn.get_mut();
    stream.write_all(text_client_reply(cfg).as_bytes()).await?;
    stream.shutdown().await?;
    // Whatever else the client typed is read and dropped until it closes (the caller bounds
    // this): closing with unread bytes would reset the connection and could destroy the
    // reply before the client reads it.
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

async fn read_server_message<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> Result<ServerMessage, SessionError> {
    conn.read_frame().await?.ok_or(SessionError::Closed)
}

/// The server's refusal, its text escaped: it is peer text bound for a terminal or a log.
fn remote_error(code: &str, message: &str) -> SessionError {
    SessionError::Remote(ErrorFrame::new(
        escape_peer_text(code),
        escape_peer_text(message),
    ))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
