//! Splitting a framed connection into a read half and a write half, so one task can read
//! frames while another writes them, without losing the bytes already buffered.

use std::io::{self, Cursor, IoSlice};
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Chain, Empty, Join, ReadBuf, Sink};

use super::Connection;
use crate::net::splice::{SpliceRead, SpliceWrite};

/// The read side of a split connection: bytes already buffered, then the stream.
pub(crate) type ReadSide<S> = Join<Chain<Cursor<BytesMut>, StreamHalf<S>>, Sink>;

/// The write side of a split connection.
pub(crate) type WriteSide<S> = Join<Empty, StreamHalf<S>>;

/// One of the two handles on a split stream. Each poll locks the shared stream just for its
/// own duration, so the halves never wait on each other across an `.await`; unlike
/// `tokio::io::split`, the stream stays reachable, e.g. to splice into it.
#[derive(Debug)]
pub struct StreamHalf<S> {
    stream: Arc<Mutex<S>>,
}

impl<S> StreamHalf<S> {
    fn pair(stream: S) -> (StreamHalf<S>, StreamHalf<S>) {
        let stream = Arc::new(Mutex::new(stream));
        let other = StreamHalf {
            stream: Arc::clone(&stream),
        };
        (StreamHalf { stream }, other)
    }

    /// Runs `f` on the stream. A panic while the lock was held leaves the stream as it was
    /// (a poll that panicked), so the poison is ignored.
    fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let mut stream = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut stream)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StreamHalf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.with(|s| Pin::new(s).poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StreamHalf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|s| Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.with(|s| Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.with(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| Pin::new(s).poll_shutdown(cx))
    }
}

impl<S: AsyncWrite + SpliceWrite + Unpin> SpliceWrite for WriteSide<S> {
    fn can_splice(&self) -> bool {
        self.writer().with(|s| s.can_splice())
    }

    fn poll_splice_from(
        &mut self,
        cx: &mut Context<'_>,
        pipe: BorrowedFd<'_>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        self.writer_mut()
            .with(|s| s.poll_splice_from(cx, pipe, len))
    }
}

impl<S: AsyncRead + SpliceRead + Unpin> SpliceRead for ReadSide<S> {
    /// Only once the bytes buffered before the split have been read: a splice would skip them.
    fn can_splice_read(&self) -> bool {
        let (buffered, stream) = self.reader().get_ref();
        let taken = usize::try_from(buffered.position()).unwrap_or(usize::MAX);
        taken >= buffered.get_ref().len() && stream.with(|s| s.can_splice_read())
    }

    fn poll_splice_to(
        &mut self,
        cx: &mut Context<'_>,
        pipe: BorrowedFd<'_>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if !self.can_splice_read() {
            return Poll::Ready(Err(io::ErrorKind::Unsupported.into()));
        }
        let (_, stream) = self.reader_mut().get_mut();
        stream.with(|s| s.poll_splice_to(cx, pipe, len))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Splits the connection so frames can be read and written at the same time, keeping the
    /// bytes already buffered, the read limits and the read buffer size. Call only at a frame
    /// boundary (no body half read or half written).
    pub fn split(self) -> (Connection<ReadSide<S>>, Connection<WriteSide<S>>) {
        let limits = self.limits();
        let read_step = self.read_buffer_bytes();
        let (stream, buffered) = self.into_parts();
        let (rd, wr) = StreamHalf::pair(stream);
        let rd = Cursor::new(buffered).chain(rd);
        let mut reader = Connection::with_limits(tokio::io::join(rd, tokio::io::sink()), limits);
        reader.set_read_buffer_bytes(read_step);
        let writer = Connection::new(tokio::io::join(tokio::io::empty(), wr));
        (reader, writer)
    }
}
