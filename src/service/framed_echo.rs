//! Framed echo: every wire-v1 frame is sent back, header and streamed body. The smallest
//! framed service, and the server the wire format's hostile-input tests run against. A peer
//! that sends a line of plain text (`nc`) gets one line of text back, as at every framed port.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};

use crate::engine::{Conn, ConnInfo, Handler};
use crate::wire::{
    looks_like_text, Connection, ErrorFrame, Limits, Message, WireError, MAX_HEADER_BYTES,
    TEXT_SNIFF_BYTES,
};

/// Largest body a framed echo accepts.
pub(crate) const FRAMED_ECHO_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// The one message: `{"type":"echo","size":N}` followed by N body bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EchoMessage {
    /// Echo this frame's body back.
    Echo {
        /// Body length in bytes.
        #[serde(default)]
        size: u64,
    },
}

impl Message for EchoMessage {
    fn body_size(&self) -> u64 {
        match self {
            EchoMessage::Echo { size } => *size,
        }
    }
}

/// The framed echo handler.
#[derive(Debug, Clone, Copy)]
pub struct FramedEcho {
    header_deadline: Duration,
}

impl Default for FramedEcho {
    fn default() -> Self {
        FramedEcho {
            header_deadline: FRAME_HEADER_DEADLINE,
        }
    }
}

impl FramedEcho {
    /// A framed echo whose frames get `deadline` from their first byte to the end of their
    /// header (default [`FRAME_HEADER_DEADLINE`]), and their body that plus its size at
    /// [`MIN_BODY_BYTES_PER_SEC`].
    pub fn with_header_deadline(deadline: Duration) -> Self {
        FramedEcho {
            header_deadline: deadline,
        }
    }
}

impl Handler for FramedEcho {
    async fn handle(&self, conn: Conn, _info: ConnInfo) -> io::Result<()> {
        let limits = Limits {
            max_header: MAX_HEADER_BYTES,
            max_body: FRAMED_ECHO_MAX_BODY_BYTES,
        };
        let mut conn = Connection::with_limits(conn, limits);
        let failure = match echo_frames(&mut conn, self.header_deadline).await {
            Ok(()) => return Ok(()),
            // Tell the peer why before closing; it may already be gone.
            Err(Failure::Wire(e)) => {
                if !matches!(e, WireError::Io(_)) {
                    let _ = conn.write_error(&e).await;
                }
                e.to_string()
            }
            Err(Failure::TooSlow) => {
                let frame = ErrorFrame::new("timeout", TOO_SLOW);
                let _ = conn.write_error(frame).await;
                TOO_SLOW.to_owned()
            }
            Err(Failure::Text) => {
                // A person with nc reads one line of text, not an error frame.
                let _ = timeout(TEXT_REPLY_LINGER, reply_in_text(&mut conn)).await;
                "a plain-text client at the framed echo port".to_owned()
            }
        };
        Err(io::Error::new(io::ErrorKind::InvalidData, failure))
    }
}

const TOO_SLOW: &str = "the frame did not arrive within its deadline";

/// The one line a plain-text client (`nc`) gets, as at every framed port.
const TEXT_REPLY: &str = "error: this port speaks sockit's framed protocol (framed echo), not \
    plain text: send wire-v1 frames, a 4-byte big-endian header length, the JSON header \
    {\"type\":\"echo\",\"size\":N}, then N body bytes; for plain text use `sockit echo` without \
    --framed\n";

/// How long the text reply may take, and the client to close after it.
const TEXT_REPLY_LINGER: Duration = Duration::from_secs(2);

/// Why the echo of a connection's frames ended early.
enum Failure {
    Wire(WireError),
    /// A frame took longer than its deadline (see [`FRAME_HEADER_DEADLINE`]).
    TooSlow,
    /// The peer sent a line of text, not a frame.
    Text,
}

impl From<WireError> for Failure {
    fn from(e: WireError) -> Self {
        Failure::Wire(e)
    }
}

/// Time a frame gets from its first byte to the end of its header. Between frames only the
/// idle limit applies; within one, trickling a byte at a time does not hold the connection.
pub const FRAME_HEADER_DEADLINE: Duration = Duration::from_secs(10);

/// Slowest body rate a frame is allowed: its body gets [`FRAME_HEADER_DEADLINE`] plus its size
/// at this rate.
pub const MIN_BODY_BYTES_PER_SEC: u64 = 64 * 1024;

/// Fails with [`Failure::Text`] if the next frame's first bytes are a line of text, as soon
/// as that is clear: a line shorter than a length prefix (`hi\n`) would otherwise leave the
/// frame read waiting for its fourth byte. Called at a frame's start.
///
/// # Cancel safety
///
/// Cancel safe: what it reads stays buffered in `conn`.
async fn sniff_text(conn: &mut Connection<Conn>) -> Result<(), Failure> {
    while conn.buffered().len() < TEXT_SNIFF_BYTES {
        if looks_like_text(conn.buffered()) {
            return Err(Failure::Text);
        }
        if conn.read_more().await? == 0 {
            // A frame cut short: the frame read reports it.
            return Ok(());
        }
    }
    match looks_like_text(conn.buffered()) {
        true => Err(Failure::Text),
        false => Ok(()),
    }
}

/// Writes [`TEXT_REPLY`], half-closes, and drops what the client still sends until it closes
/// (closing with unread bytes would reset the connection and could destroy the reply).
async fn reply_in_text(conn: &mut Connection<Conn>) -> io::Result<()> {
    let stream = conn.get_mut();
    stream.write_all(TEXT_REPLY.as_bytes()).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

async fn echo_frames(
    conn: &mut Connection<Conn>,
    header_deadline: Duration,
) -> Result<(), Failure> {
    loop {
        // Wait for a frame's first byte under the idle limit only.
        if conn.buffered().is_empty() && conn.read_more().await? == 0 {
            return Ok(());
        }
        let started = Instant::now();
        timeout_at(started + header_deadline, sniff_text(conn))
            .await
            .map_err(|_| Failure::TooSlow)??;
        let header = timeout_at(started + header_deadline, conn.read_frame::<EchoMessage>());
        let msg = match header.await.map_err(|_| Failure::TooSlow)? {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(()),
            // A line's first bytes read as an absurd length; they stay in `buffered`.
            Err(WireError::HeaderTooLarge { .. }) if looks_like_text(conn.buffered()) => {
                return Err(Failure::Text)
            }
            Err(e) => return Err(e.into()),
        };
        let body_time = Duration::from_secs(msg.body_size() / MIN_BODY_BYTES_PER_SEC);
        let deadline = started + header_deadline + body_time;
        conn.write_header(&msg).await?;
        while let Some(chunk) = timeout_at(deadline, conn.read_body_chunk())
            .await
            .map_err(|_| Failure::TooSlow)??
        {
            conn.write_body(&chunk).await?;
        }
    }
}
