//! The framed client: connect (TLS optional), the session handshake, `register`, then a
//! sender and a receiver that can be used from two tasks at once.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

use super::framed::session_config;
use super::messages::{ClientMessage, ServerMessage};
use super::sanitize;
use crate::net::tls::{TlsConnector, TlsError};
use crate::net::{Addr, Stream};
use crate::session::{self, SessionError, Token};
use crate::wire::{Connection, ReadSide, WireError, WriteSide};

/// What `join` needs besides the address.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The nick to register.
    pub nick: String,
    /// A room to join instead of the server's default.
    pub room: Option<String>,
    /// The token, for servers that require one.
    pub token: Option<Token>,
    /// Connect over TLS, trusting what this connector trusts.
    pub tls: Option<TlsConnector>,
}

/// Everything that can keep a client from joining, or end its session.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The server could not be reached.
    #[error("{0}")]
    Connect(io::Error),
    /// The TLS handshake failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The session handshake failed (wrong token, wrong service, …).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The connection broke or a frame was invalid.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server refused (text escaped), e.g. `nick_taken` with a suggestion.
    #[error("{message} ({code})")]
    Refused {
        /// The server's code.
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// The address answered in plain text: most likely a chat server's line port.
    #[error(
        "{addr} answered in plain text like sockit chat's line protocol (nc-style), not the \
         framed protocol: use the framed port (sockit chat serve --listen), or nc for the line \
         port; it said: \"{said}\""
    )]
    LinePort {
        /// The address dialled.
        addr: String,
        /// The start of its first line (escaped peer text).
        said: String,
    },
    /// The server closed the connection before accepting the nick.
    #[error("the server closed the connection before accepting the nick")]
    Closed,
}

/// A stream a session runs over: TCP, Unix, or TLS around either.
pub trait ChatStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> ChatStream for S {}

type BoxStream = Box<dyn ChatStream>;

/// A joined client: who the server says we are, and the two halves of the session.
pub struct ChatClient {
    /// Our nick, as registered.
    pub nick: String,
    /// Our room, if any.
    pub room: Option<String>,
    /// Sends commands.
    pub sender: ChatSender,
    /// Receives server messages.
    pub receiver: ChatReceiver,
}

/// The sending half.
pub struct ChatSender {
    conn: Connection<WriteSide<BoxStream>>,
}

/// The receiving half.
pub struct ChatReceiver {
    conn: Connection<ReadSide<BoxStream>>,
}

impl ChatSender {
    /// Sends one command and flushes it.
    ///
    /// # Errors
    /// [`WireError`] if the connection is gone.
    ///
    /// # Cancel safety
    /// Not cancel safe, like [`Connection::write_frame`].
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), WireError> {
        self.conn.write_frame(msg, &[]).await
    }
}

impl ChatReceiver {
    /// The next server message; `None` when the server closed the connection.
    ///
    /// # Errors
    /// [`WireError`] for a broken connection or an invalid frame.
    ///
    /// # Cancel safety
    /// Cancel safe, like [`Connection::read_frame`].
    pub async fn recv(&mut self) -> Result<Option<ServerMessage>, WireError> {
        self.conn.read_frame().await
    }
}

/// Connects to the chat server at `addr` and registers `opts.nick`.
///
/// # Errors
/// [`ChatError`]; a refused nick is [`ChatError::Refused`] with the server's suggestion.
pub async fn join(addr: &Addr, opts: &JoinOptions) -> Result<ChatClient, ChatError> {
    let cfg = session_config();
    let stream = tokio::time::timeout(cfg.handshake_timeout, Stream::connect(addr))
        .await
        .map_err(|_| ChatError::Connect(io::ErrorKind::TimedOut.into()))?
        .map_err(ChatError::Connect)?;
    let stream: BoxStream = match &opts.tls {
        Some(tls) => Box::new(tls.connect(addr, stream).await?),
        None => Box::new(stream),
    };
    match join_on(stream, opts).await {
        Err(ChatError::Session(SessionError::ServerSpeaksText { said })) => {
            Err(ChatError::LinePort {
                addr: addr.to_string(),
                said,
            })
        }
        joined => joined,
    }
}

/// Like [`join`], over an already connected stream (a test pipe, a proxy).
///
/// # Errors
/// As [`join`].
pub async fn join_on<S: ChatStream + 'static>(
    stream: S,
    opts: &JoinOptions,
) -> Result<ChatClient, ChatError> {
    let cfg = session_config();
    let mut conn = Connection::new(Box::new(stream) as BoxStream);
    session::connect(&mut conn, &cfg, opts.token.as_ref()).await?;
    let register = ClientMessage::Register {
        nick: opts.nick.clone(),
        room: opts.room.clone(),
    };
    conn.write_frame(&register, &[]).await?;
    // The nick is answered under the handshake's deadline: a server that never says `ready`
    // (or only sends notices) cannot hold `join` forever.
    let registered = async {
        loop {
            match conn.read_frame::<ServerMessage>().await? {
                Some(ServerMessage::Ready { nick, room }) => return Ok((nick, room)),
                Some(ServerMessage::Error { code, message }) => {
                    return Err(ChatError::Refused {
                        code: sanitize(&code),
                        message: sanitize(&message),
                    })
                }
                Some(_) => continue,
                None => return Err(ChatError::Closed),
            }
        }
    };
    let (nick, room) = tokio::time::timeout(cfg.handshake_timeout, registered)
        .await
        .map_err(|_| SessionError::Timeout(cfg.handshake_timeout))??;
    let (reader, writer) = conn.split();
    Ok(ChatClient {
        nick,
        room,
        sender: ChatSender { conn: writer },
        receiver: ChatReceiver { conn: reader },
    })
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
