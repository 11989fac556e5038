//! Wire format v1: length-prefixed JSON headers with streamed bodies, sans-IO codec and a `Connection`.
//!
//! ```text
//! +------------------+-------------------------------+---------------------------+
//! | header length    | header: UTF-8 JSON object     | body: exactly `size`      |
//! | u32, big-endian  | {"type": "...", "size": N, …} | bytes; absent when 0      |
//! +------------------+-------------------------------+---------------------------+
//! ```
//!
//! Headers are parsed straight into a service's typed message (any `M: DeserializeOwned +
//! Message`); the body length comes from [`Message::body_size`]. Limits are checked before
//! anything is allocated, duplicate keys and deep nesting are rejected, and any decode error
//! ends the connection: there is no resynchronisation.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use sockit::wire::{encode_frame, Decoded, FrameDecoder, Hello};
//!
//! let mut buf = BytesMut::new();
//! let hello = Hello { service: "exec".into(), version: 1 };
//! encode_frame(&hello, &[], &mut buf)?;
//!
//! let mut decoder = FrameDecoder::new();
//! match decoder.decode::<Hello>(&mut buf)? {
//!     Some(Decoded::Header(got)) => assert_eq!(got, hello),
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert!(decoder.is_idle());
//! # Ok::<(), sockit::wire::WireError>(())
//! ```

pub(crate) mod codec;
mod connection;
pub(crate) mod encode;
mod header;
mod sniff;
mod split;
#[cfg(test)]
mod test_support;

use serde::{Deserialize, Serialize};

pub use codec::{Decoded, FrameDecoder};
pub use connection::Connection;
pub use encode::encode_frame;
pub(crate) use sniff::{looks_like_text, TEXT_SNIFF_BYTES};
pub(crate) use split::{ReadSide, WriteSide};

/// Largest header the format allows, in bytes of JSON (the length prefix excluded).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Header cap before the peer has authenticated: unauthenticated peers get a smaller budget.
pub(crate) const PRE_AUTH_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Default body cap (1 GiB); services that move larger files raise it explicitly.
pub(crate) const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 30;

/// Body cap before authentication: no pre-auth message (hello, challenge, auth) has a body.
pub(crate) const PRE_AUTH_MAX_BODY_BYTES: u64 = 0;

/// Deepest nesting of arrays and objects accepted in a header (the top-level object counts).
pub(crate) const MAX_HEADER_DEPTH: usize = 32;

/// Size caps applied by the decoder before any allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted header, in bytes.
    pub max_header: usize,
    /// Largest accepted body, in bytes.
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: MAX_HEADER_BYTES,
            max_body: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl Limits {
    /// The tighter limits used until the peer has authenticated.
    pub(crate) fn pre_auth() -> Self {
        Limits {
            max_header: PRE_AUTH_MAX_HEADER_BYTES,
            max_body: PRE_AUTH_MAX_BODY_BYTES,
        }
    }
}

/// A typed header: services implement it on their own serde message types.
///
/// Tag messages with `#[serde(tag = "type", rename_all = "snake_case")]`; variants that carry
/// a body have a `size: u64` field returned from [`Message::body_size`].
pub trait Message {
    /// Number of body bytes following this header; 0 means no body.
    fn body_size(&self) -> u64 {
        0
    }
}

/// Everything that can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The announced (or encoded) header length exceeds the cap.
    #[error("header of {len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge {
        /// Announced header length.
        len: usize,
        /// Cap in force.
        max: usize,
    },
    /// The header announces a body larger than the cap.
    #[error("body of {size} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// Announced body size.
        size: u64,
        /// Cap in force.
        max: u64,
    },
    /// The header is not UTF-8, not JSON, not an object, too deep, has a duplicate key or
    /// does not match the expected message type.
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    /// The body written does not match the size its header announced.
    #[error("body length mismatch: header announced {declared} bytes, got {actual}")]
    BodyLengthMismatch {
        /// Size announced in the header.
        declared: u64,
        /// Bytes actually supplied.
        actual: u64,
    },
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame")]
    UnexpectedEof,
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    /// Stable snake_case code, as sent in an [`ErrorFrame`].
    pub fn code(&self) -> &'static str {
        match self {
            WireError::HeaderTooLarge { .. } => "header_too_large",
            WireError::BodyTooLarge { .. } => "body_too_large",
            WireError::InvalidHeader(_) => "invalid_header",
            WireError::BodyLengthMismatch { .. } => "body_length_mismatch",
            WireError::UnexpectedEof => "unexpected_eof",
            WireError::Io(_) => "io",
        }
    }
}

/// `{"type":"error","code":"snake_case_code","message":"human sentence"}`.
///
/// The one refusal type: every service's "no, because" is an `ErrorFrame`, on the wire and in
/// the code that decides it. A standalone message that writes its own `type`. Inside a service's own tagged enum use a
/// struct variant (`Error { code, message }`), not `Error(ErrorFrame)`, or `type` is written twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ErrorRepr", from = "ErrorRepr")]
pub struct ErrorFrame {
    /// Machine-readable snake_case code, e.g. `wrong_service`.
    pub code: String,
    /// Human-readable sentence.
    pub message: String,
}

impl ErrorFrame {
    /// An error frame with the given code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorFrame {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl Message for ErrorFrame {}

impl std::fmt::Display for ErrorFrame {
    /// `message (code)`, as the clients print a refusal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ErrorFrame {}

impl From<&WireError> for ErrorFrame {
    fn from(err: &WireError) -> Self {
        ErrorFrame::new(err.code(), err.to_string())
    }
}

/// `{"type":"hello","service":"exec","version":1}`: the first frame a client sends.
///
/// Like [`ErrorFrame`], a standalone message that writes its own `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "HelloRepr", from = "HelloRepr")]
pub struct Hello {
    /// Service the client expects, e.g. `exec`.
    pub service: String,
    /// Wire protocol version the client speaks.
    pub version: u32,
}

impl Message for Hello {}

// Single-variant tagged enums give the standalone structs a checked `type` field for free.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ErrorRepr {
    Error { code: String, message: String },
}

impl From<ErrorFrame> for ErrorRepr {
    fn from(f: ErrorFrame) -> Self {
        ErrorRepr::Error {
            code: f.code,
            message: f.message,
        }
    }
}

impl From<ErrorRepr> for ErrorFrame {
    fn from(r: ErrorRepr) -> Self {
        let ErrorRepr::Error { code, message } = r;
        ErrorFrame { code, message }
    }
}

// Unknown fields are refused here as in every request header: a newer client says so with
// `version`, which the server answers with its own.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum HelloRepr {
    Hello { service: String, version: u32 },
}

impl From<Hello> for HelloRepr {
    fn from(h: Hello) -> Self {
        HelloRepr::Hello {
            service: h.service,
            version: h.version,
        }
    }
}

impl From<HelloRepr> for Hello {
    fn from(r: HelloRepr) -> Self {
        let HelloRepr::Hello { service, version } = r;
        Hello { service, version }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_serializes_with_its_type_first() {
        let hello = Hello {
            service: "exec".into(),
            version: 1,
        };
        let json = serde_json::to_string(&hello).expect("serialize");
        assert_eq!(json, r#"{"type":"hello","service":"exec","version":1}"#);
        let back: Hello = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, hello);
    }

    #[test]
    fn hello_with_another_type_is_rejected() {
        let res = serde_json::from_str::<Hello>(r#"{"type":"error","service":"x","version":1}"#);
        assert!(res.is_err());
        let res = serde_json::from_str::<Hello>(r#"{"service":"x","version":1}"#);
        assert!(res.is_err());
    }

    #[test]
    fn hello_and_error_frames_with_unknown_fields_are_rejected() {
        let hello = r#"{"type":"hello","service":"exec","version":1,"admin":true}"#;
        assert!(serde_json::from_str::<Hello>(hello).is_err());
        let error = r#"{"type":"error","code":"x","message":"y","extra":1}"#;
        assert!(serde_json::from_str::<ErrorFrame>(error).is_err());
    }

    #[test]
    fn error_frame_serializes_as_the_documented_shape() {
        let frame = ErrorFrame::new("wrong_service", "this port serves chat");
        let json = serde_json::to_string(&frame).expect("serialize");
        assert_eq!(
            json,
            r#"{"type":"error","code":"wrong_service","message":"this port serves chat"}"#
        );
        assert_eq!(
            serde_json::from_str::<ErrorFrame>(&json).expect("deserialize"),
            frame
        );
    }

    #[test]
    fn wire_errors_map_to_snake_case_codes() {
        let cases = [
            (
                WireError::HeaderTooLarge { len: 9, max: 1 },
                "header_too_large",
            ),
            (
                WireError::BodyTooLarge { size: 9, max: 1 },
                "body_too_large",
            ),
            (WireError::InvalidHeader("x".into()), "invalid_header"),
            (WireError::UnexpectedEof, "unexpected_eof"),
            (WireError::Io(std::io::ErrorKind::Other.into()), "io"),
        ];
        for (err, code) in cases {
            let frame = ErrorFrame::from(&err);
            assert_eq!(frame.code, code);
            assert_eq!(frame.message, err.to_string());
        }
    }

    #[test]
    fn pre_auth_limits_are_tighter_than_the_defaults() {
        let pre = Limits::pre_auth();
        let def = Limits::default();
        assert_eq!(pre.max_header, 16 * 1024);
        assert_eq!(def.max_header, 64 * 1024);
        assert!(pre.max_body < def.max_body);
    }
}
