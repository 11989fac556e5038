//! The two kinds of failure: a [`Rejection`] concerns one file or request and the connection
//! goes on; a [`FilesError`] ends a whole command.

use super::store::StoreError;
use crate::session::ClientError;
use crate::text::escape_one_line;
use crate::wire::{ErrorFrame, WireError};

/// Longest peer text (a code, a message) kept in a rejection or error.
pub(crate) const MAX_REMOTE_TEXT_CHARS: usize = 1000;

/// One request refused or failed: the wire `rejected` frame's code and message (peer text
/// escaped when it came from the peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable snake_case code, e.g. `exists`, `hash_mismatch`.
    pub code: String,
    /// Human-readable sentence naming the file.
    pub message: String,
}

impl Rejection {
    /// A rejection with the given code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A rejection received from a peer, its text escaped.
    pub(crate) fn from_peer(code: &str, message: &str) -> Self {
        Rejection::new(
            escape_one_line(code, MAX_REMOTE_TEXT_CHARS),
            escape_one_line(message, MAX_REMOTE_TEXT_CHARS),
        )
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl From<StoreError> for Rejection {
    fn from(e: StoreError) -> Self {
        Rejection::new(e.code(), e.to_string())
    }
}

impl From<&WireError> for Rejection {
    fn from(e: &WireError) -> Self {
        Rejection::new(e.code(), e.to_string())
    }
}

/// Everything that ends a `put`, `get` or `ls` as a whole (per-file failures are reported in
/// the command's report instead).
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// No session: the server could not be reached, TLS or the handshake failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The connection broke or the server sent an invalid frame.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server ended the session with an error frame (text escaped).
    #[error("the server closed the session: {} ({})", .0.message, .0.code)]
    Remote(ErrorFrame),
    /// The server refused a listing or manifest request (text escaped).
    #[error("{0}")]
    Rejected(Rejection),
    /// The server closed the connection with requests unanswered.
    #[error("the server closed the connection before answering every request")]
    Closed,
    /// The server broke the file protocol.
    #[error("file protocol error: {0}")]
    Protocol(String),
    /// A local path or option cannot be used.
    #[error("{0}")]
    Local(String),
}

impl FilesError {
    /// Stable snake_case code.
    pub fn code(&self) -> &str {
        match self {
            FilesError::Client(e) => e.code(),
            FilesError::Wire(e) => e.code(),
            FilesError::Remote(frame) => &frame.code,
            FilesError::Rejected(r) => &r.code,
            FilesError::Closed => "closed",
            FilesError::Protocol(_) => "protocol_error",
            FilesError::Local(_) => "local",
        }
    }
}
