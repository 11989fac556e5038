//! Framed echo: every wire-v1 frame is sent back, header and streamed body. The smallest
//! framed service, and the server the wire format's hostile-input tests run against.

use std::io;

use serde::{Deserialize, Serialize};

use crate::engine::{Conn, ConnInfo, Handler};
use crate::wire::{Connection, Limits, Message, WireError, MAX_HEADER_BYTES};

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
#[derive(Debug, Clone, Copy, Default)]
pub struct FramedEcho;

impl Handler for FramedEcho {
    async fn handle(&self, conn: Conn, _info: ConnInfo) -> io::Result<()> {
        let limits = Limits {
            max_header: MAX_HEADER_BYTES,
            max_body: FRAMED_ECHO_MAX_BODY_BYTES,
        };
        let mut conn = Connection::with_limits(conn, limits);
        match echo_frames(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Tell the peer why before closing; it may already be gone.
                if !matches!(e, WireError::Io(_)) {
                    let _ = conn.write_error(&e).await;
                }
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }
}

async fn echo_frames(conn: &mut Connection<Conn>) -> Result<(), WireError> {
    while let Some(msg) = conn.read_frame::<EchoMessage>().await? {
        conn.write_header(&msg).await?;
        while let Some(chunk) = conn.read_body_chunk().await? {
            conn.write_body(&chunk).await?;
        }
    }
    Ok(())
}
