//! Splitting a framed connection into a read half and a write half, so one task can read
//! frames while another writes them, without losing the bytes already buffered.

use std::io::Cursor;

use bytes::BytesMut;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, Chain, Empty, Join, ReadHalf, Sink, WriteHalf,
};

use super::Connection;

/// The read side of a split connection: bytes already buffered, then the stream.
pub type ReadSide<S> = Join<Chain<Cursor<BytesMut>, ReadHalf<S>>, Sink>;

/// The write side of a split connection.
pub type WriteSide<S> = Join<Empty, WriteHalf<S>>;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Splits the connection so frames can be read and written at the same time, keeping the
    /// bytes already buffered, the read limits and the read buffer size. Call only at a frame
    /// boundary (no body half read or half written).
    pub fn split(self) -> (Connection<ReadSide<S>>, Connection<WriteSide<S>>) {
        let limits = self.limits();
        let read_step = self.read_buffer_bytes();
        let (stream, buffered) = self.into_parts();
        let (rd, wr) = tokio::io::split(stream);
        let rd = Cursor::new(buffered).chain(rd);
        let mut reader = Connection::with_limits(tokio::io::join(rd, tokio::io::sink()), limits);
        reader.set_read_buffer_bytes(read_step);
        let writer = Connection::new(tokio::io::join(tokio::io::empty(), wr));
        (reader, writer)
    }
}
