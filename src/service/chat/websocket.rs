//! The browser's way in: one WebSocket carrying the chat's JSON messages, bridged to the
//! [`Broker`] as the line and framed ports are (same commands, limits and outbox).
//!
//! ```text
//! server: {"type":"hello","token_required":true|false}
//! client: {"type":"auth","token":"…"}                 (first, when the server has a token)
//! client: {"type":"register","nick":"alice"}          then, as on the framed port,
//! client: {"type":"line","text":"/who"}               or any frame of `ClientMessage`;
//! server: ServerMessage frames as JSON, one per text message
//! ```
//!
//! Text messages only, at most [`MAX_WS_MESSAGE_BYTES`]; a binary message closes with 1003,
//! invalid UTF-8 with 1007, a larger message with 1009, a wrong token with 1008.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::broker::{Broker, Control, Member};
use super::line::MAX_NICK_ATTEMPTS;
use super::messages::{ClientMessage, ServerMessage};
use super::outbox::{Closed, Delivery, Outbox, QueueLimits, FINAL_WRITE_TIMEOUT};
use super::pump::{farewell, pump_with, Dispatcher, Ending};
use super::rate::RateLimit;
use super::{parse_line, MAX_MESSAGE_BYTES};
use crate::net::PeerAddr;
use crate::session::Token;
use crate::wire::ErrorFrame;

/// Largest WebSocket message (and frame) a client may send: a whole message of control
/// characters written as JSON escapes, with room for the envelope. Larger closes with 1009.
pub const MAX_WS_MESSAGE_BYTES: usize = 8 * MAX_MESSAGE_BYTES;

/// How often the server pings a WebSocket client; browsers answer pings themselves.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Silence after which a WebSocket client is taken for gone: two pings unanswered.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(2 * 30 + 10);

/// Bytes tungstenite buffers on each side of one connection before our own limits apply.
const WS_BUFFER_BYTES: usize = 16 * 1024;

/// Settings of the WebSocket bridge.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Per-connection rate limit (lines and frames alike).
    pub rate: RateLimit,
    /// Per-connection outbound queue limits.
    pub queue: QueueLimits,
    /// Time from the upgrade to an accepted nick (the token included).
    pub register_timeout: Duration,
    /// See [`PING_INTERVAL`].
    pub ping_interval: Duration,
    /// See [`SILENCE_TIMEOUT`].
    pub silence_timeout: Duration,
    /// A client must send it first when set (always set beyond loopback).
    pub token: Option<Token>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            rate: RateLimit::default(),
            queue: QueueLimits::default(),
            register_timeout: super::framed::REGISTER_TIMEOUT,
            ping_interval: PING_INTERVAL,
            silence_timeout: SILENCE_TIMEOUT,
            token: None,
        }
    }
}

/// tungstenite's limits for a chat socket: frames and messages capped, small buffers.
pub(crate) fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_message_size(Some(MAX_WS_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_WS_MESSAGE_BYTES))
}

/// What a browser sends besides [`ClientMessage`]s.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WebMessage {
    /// The token, first, when the server has one.
    Auth { token: String },
    /// A line as typed: a message, or a `/command` parsed as the line port parses it.
    Line { text: String },
}

/// One text message read, or why reading stops.
enum Incoming {
    Text(Utf8Bytes),
    /// The client broke the rules: close with this code and reason.
    Refused(CloseCode, &'static str),
    /// It closed, vanished or fell silent.
    Gone,
}

/// Reads the next text message, skipping control frames (tungstenite answers pings).
///
/// # Cancel safety
/// Cancel safe: a message is only taken when this returns.
async fn next_text<S>(stream: &mut S, silence: Duration) -> Incoming
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        let Ok(next) = timeout(silence, stream.next()).await else {
            return Incoming::Refused(CloseCode::Policy, "no answer to pings");
        };
        return match next {
            Some(Ok(Message::Text(text))) => Incoming::Text(text),
            Some(Ok(Message::Binary(_))) => {
                Incoming::Refused(CloseCode::Unsupported, "text messages only")
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(WsError::Capacity(_))) => {
                Incoming::Refused(CloseCode::Size, "message too big")
            }
            Some(Err(WsError::Utf8(_))) => Incoming::Refused(CloseCode::Invalid, "invalid UTF-8"),
            Some(Ok(Message::Close(_)) | Err(_)) | None => Incoming::Gone,
        };
    }
}

/// A text message as what the client asks for.
fn parse_input(text: &str) -> Result<ClientMessage, ErrorFrame> {
    if let Ok(web) = serde_json::from_str::<WebMessage>(text) {
        return match web {
            WebMessage::Line { text } => match parse_line(&text) {
                Some(parsed) => parsed.map_err(|e| ErrorFrame::new("invalid_command", e)),
                // An empty line says nothing; as on the line port, nothing is sent.
                None => Ok(ClientMessage::Say { text }),
            },
            WebMessage::Auth { .. } => Err(ErrorFrame::new(
                "already_authenticated",
                "the token is sent once, first",
            )),
        };
    }
    serde_json::from_str::<ClientMessage>(text).map_err(|_| {
        ErrorFrame::new(
            "invalid_message",
            "expected a JSON chat message such as {\"type\":\"line\",\"text\":\"hi\"}",
        )
    })
}

fn json_text(msg: &ServerMessage) -> Message {
    Message::Text(Delivery::new(msg.clone()).json().clone())
}

/// Serves one upgraded WebSocket until the client leaves or `shutdown` fires.
pub(crate) async fn serve_socket<S>(
    mut ws: WebSocketStream<S>,
    broker: Arc<Broker>,
    config: &WebConfig,
    peer: &PeerAddr,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = serde_json::json!({"type": "hello", "token_required": config.token.is_some()});
    if ws.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    let outbox = Outbox::new(config.queue);
    let deadline = Instant::now() + config.register_timeout;
    let member = match timeout_at(deadline, register(&mut ws, &broker, config, &outbox)).await {
        Ok(Ok(member)) => member,
        Ok(Err(Some((code, reason)))) => return close(&mut ws, code, reason).await,
        Ok(Err(None)) => return,
        Err(_) => {
            let refusal = ErrorFrame::new("timeout", "no nick registered in time");
            let _ = ws.send(json_text(&ServerMessage::from(&refusal))).await;
            return close(&mut ws, CloseCode::Policy, "no nick in time").await;
        }
    };
    debug!(%peer, "web client registered");
    let (mut sink, mut stream) = ws.split();
    let mut dispatcher = Dispatcher::new(member, outbox.clone(), config.rate);
    let bye = farewell(config.queue);
    let close_with = OnceLock::new();
    let reading = read_messages(&mut dispatcher, &mut stream, config, &close_with);
    let writing = write_loop(&outbox, &mut sink, &bye, config.ping_interval, &close_with);
    let reason = pump_with(&outbox, writing, shutdown, reading).await;
    dispatcher.member.set_leave_reason(reason);
    tracing::info!(%peer, service = "chat-web", reason, "chat client left");
}

/// The token check and the nick: what comes before the broker. `Err(Some(..))` closes with
/// that code; `Err(None)` means the client is gone.
async fn register<S>(
    ws: &mut WebSocketStream<S>,
    broker: &Arc<Broker>,
    config: &WebConfig,
    outbox: &Arc<Outbox>,
) -> Result<Member, Option<(CloseCode, &'static str)>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let silence = config.silence_timeout;
    if let Some(token) = &config.token {
        let text = match next_text(ws, silence).await {
            Incoming::Text(text) => text,
            Incoming::Refused(code, reason) => return Err(Some((code, reason))),
            Incoming::Gone => return Err(None),
        };
        let authorized = matches!(
            serde_json::from_str::<WebMessage>(&text),
            Ok(WebMessage::Auth { token: given }) if token.matches(given.as_bytes())
        );
        if !authorized {
            let refusal = ErrorFrame::new(
                "unauthorized",
                "this server needs its token, sent first as {\"type\":\"auth\",\"token\":\"…\"}",
            );
            let _ = ws.send(json_text(&ServerMessage::from(&refusal))).await;
            return Err(Some((CloseCode::Policy, "unauthorized")));
        }
    }
    for _ in 0..MAX_NICK_ATTEMPTS {
        let text = match next_text(ws, silence).await {
            Incoming::Text(text) => text,
            Incoming::Refused(code, reason) => return Err(Some((code, reason))),
            Incoming::Gone => return Err(None),
        };
        let refusal = match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Register { nick, room }) => {
                match broker
                    .admit(nick.trim(), room.as_deref(), outbox.clone())
                    .await
                {
                    Ok(member) => return Ok(member),
                    Err(refusal) => refusal,
                }
            }
            _ => ErrorFrame::new(
                "not_registered",
                "register a nick first: {\"type\":\"register\",\"nick\":\"…\"}",
            ),
        };
        if ws
            .send(json_text(&ServerMessage::from(&refusal)))
            .await
            .is_err()
        {
            return Err(None);
        }
    }
    let refusal = ErrorFrame::new("too_many_attempts", "too many nicks refused; bye");
    let _ = ws.send(json_text(&ServerMessage::from(&refusal))).await;
    Err(Some((CloseCode::Policy, "too many attempts")))
}

async fn close<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = timeout(FINAL_WRITE_TIMEOUT, ws.close(Some(frame))).await;
}

async fn read_messages<S>(
    dispatcher: &mut Dispatcher,
    stream: &mut SplitStream<WebSocketStream<S>>,
    config: &WebConfig,
    close_with: &OnceLock<(CloseCode, &'static str)>,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let text = match next_text(stream, config.silence_timeout).await {
            Incoming::Text(text) => text,
            Incoming::Refused(code, reason) => {
                let _ = close_with.set((code, reason));
                return Ending::Protocol;
            }
            Incoming::Gone => return Ending::Closed,
        };
        if dispatcher.input(parse_input(&text)).await == Control::Quit {
            return Ending::Quit;
        }
    }
}

/// Sends each queued delivery as one text message, pinging every `ping_every`, until the
/// outbox closes; then a close frame (`close_with`'s code, else 1000). On overflow the client
/// gets `farewell` and a 1008 close within [`FINAL_WRITE_TIMEOUT`].
///
/// # Errors
/// A failed send: the client is gone.
async fn write_loop<S>(
    outbox: &Outbox,
    sink: &mut SplitSink<WebSocketStream<S>, Message>,
    farewell: &Delivery,
    ping_every: Duration,
    close_with: &OnceLock<(CloseCode, &'static str)>,
) -> std::io::Result<Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut batch = Vec::new();
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let io = std::io::Error::other;
    loop {
        let mut ping_due = false;
        let closed = tokio::select! {
            closed = outbox.next_batch(&mut batch) => closed,
            _ = ping.tick() => {
                ping_due = true;
                None
            }
        };
        let sending = async {
            if ping_due {
                sink.send(Message::Ping(Default::default())).await?;
            }
            for delivery in batch.drain(..) {
                sink.feed(Message::Text(delivery.json().clone())).await?;
            }
            sink.flush().await
        };
        tokio::select! {
            sent = sending => sent.map_err(io)?,
            () = outbox.overflow_fired() => {}
        }
        if outbox.overflowed() {
            let last_words = async {
                sink.send(Message::Text(farewell.json().clone())).await?;
                let frame = CloseFrame {
                    code: CloseCode::Policy,
                    reason: "too slow".into(),
                };
                sink.send(Message::Close(Some(frame))).await
            };
            let _ = timeout(FINAL_WRITE_TIMEOUT, last_words).await;
            return Ok(Closed::Overflowed);
        }
        if let Some(closed) = closed {
            let (code, reason) = close_with
                .get()
                .copied()
                .unwrap_or((CloseCode::Normal, "bye"));
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = timeout(FINAL_WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
            return Ok(closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_line_is_parsed_as_the_line_port_parses_it() {
        let parsed = parse_input(r#"{"type":"line","text":"/msg bob psst"}"#);
        assert_eq!(
            parsed,
            Ok(ClientMessage::Msg {
                to: "bob".into(),
                text: "psst".into()
            })
        );
        let framed = parse_input(r#"{"type":"who"}"#);
        assert_eq!(framed, Ok(ClientMessage::Who));
        let junk = parse_input("not json").map_err(|e| e.code);
        assert_eq!(junk, Err("invalid_message".to_string()));
    }

    #[test]
    fn the_token_comparison_takes_only_the_exact_token() {
        let token = Token::for_tests("s3cret-token");
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-toke"));
        assert!(!token.matches(b""));
    }
}
