//! The client's way in, the same for every framed service: connect under a deadline, TLS when
//! asked (never falling back to plaintext), the session handshake, and one error type that
//! names a mix-up (TLS on one side only, a text port, another kind of server) with the
//! address it happened at.

use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::BufReader;
use tokio_util::either::Either;

use super::{connect, SessionConfig, SessionError, Token};
use crate::engine::IdleTimeout;
use crate::net::splice::SpliceRead;
use crate::net::tls::{ClientTlsStream, TlsConnector, TlsError};
use crate::net::{Addr, Stream};
use crate::wire::{Connection, ErrorFrame, WireError};

/// Read buffer under TLS: records are decrypted from it, so few, large socket reads.
const TLS_READ_BUFFER_BYTES: usize = 256 * 1024;

/// How a client reaches a framed service.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The handshake: service asked for, deadline, post-auth limits.
    pub session: SessionConfig,
    /// The token, for servers that require one.
    pub token: Option<Token>,
    /// TLS, trusting what this connector trusts; `None` for plaintext.
    pub tls: Option<TlsConnector>,
    /// Deadline for the TCP or Unix connect.
    pub connect_timeout: Duration,
    /// Give up on a connection that makes no progress for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
}

impl ClientOptions {
    /// Plaintext, no token, no idle limit, connecting within the handshake deadline.
    pub fn new(session: SessionConfig) -> Self {
        ClientOptions {
            connect_timeout: session.handshake_timeout,
            session,
            token: None,
            tls: None,
            idle_timeout: None,
        }
    }
}

/// A connected client stream: plaintext (left; it can splice), or TLS over a buffered
/// stream (right).
pub(crate) type ClientStream = Either<Stream, Box<ClientTlsStream<BufReader<Stream>>>>;

/// An open client session.
pub type ClientConnection = Connection<IdleTimeout<ClientStream>>;

/// Why a client could not open a session. Every framed service's client error embeds it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached (or not within the deadline); the message names the
    /// address.
    #[error("{0}")]
    Connect(io::Error),
    /// The TLS handshake failed (pin mismatch, untrusted certificate, a plaintext server, …).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A plaintext client reached a TLS server.
    #[error(
        "the server at {addr} speaks TLS: use --tls with --tls-pin FINGERPRINT (or --tls-ca FILE)"
    )]
    ServerSpeaksTls {
        /// The address dialled.
        addr: String,
    },
    /// The handshake failed (wrong token, wrong service, a text port, …).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The connection broke or a frame was invalid.
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl ClientError {
    /// Stable snake_case code: the server's for a refusal, else what failed.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Connect(_) => "connect",
            ClientError::Tls(_) => "tls",
            ClientError::ServerSpeaksTls { .. } => "server_speaks_tls",
            ClientError::Session(e) => e.code(),
            ClientError::Wire(e) => e.code(),
        }
    }

    /// The server's refusal, if the server sent one.
    pub fn remote(&self) -> Option<&ErrorFrame> {
        match self {
            ClientError::Session(SessionError::Remote(frame)) => Some(frame),
            _ => None,
        }
    }
}

/// Connects to `addr` and opens a session as `options` say.
///
/// # Errors
/// [`ClientError`]; a refusal from the server is [`ClientError::Session`] with
/// [`SessionError::Remote`].
pub async fn open(addr: &Addr, options: &ClientOptions) -> Result<ClientConnection, ClientError> {
    let stream = connect_within(addr, options.connect_timeout)
        .await
        .map_err(ClientError::Connect)?;
    let stream = match &options.tls {
        None => Either::Left(stream),
        Some(tls) => {
            let buffered = BufReader::with_capacity(TLS_READ_BUFFER_BYTES, stream);
            Either::Right(Box::new(tls.connect(addr, buffered).await?))
        }
    };
    let mut conn = Connection::new(IdleTimeout::optional(stream, options.idle_timeout));
    match connect(&mut conn, &options.session, options.token.as_ref()).await {
        Ok(()) => Ok(conn),
        Err(SessionError::ServerSpeaksTls) => Err(ClientError::ServerSpeaksTls {
            addr: addr.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Connects to `addr` within `deadline`.
///
/// # Errors
/// The connect error, or `TimedOut` when the deadline passes; the message names `addr`.
pub(crate) async fn connect_within(addr: &Addr, deadline: Duration) -> io::Result<Stream> {
    tokio::time::timeout(deadline, Stream::connect(addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("cannot connect to {addr}: no answer within {deadline:?}"),
            )
        })?
}

impl SpliceRead for ClientStream {
    fn can_splice_read(&self) -> bool {
        match self {
            Either::Left(s) => s.can_splice_read(),
            Either::Right(_) => false,
        }
    }

    fn poll_splice_to(
        &mut self,
        cx: &mut Context<'_>,
        pipe: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        match self {
            Either::Left(s) => s.poll_splice_to(cx, pipe, len),
            Either::Right(_) => Poll::Ready(Err(io::ErrorKind::Unsupported.into())),
        }
    }
}
