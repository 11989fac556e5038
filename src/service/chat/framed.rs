//! The framed protocol's server side: TLS (optional), the session handshake for service
//! `chat` (a token when the server has one), a `register`, then typed frames both ways.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::broker::{Broker, Control};
use super::line::MAX_NICK_ATTEMPTS;
use super::messages::{ClientMessage, ServerMessage};
use super::outbox::{Delivery, Outbox, QueueLimits};
use super::pump::{farewell, pump, Dispatcher, Ending};
use super::rate::RateLimit;
use super::SERVICE;
use crate::engine::ConnInfo;
use crate::net::Addr;
use crate::session::{FramedService, GateConfig, Gated, ServerStream, SessionConfig, Token};
use crate::wire::{Connection, ErrorFrame, Limits, WireError, MAX_HEADER_BYTES};

/// Time after the handshake to register an acceptable nick.
pub(crate) const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The session settings both halves use: service `chat`, frames without bodies.
pub fn session_config() -> SessionConfig {
    SessionConfig {
        limits: Limits {
            // A 4 KiB message of control characters is ~24 KiB of JSON escapes.
            max_header: MAX_HEADER_BYTES,
            max_body: 0,
        },
        text_client_hint: Some(
            "connect with `sockit chat join`; for nc or telnet use the chat server's line port \
             (sockit chat serve --line-listen)"
                .into(),
        ),
        ..SessionConfig::new(SERVICE)
    }
}

/// [`session_config`] for a server whose line port is `line`: a plain-text client at the
/// framed port is told where that is.
pub fn session_config_with_line_port(line: &Addr) -> SessionConfig {
    SessionConfig {
        text_client_hint: Some(
            format!("connect with `sockit chat join`; for nc or telnet use the line port {line}")
                .into(),
        ),
        ..session_config()
    }
}

/// The gate of a framed chat server: a client must prove it holds `token` when there is one
/// (required beyond loopback); set `tls`, `session` (e.g. [`session_config_with_line_port`])
/// and the pending caps on the result as needed.
pub fn gate(token: Option<Token>) -> GateConfig {
    GateConfig::new(session_config(), token)
}

/// Settings of the framed chat service.
#[derive(Debug, Clone)]
pub struct FramedConfig {
    /// Per-connection rate limit.
    pub rate: RateLimit,
    /// Per-connection outbound queue limits.
    pub queue: QueueLimits,
    /// Time to register after the handshake.
    pub register_timeout: Duration,
}

impl Default for FramedConfig {
    fn default() -> Self {
        FramedConfig {
            rate: RateLimit::default(),
            queue: QueueLimits::default(),
            register_timeout: REGISTER_TIMEOUT,
        }
    }
}

/// The framed chat service, sharing a [`Broker`] with any other chat listener. Serve it
/// behind a gate ([`gate`]): [`ChatServer`].
#[derive(Debug)]
pub struct ChatService {
    broker: Arc<Broker>,
    config: FramedConfig,
}

/// The framed chat service behind its gate: the engine's handler.
pub type ChatServer = Gated<ChatService>;

impl ChatService {
    /// The service feeding `broker`.
    pub fn new(broker: Arc<Broker>, config: FramedConfig) -> Self {
        ChatService { broker, config }
    }
}

impl FramedService for ChatService {
    async fn serve(&self, mut framed: Connection<ServerStream>, info: ConnInfo) -> io::Result<()> {
        let info = &info;
        let cfg = &self.config;
        let outbox = Outbox::new(cfg.queue);
        let Some(member) = self.register(&mut framed, &outbox).await else {
            return Ok(());
        };
        debug!(peer = %info.peer, "framed client registered");
        let (mut reader, mut writer) = framed.split();
        let wr = writer.get_mut();
        let mut dispatcher = Dispatcher::new(member, outbox.clone(), cfg.rate);
        let bye = farewell(cfg.queue);
        let reading = read_frames(&mut dispatcher, &mut reader);
        let reason = pump(&outbox, wr, Delivery::frame, &bye, &info.shutdown, reading).await;
        dispatcher.member.set_leave_reason(reason);
        tracing::info!(peer = %info.peer, service = "chat", reason, "chat client left");
        Ok(())
    }
}

impl ChatService {
    /// Reads `register` frames until one is accepted, answering each refusal.
    async fn register<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        framed: &mut Connection<S>,
        outbox: &Arc<Outbox>,
    ) -> Option<super::Member> {
        let deadline = Instant::now() + self.config.register_timeout;
        for _ in 0..MAX_NICK_ATTEMPTS {
            let refusal = match timeout_at(deadline, framed.read_frame::<ClientMessage>()).await {
                Ok(Ok(Some(ClientMessage::Register { nick, room }))) => {
                    match self
                        .broker
                        .admit(&nick, room.as_deref(), outbox.clone())
                        .await
                    {
                        Ok(member) => return Some(member),
                        Err(refusal) => refusal,
                    }
                }
                Ok(Ok(Some(_))) => ErrorFrame::new("not_registered", "register a nick first"),
                Ok(Ok(None) | Err(WireError::Io(_) | WireError::UnexpectedEof)) => return None,
                Ok(Err(e)) => {
                    let _ = framed.write_error(&e).await;
                    return None;
                }
                Err(_) => ErrorFrame::new("timeout", "no nick registered in time"),
            };
            let timed_out = refusal.code == "timeout";
            if framed
                .write_frame(&ServerMessage::from(&refusal), &[])
                .await
                .is_err()
                || timed_out
            {
                return None;
            }
        }
        let refusal = ErrorFrame::new("too_many_attempts", "too many nicks refused; bye");
        let _ = framed
            .write_frame(&ServerMessage::from(&refusal), &[])
            .await;
        None
    }
}

async fn read_frames<S: AsyncRead + AsyncWrite + Unpin>(
    dispatcher: &mut Dispatcher,
    reader: &mut Connection<S>,
) -> Ending {
    loop {
        let input = match reader.read_frame::<ClientMessage>().await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) | Err(WireError::Io(_) | WireError::UnexpectedEof) => return Ending::Closed,
            Err(e) => {
                // No resynchronisation after a bad frame: say why, then close.
                let refusal = ErrorFrame::new(e.code(), e.to_string());
                dispatcher
                    .outbox
                    .push(Delivery::new(ServerMessage::from(&refusal)));
                return Ending::Protocol;
            }
        };
        if dispatcher.input(input).await == Control::Quit {
            return Ending::Quit;
        }
    }
}
