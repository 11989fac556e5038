//! The framed client: connect (TLS optional), the session handshake, `register`, then a
//! sender and a receiver that can be used from two tasks at once.

use tokio::io::{AsyncRead, AsyncWrite};

use super::framed::session_config;
use super::messages::{ClientMessage, ServerMessage};
use super::sanitize;
use crate::net::tls::TlsConnector;
use crate::net::Addr;
use crate::session::{self, ClientError, ClientOptions, SessionError, Token};
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
    /// No session: the server could not be reached, TLS or the handshake failed.
    #[error(transparent)]
    Client(#[from] ClientError),
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
    /// The server ended the session without being asked to (it stopped, or dropped us).
    #[error("the server closed the connection")]
    ServerClosed,
    /// A local error: the terminal or stdout.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A stream a session runs over: TCP, Unix, or TLS around either.
pub(crate) trait ChatStream: AsyncRead + AsyncWrite + Unpin + Send {}
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
    let options = ClientOptions {
        token: opts.token.clone(),
        tls: opts.tls.clone(),
        ..ClientOptions::new(session_config())
    };
    let conn = match session::open(addr, &options).await {
        Ok(conn) => conn,
        Err(ClientError::Session(SessionError::ServerSpeaksText { said })) => {
            return Err(ChatError::LinePort {
                addr: addr.to_string(),
                said,
            })
        }
        Err(e) => return Err(e.into()),
    };
    register(conn.map_stream(|s| Box::new(s) as BoxStream), opts).await
}

/// Like [`join`], over an already connected stream (a test pipe, a proxy).
///
/// # Errors
/// As [`join`].
#[cfg(test)]
pub(crate) async fn join_on<S: ChatStream + 'static>(
    stream: S,
    opts: &JoinOptions,
) -> Result<ChatClient, ChatError> {
    let mut conn = Connection::new(Box::new(stream) as BoxStream);
    session::connect(&mut conn, &session_config(), opts.token.as_ref())
        .await
        .map_err(ClientError::from)?;
    register(conn, opts).await
}

/// Registers `opts.nick` over an open session.
async fn register(
    mut conn: Connection<BoxStream>,
    opts: &JoinOptions,
) -> Result<ChatClient, ChatError> {
    let cfg = session_config();
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
    let timed_out = || ClientError::Session(SessionError::Timeout(cfg.handshake_timeout));
    let (nick, room) = tokio::time::timeout(cfg.handshake_timeout, registered)
        .await
        .map_err(|_| timed_out())??;
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
