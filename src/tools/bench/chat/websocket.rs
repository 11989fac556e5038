//! The browser's protocol for a chat load: a WebSocket to `/chat/ws` carrying the JSON
//! messages the chat page sends (`auth` when asked, `register`, then `line`s), so a load
//! measures what the page's users get.
//!
//! ```text
//! server: {"type":"hello","token_required":false}
//! client: {"type":"register","nick":"…"}
//! server: {"type":"ready",…}, history, {"type":"notice","text":"NICK joined #lobby",…}
//! client: {"type":"line","text":"~S SEQ MICROS xxx"}
//! server: {"type":"message",…,"text":"~S SEQ MICROS xxx"}
//! ```

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::timeout_at;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::client::quote;
use crate::net::{Addr, Stream};
use crate::service::chat::CHAT_WS_PATH;
use crate::session::Token;
use crate::tools::bench::{BenchError, IO_TIMEOUT};

/// Bytes read at a time, as the line protocol's client reads: tungstenite zeroes the free
/// part of its read buffer (128 KiB by default) before each read, which dominated a
/// receiver's time when each read brought a few hundred bytes.
const READ_BUFFER_BYTES: usize = 8 * 1024;

type Socket = WebSocketStream<Stream>;
/// What a WebSocket client reads.
pub(super) type WsReader = SplitStream<Socket>;
/// What a WebSocket client writes.
pub(super) type WsWriter = SplitSink<Socket, Message>;

/// Opens `/chat/ws` at `addr` as the chat page would (its Origin is the server itself), sends
/// the token if the server asks for it, registers `nick` and waits for its join notice, so
/// the room's history is behind it.
///
/// # Errors
/// [`BenchError::Connect`] when the connection fails, [`BenchError::Handshake`] when the
/// server is no sockit chat web listener or refuses the client (its words quoted).
pub(super) async fn join(
    addr: &Addr,
    token: Option<&Token>,
    nick: &str,
) -> Result<(WsReader, WsWriter), BenchError> {
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    let connect_err = |source| BenchError::Connect {
        addr: addr.clone(),
        source,
    };
    let handshake = |detail: String| BenchError::Handshake {
        addr: addr.clone(),
        detail,
    };
    let stream = timeout_at(deadline, Stream::connect(addr))
        .await
        .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_err)?;
    let host = match addr {
        Addr::Inet(sa) => sa.to_string(),
        Addr::Unix(_) => "localhost".to_owned(),
    };
    let mut request = format!("ws://{host}{CHAT_WS_PATH}")
        .into_client_request()
        .map_err(|e| handshake(format!("no WebSocket request for it: {e}")))?;
    // The page's own origin, which the server accepts; a foreign one gets 403.
    let origin = format!("http://{host}")
        .parse()
        .map_err(|_| handshake(format!("no Origin header for {host}")))?;
    request.headers_mut().insert("origin", origin);
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let upgrade = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    let mut socket = match timeout_at(deadline, upgrade).await {
        Err(_) => {
            return Err(handshake(format!(
                "it did not answer the WebSocket handshake within {IO_TIMEOUT:?}: is it \
                 `sockit chat serve --web-listen` or `sockit http serve --chat`?"
            )))
        }
        Ok(Err(WsError::Http(response))) => {
            return Err(handshake(format!(
                "it refused the WebSocket at {CHAT_WS_PATH} with HTTP {}: is it `sockit chat \
                 serve --web-listen` or `sockit http serve --chat`?",
                response.status()
            )))
        }
        Ok(Err(e)) => {
            return Err(handshake(format!(
                "the WebSocket handshake at {CHAT_WS_PATH} failed ({e}): is it `sockit chat \
                 serve --web-listen` or `sockit http serve --chat`?"
            )))
        }
        Ok(Ok((socket, _))) => socket,
    };
    let registered = async {
        let hello = next_json(&mut socket).await?;
        if hello["type"] != "hello" {
            return Err(format!(
                "it greeted with {}, not hello",
                quote(&hello.to_string())
            ));
        }
        if hello["token_required"] == true {
            let Some(token) = token else {
                return Err("it wants a token: give --token-file or set SOCKIT_TOKEN".to_owned());
            };
            let auth = serde_json::json!({"type": "auth", "token": token.reveal()});
            send_json(&mut socket, &auth).await?;
        }
        send_json(
            &mut socket,
            &serde_json::json!({"type": "register", "nick": nick}),
        )
        .await?;
        let joined = format!("{nick} joined ");
        loop {
            let msg = next_json(&mut socket).await?;
            match msg["type"].as_str() {
                Some("notice") if msg["text"].as_str().is_some_and(|t| t.starts_with(&joined)) => {
                    return Ok(())
                }
                Some("error") => {
                    let said = msg["message"].as_str().unwrap_or_default();
                    return Err(format!("it refused the join: {}", quote(said)));
                }
                _ => {}
            }
        }
    };
    match timeout_at(deadline, registered).await {
        Ok(Ok(())) => {
            let (writer, reader) = socket.split();
            Ok((reader, writer))
        }
        Ok(Err(detail)) => Err(handshake(detail)),
        Err(_) => Err(handshake(format!(
            "it did not confirm the join within {IO_TIMEOUT:?}"
        ))),
    }
}

async fn send_json(socket: &mut Socket, msg: &Value) -> Result<(), String> {
    socket
        .send(Message::text(msg.to_string()))
        .await
        .map_err(|e| format!("it closed the connection during the join ({e})"))
}

/// The next text message as JSON, before the load starts.
async fn next_json(socket: &mut Socket) -> Result<Value, String> {
    loop {
        let text = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(format!(
                    "it closed the WebSocket during the join ({})",
                    quote(&why)
                ));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("the WebSocket failed during the join ({e})")),
            None => return Err("it closed the connection during the join".to_owned()),
        };
        return serde_json::from_str(&text)
            .map_err(|_| format!("it sent {} instead of JSON", quote(&text)));
    }
}

/// The next message as a line for the load: a message's JSON as it came (the payload's `~`
/// is found inside it, as in any broker's wrapping), an error as `! MESSAGE`; `None` once the
/// socket is closed. Pings are answered by tungstenite as they are read.
///
/// # Cancel safety
/// Cancel safe: a message is only taken when this returns.
pub(super) async fn next_line(reader: &mut WsReader) -> std::io::Result<Option<String>> {
    loop {
        return match reader.next().await {
            Some(Ok(Message::Text(text))) => Ok(Some(as_line(text.as_str()))),
            Some(Ok(Message::Close(_))) | None => Ok(None),
            Some(Ok(_)) => continue,
            Some(Err(e)) => Err(std::io::Error::other(e)),
        };
    }
}

/// A server message as the load reads it: the payload line as it is, a refusal as `! …`.
fn as_line(text: &str) -> String {
    if !text.contains('~') {
        if let Ok(msg) = serde_json::from_str::<Value>(text) {
            if msg["type"] == "error" {
                return format!("! {}", msg["message"].as_str().unwrap_or_default());
            }
        }
    }
    text.to_owned()
}

/// Sends `payload` as the page sends a typed line.
///
/// # Errors
/// The socket failed or was closed.
pub(super) async fn send_line(writer: &mut WsWriter, payload: &str) -> std::io::Result<()> {
    // The payload is `~`, digits, spaces and `x`: nothing JSON would escape.
    let text = format!("{{\"type\":\"line\",\"text\":\"{payload}\"}}");
    writer
        .send(Message::text(text))
        .await
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_becomes_a_refusal_line_and_a_message_stays_as_it_came() {
        let refused = r#"{"type":"error","code":"rate_limited","message":"slow down"}"#;
        assert_eq!(as_line(refused), "! slow down");
        let msg = r#"{"type":"message","time":1,"room":"lobby","nick":"a","text":"~0 1 2 x"}"#;
        assert_eq!(as_line(msg), msg);
    }
}
