//! Moving one file's bytes, the same way in both directions: a blocking thread reads and
//! hashes (sending) or writes and hashes (receiving) while the async side moves the chunks over
//! the connection, so disk and hashing run on one core and the network on the other. The
//! chunks are a bounded set of reused buffers ([`ChunkPool`](super::chunks::ChunkPool)):
//! bounded memory, and no allocation or zeroing per chunk.
//!
//! `send` is the sending half and `receive` the receiving half; both speak the [`DataFrames`]
//! of either direction.

mod receive;
mod send;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::messages::{ClientMessage, ServerMessage};
use crate::wire::Message;

pub(crate) use receive::{read_end, receive_file, sender_failed, skip_file, ReceiveError};
pub(crate) use send::send_file;

/// Size of the reads from a file being sent, and of the socket reads on the receiving side.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Buffers of [`CHUNK_BYTES`] per transfer, in flight between the disk thread and the
/// connection: at most a few MiB per transfer whatever the file size.
pub const CHANNEL_CHUNKS: usize = 8;

/// Most body bytes a receiver reads and throws away to keep the connection in step after it
/// refused a file; past this it answers `rejected` and closes instead.
pub(crate) const MAX_DISCARD_BYTES: u64 = 64 * 1024 * 1024;

/// The `end` digest a sender sends when it could not read its whole file (the body was padded
/// to its declared size): the receiver discards the data.
pub(crate) const ABORTED_HASH: &str = "";

/// The frames that carry file data in one direction: a header with a body, then `end`.
pub(crate) trait DataFrames: Serialize + DeserializeOwned + Message + Send {
    /// The `end` frame closing a file.
    fn end(hash: String) -> Self;
    /// The digest, if this is an `end` frame.
    fn into_end(self) -> Option<String>;
}

impl DataFrames for ClientMessage {
    fn end(hash: String) -> Self {
        ClientMessage::End { hash }
    }

    fn into_end(self) -> Option<String> {
        match self {
            ClientMessage::End { hash } => Some(hash),
            _ => None,
        }
    }
}

impl DataFrames for ServerMessage {
    fn end(hash: String) -> Self {
        ServerMessage::End { hash }
    }

    fn into_end(self) -> Option<String> {
        match self {
            ServerMessage::End { hash } => Some(hash),
            _ => None,
        }
    }
}
