//! The lessons' client: one command line out, the framed reply's body written as it arrives
//! and checked against the header's hash.

use std::io;

use bytes::BytesMut;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::MAX_LINE_BYTES;
use crate::compat::framing::{TutorialDecoder, TutorialHeader};
use crate::net::{Addr, Stream};
use crate::service::exec::OUTPUT_CHUNK_BYTES;
use crate::session::quote_first_line;
use crate::text::escape_one_line;
use crate::wire::{looks_like_text, Decoded, Limits, WireError, MAX_HEADER_BYTES};

/// Largest reply body the client accepts (it streams the body, so this only bounds time).
pub(crate) const MAX_CLIENT_BODY_BYTES: u64 = 1 << 32;

/// What the tutorial client can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TutorialError {
    /// The command line cannot be sent in the lesson's protocol.
    #[error("{0}")]
    InvalidCommand(String),
    /// The server could not be reached.
    #[error("{0}")]
    Connect(io::Error),
    /// The connection broke.
    #[error("connection error: {0}")]
    Io(io::Error),
    /// The server sent an invalid header.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server closed the connection before the whole reply arrived.
    #[error("the server closed the connection before the whole reply")]
    Closed,
    /// The server answered with a line of text where the tutorial's length prefix belongs:
    /// not a tutorial server (a sockit exec server says so in text).
    #[error(
        "the server answered in plain text, not the tutorial protocol (is this the right \
         port?); it said: \"{said}\""
    )]
    ServerSpeaksText {
        /// The start of its first line (escaped peer text).
        said: String,
    },
    /// The server answered with one of sockit's own frames (a big-endian length, then JSON):
    /// a sockit exec server without `--compat tutorial`.
    #[error(
        "the server answered in sockit's framed protocol, not the tutorial's: connect with \
         `sockit exec run` without --compat, or start the server with --compat tutorial"
    )]
    ServerSpeaksFramed,
    /// The body does not match the header's hash.
    #[error("the output does not match its hash (header {expected}, computed {actual})")]
    HashMismatch {
        /// The header's digest (escaped).
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// Writing the output locally failed.
    #[error("cannot write the output: {0}")]
    Local(io::Error),
}

/// What the server answered, besides the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TutorialReply {
    /// The header as received (text fields untrusted).
    pub header: TutorialHeader,
    /// Whether the body was checked against a SHA-256 `hash`; an empty hash or another
    /// algorithm's digest (e.g. the 32 hex digits of MD5) cannot be checked.
    pub verified: bool,
}

/// Sends `line` to a tutorial exec server at `addr` and writes the reply body to `out` as it
/// arrives.
///
/// # Errors
///
/// [`TutorialError`]: an empty or overlong line, a broken connection or header, a body that
/// does not match a SHA-256 hash (the body has been written by then).
pub async fn run_tutorial<O: AsyncWrite + Unpin>(
    addr: &Addr,
    line: &str,
    mut out: O,
) -> Result<TutorialReply, TutorialError> {
    let line = line.trim_end();
    if line.is_empty() {
        return Err(TutorialError::InvalidCommand("the command is empty".into()));
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(TutorialError::InvalidCommand(format!(
            "the command line has {} bytes; the tutorial protocol allows {MAX_LINE_BYTES}",
            line.len()
        )));
    }
    let mut stream = Stream::connect(addr)
        .await
        .map_err(TutorialError::Connect)?;
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(TutorialError::Io)?;
    let header = read_reply(&mut stream, &mut out).await?;
    let (header, actual) = header;
    let verified = header.hash.len() == 64;
    if verified && !header.hash.eq_ignore_ascii_case(&actual) {
        return Err(TutorialError::HashMismatch {
            expected: escape_one_line(&header.hash, 64),
            actual,
        });
    }
    Ok(TutorialReply { header, verified })
}

/// Whether `buf` starts like one of sockit's frames: a big-endian length within the frame
/// limit, then a JSON object.
fn looks_framed(buf: &[u8]) -> bool {
    match (buf.get(..4), buf.get(4)) {
        (Some(prefix), Some(b'{')) => {
            let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            usize::try_from(len).is_ok_and(|len| len <= MAX_HEADER_BYTES)
        }
        _ => false,
    }
}

/// Reads one reply, writing its body to `out`; returns the header and the body's SHA-256.
async fn read_reply<S, O>(
    stream: &mut S,
    out: &mut O,
) -> Result<(TutorialHeader, String), TutorialError>
where
    S: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut decoder = TutorialDecoder::with_limits(Limits {
        max_header: MAX_HEADER_BYTES,
        max_body: MAX_CLIENT_BODY_BYTES,
    });
    let mut buf = BytesMut::with_capacity(OUTPUT_CHUNK_BYTES);
    let mut hasher = Sha256::new();
    let mut header = None;
    loop {
        loop {
            let step = match decoder.decode(&mut buf) {
                Ok(Some(step)) => step,
                Ok(None) => break,
                // Text reads as an absurd length prefix.
                Err(WireError::HeaderTooLarge { .. })
                    if header.is_none() && looks_like_text(&buf) =>
                {
                    return Err(TutorialError::ServerSpeaksText {
                        said: quote_first_line(&buf),
                    })
                }
                Err(WireError::HeaderTooLarge { .. }) if header.is_none() && looks_framed(&buf) => {
                    return Err(TutorialError::ServerSpeaksFramed)
                }
                Err(e) => return Err(e.into()),
            };
            match step {
                Decoded::Header(h) => header = Some(h),
                Decoded::Body(chunk) => {
                    hasher.update(&chunk);
                    out.write_all(&chunk).await.map_err(TutorialError::Local)?;
                }
            }
        }
        if let Some(h) = header.take_if(|_| decoder.is_idle()) {
            out.flush().await.map_err(TutorialError::Local)?;
            return Ok((h, hex::encode(hasher.finalize())));
        }
        let n = stream.read_buf(&mut buf).await.map_err(TutorialError::Io)?;
        if n == 0 {
            return Err(TutorialError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::framing::encode_header;

    #[test]
    fn a_sockit_frame_is_told_from_a_tutorial_reply_and_from_text() {
        let mut framed = BytesMut::new();
        let json = br#"{"type":"error","code":"timeout","message":"handshake not completed"}"#;
        framed.extend_from_slice(&(json.len() as u32).to_be_bytes());
        framed.extend_from_slice(json);
        assert!(looks_framed(&framed));

        let mut tutorial = BytesMut::new();
        let header = TutorialHeader {
            filename: "ls".into(),
            total_size: 3,
            hash: String::new(),
        };
        encode_header(&header, &mut tutorial).unwrap();
        assert!(!looks_framed(&tutorial));
        assert!(!looks_framed(b"error: this port speaks"));
        assert!(!looks_framed(b"\0\0"));
    }
}
