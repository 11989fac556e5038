//! What every framed service shares: the hello, mutual HMAC authentication, error frames, and
//! the client's dial (connect, TLS).
//!
//! The handshake runs over a [`wire::Connection`](crate::wire::Connection) under
//! `Limits::pre_auth` and a deadline ([`HANDSHAKE_TIMEOUT`]); the token never crosses the wire:
//!
//! ```text
//! client                                              server
//!   {"type":"hello","service":"exec","version":1}  ->
//!                                                  <-  {"type":"challenge","nonce":"<64 hex>"}
//!   {"type":"auth","nonce":"<64 hex>","mac":"<64 hex>"} ->
//!                                                  <-  {"type":"welcome","mac":"<64 hex>"}
//! ```
//!
//! Each `mac` is HMAC-SHA256 keyed by the token over a length-prefixed transcript: the label
//! `sockit-auth-v1 client` (or `… server`), the service, the server nonce, the client nonce.
//! Fresh nonces on both sides defeat replay in either direction. A server given no token
//! answers the hello with a bare `{"type":"welcome"}`, which a client holding a token refuses.
//! Any refusal is `{"type":"error","code":"…","message":"…"}`, then the server closes.
//!
//! # Example
//!
//! ```
//! use sockit::session::{accept, connect, AuthLimiter, SessionConfig, Token};
//! use sockit::wire::Connection;
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let (client_io, server_io) = tokio::io::duplex(4096);
//! let token = Token::generate()?;
//! let cfg = SessionConfig::new("exec");
//! let limiter = AuthLimiter::new();
//! let (mut client, mut server) = (Connection::new(client_io), Connection::new(server_io));
//! let (client_res, server_res) = tokio::join!(
//!     connect(&mut client, &cfg, Some(&token)),
//!     accept(&mut server, &cfg, Some(&token), None, &limiter),
//! );
//! client_res?;
//! server_res?;
//! # Ok::<(), sockit::session::SessionError>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod auth;
mod client;
mod gate;
mod handshake;
mod limiter;
mod pending;
mod token;

use std::borrow::Cow;
use std::time::Duration;

use crate::wire::{ErrorFrame, Limits, WireError};

pub(crate) use client::ClientStream;
pub use client::{open, ClientConnection, ClientError, ClientOptions};
pub use gate::{FramedService, Gate, GateConfig, Gated, ServerStream};
pub use handshake::{accept, connect};
pub use limiter::{AuthLimiter, REFUSE_AFTER_FAILURES};
pub use pending::{PendingLimits, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_SOURCE};
pub use token::{load_token, Token, GENERATED_TOKEN_BYTES};

/// The wire protocol version this build speaks, sent in the hello.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Default deadline for a whole handshake, hello to welcome.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest peer-supplied text (a service name, a remote error) kept in errors and logs.
const MAX_PEER_TEXT_CHARS: usize = 200;

/// Longest part of a text server's first line quoted in [`SessionError::ServerSpeaksText`].
const MAX_QUOTED_LINE_CHARS: usize = 80;

/// Settings of one side of a session handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The service: the one a server serves, or the one a client asks for.
    pub service: String,
    /// Deadline for the whole handshake.
    pub handshake_timeout: Duration,
    /// Read limits once the peer is authenticated (before that: `Limits::pre_auth`).
    pub limits: Limits,
    /// What the one text line a server sends a plain-text client (`nc` at a framed port)
    /// suggests: the commands that speak this service, where its text port is.
    pub text_client_hint: Option<Cow<'static, str>>,
}

impl SessionConfig {
    /// Defaults for `service`: [`HANDSHAKE_TIMEOUT`] and the default [`Limits`].
    pub fn new(service: impl Into<String>) -> Self {
        SessionConfig {
            service: service.into(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            limits: Limits::default(),
            text_client_hint: None,
        }
    }
}

/// Everything that can end a handshake or spoil a token.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client asked a server for another service.
    #[error("this port serves {served}, not {asked}")]
    WrongService {
        /// Service of this server.
        served: String,
        /// Service the client asked for (escaped peer text).
        asked: String,
    },
    /// The client speaks a protocol version this server does not.
    #[error("unsupported protocol version {asked}; this server speaks version {supported}")]
    UnsupportedVersion {
        /// Version this build speaks.
        supported: u32,
        /// Version the client asked for.
        asked: u32,
    },
    /// The client's proof was wrong or malformed: it does not hold the token.
    #[error("authentication failed: wrong token")]
    AuthFailed,
    /// The source failed to authenticate moments ago and is refused at connect until this
    /// much longer has passed.
    #[error(
        "too many failed authentications from this address: try again in {} s",
        .0.as_secs() + 1
    )]
    Penalised(Duration),
    /// The client sent another message where its `auth` answer was due.
    #[error("authentication required before any other message")]
    AuthRequired,
    /// The server asked for authentication and this client has no token.
    #[error("the server requires a token: give --token-file or set SOCKIT_TOKEN")]
    TokenRequired,
    /// The server's proof was wrong or missing: it does not know the token (a fake server?).
    #[error("the server did not prove it knows the token; refusing to continue")]
    ServerNotAuthenticated,
    /// The server asks for no token (an open service, e.g. chat on loopback) while this client
    /// holds one. Refused all the same, so that a fake server cannot downgrade a client that
    /// expects mutual authentication; the message says how to join an open server.
    #[error(
        "the server asks for no token, but this client has one (--token-file or SOCKIT_TOKEN), \
         so it cannot prove it is the server you meant; to join an open server, run without a \
         token (unset SOCKIT_TOKEN)"
    )]
    ServerSkippedAuth,
    /// The peer sent a well-formed message out of order or with a malformed field.
    #[error("handshake protocol error: {0}")]
    Protocol(String),
    /// The peer closed the connection before the handshake finished.
    #[error("the peer closed the connection during the handshake")]
    Closed,
    /// The handshake did not finish within its deadline.
    #[error("handshake not completed within {0:?}")]
    Timeout(Duration),
    /// A plaintext client got a TLS record back: the server speaks TLS.
    #[error(
        "the server speaks TLS: connect with --tls and --tls-pin FINGERPRINT (or --tls-ca FILE)"
    )]
    ServerSpeaksTls,
    /// A plaintext server got a TLS ClientHello: the client tried TLS on a plaintext port.
    #[error(
        "the client tried TLS on a plaintext port (connect without --tls, or start the server \
         with --tls)"
    )]
    ClientSpeaksTls,
    /// A framed client got a line of text back: the server speaks a text protocol (a chat
    /// line port, an HTTP or SMTP server), not sockit's framed one.
    #[error(
        "the server answered in plain text, not sockit's framed protocol (is this the right \
         port?); it said: \"{said}\""
    )]
    ServerSpeaksText {
        /// The start of the server's first line (escaped peer text).
        said: String,
    },
    /// The server's first reply is a frame, but no handshake reply: another kind of server
    /// (an echo server sends the greeting back, a `--compat tutorial` server runs it).
    #[error(
        "the server did not answer as a sockit {service} service (is this the right port?): {why}"
    )]
    NotSockit {
        /// The service asked for.
        service: String,
        /// What the server sent instead.
        why: String,
    },
    /// A framed server got a line of text: `nc` or `telnet` at a framed port.
    #[error(
        "the client sent plain text, not sockit's framed protocol (nc or telnet at this port?)"
    )]
    ClientSpeaksText,
    /// The peer refused the handshake with this error frame (escaped peer text).
    #[error("refused by the peer: {} ({})", .0.message, .0.code)]
    Remote(ErrorFrame),
    /// Reading or writing frames failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A token could not be loaded or used.
    #[error("{0}")]
    Token(String),
    /// The OS random number generator failed.
    #[error("random number generator failed: {0}")]
    Rng(String),
}

impl SessionError {
    /// Stable snake_case code, as sent in an [`ErrorFrame`]; for [`SessionError::Remote`],
    /// the peer's code, so both sides of a failed handshake report the same one.
    pub fn code(&self) -> &str {
        match self {
            SessionError::WrongService { .. } => "wrong_service",
            SessionError::UnsupportedVersion { .. } => "unsupported_version",
            SessionError::AuthFailed => "auth_failed",
            SessionError::AuthRequired => "auth_required",
            SessionError::Penalised(_) => "too_many_failures",
            SessionError::TokenRequired => "token_required",
            SessionError::ServerNotAuthenticated => "server_not_authenticated",
            SessionError::ServerSkippedAuth => "server_skipped_auth",
            SessionError::Protocol(_) => "protocol_error",
            SessionError::Closed => "closed",
            SessionError::Timeout(_) => "timeout",
            SessionError::ServerSpeaksTls => "server_speaks_tls",
            SessionError::ClientSpeaksTls => "client_speaks_tls",
            SessionError::ServerSpeaksText { .. } => "server_speaks_text",
            SessionError::NotSockit { .. } => "not_sockit",
            SessionError::ClientSpeaksText => "client_speaks_text",
            SessionError::Remote(frame) => &frame.code,
            SessionError::Wire(err) => err.code(),
            SessionError::Token(_) => "token",
            SessionError::Rng(_) => "rng",
        }
    }

    /// Whether this is a failed authentication attempt, which the [`AuthLimiter`] penalises.
    fn is_failed_attempt(&self) -> bool {
        matches!(self, SessionError::AuthFailed | SessionError::AuthRequired)
    }

    /// The error frame a server sends for this error, if the peer should hear about it: not
    /// when the stream is gone, nor for a local fault the peer cannot act on.
    fn reply_frame(&self) -> Option<ErrorFrame> {
        match self {
            // A TLS client cannot read a plaintext frame: it just sees the connection close.
            SessionError::ClientSpeaksTls
            // A text client gets a text line instead (see `handshake::text_client_reply`).
            | SessionError::ClientSpeaksText
            | SessionError::Closed
            | SessionError::Remote(_)
            | SessionError::Wire(WireError::Io(_) | WireError::UnexpectedEof) => None,
            SessionError::Token(_) | SessionError::Rng(_) => Some(ErrorFrame::new(
                "internal",
                "the server cannot authenticate",
            )),
            other => Some(ErrorFrame::new(other.code(), other.to_string())),
        }
    }
}

/// The start of the first line in `buffered` (a text server's greeting), lossily decoded and
/// escaped: for quoting in [`SessionError::ServerSpeaksText`].
pub(crate) fn quote_first_line(buffered: &[u8]) -> String {
    let line = buffered.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    crate::text::escape_one_line(line.trim_end_matches('\r'), MAX_QUOTED_LINE_CHARS)
}

/// Peer text made safe for an error message or a log line.
fn escape_peer_text(text: &str) -> String {
    crate::text::escape_one_line(text, MAX_PEER_TEXT_CHARS)
}
