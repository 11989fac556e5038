//! Writing to a [`Connection`]: whole frames, or a header whose body follows in chunks or
//! spliced from a pipe, with the announced body length enforced.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::net::splice::SpliceWrite;
use crate::wire::connection::Connection;
use crate::wire::encode::{check_body_len, encode_frame, encode_header};
use crate::wire::{ErrorFrame, Message, WireError};

/// Bodies up to this size are copied behind the header and sent in one write.
const COPY_BODY_MAX_BYTES: usize = 8 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Writes a whole frame, header then `body`, and flushes.
    ///
    /// Small bodies are copied behind the header for a single write; larger ones go out with
    /// vectored writes, uncopied.
    ///
    /// # Errors
    ///
    /// [`WireError::BodyLengthMismatch`] unless `body.len() == msg.body_size()` or while a
    /// streamed body is unfinished, the errors of `encode_header`, or [`WireError::Io`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a cancelled write may leave a partial frame on the stream, after which
    /// the connection must be dropped.
    pub async fn write_frame<M: Serialize + Message>(
        &mut self,
        msg: &M,
        body: &[u8],
    ) -> Result<(), WireError> {
        self.check_no_body_pending()?;
        check_body_len(msg.body_size(), body.len())?;
        self.write_buf.clear();
        encode_header(msg, &mut self.write_buf)?;
        if body.len() <= COPY_BODY_MAX_BYTES {
            self.write_buf.extend_from_slice(body);
            self.stream.write_all(&self.write_buf).await?;
        } else {
            write_all_pair(&mut self.stream, &self.write_buf, body).await?;
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Writes several whole frames, each header then its body, in one write, and flushes:
    /// for many small frames sent back to back (answers to a batch, small files), where a
    /// write each would cost a system call each.
    ///
    /// # Errors
    ///
    /// As [`write_frame`](Self::write_frame); nothing is written if any frame fails to encode.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`write_frame`](Self::write_frame)).
    pub async fn write_frames<'a, M, I>(&mut self, frames: I) -> Result<(), WireError>
    where
        M: Serialize + Message + 'a,
        I: IntoIterator<Item = (&'a M, &'a [u8])>,
    {
        self.check_no_body_pending()?;
        self.write_buf.clear();
        for (msg, body) in frames {
            if let Err(e) = encode_frame(msg, body, &mut self.write_buf) {
                self.write_buf.clear();
                return Err(e);
            }
        }
        self.stream.write_all(&self.write_buf).await?;
        self.stream.flush().await?;
        self.write_buf.clear();
        Ok(())
    }

    /// Writes just the header of a frame whose body will follow through
    /// [`write_body`](Self::write_body), and flushes.
    ///
    /// # Errors
    ///
    /// [`WireError::BodyLengthMismatch`] while a previous body is unfinished, the errors of
    /// `encode_header`, or [`WireError::Io`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`write_frame`](Self::write_frame)).
    pub async fn write_header<M: Serialize + Message>(&mut self, msg: &M) -> Result<(), WireError> {
        self.check_no_body_pending()?;
        self.write_buf.clear();
        encode_header(msg, &mut self.write_buf)?;
        self.stream.write_all(&self.write_buf).await?;
        self.stream.flush().await?;
        self.write_remaining = msg.body_size();
        Ok(())
    }

    /// Writes the next chunk of the body announced by [`write_header`](Self::write_header),
    /// and flushes.
    ///
    /// # Errors
    ///
    /// [`WireError::BodyLengthMismatch`] if `chunk` goes past the announced size (nothing is
    /// written then), or [`WireError::Io`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`write_frame`](Self::write_frame)).
    pub async fn write_body(&mut self, chunk: &[u8]) -> Result<(), WireError> {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        if len > self.write_remaining {
            return Err(WireError::BodyLengthMismatch {
                declared: self.write_remaining,
                actual: len,
            });
        }
        self.stream.write_all(chunk).await?;
        self.stream.flush().await?;
        self.write_remaining -= len;
        Ok(())
    }

    /// Writes the next `len` bytes of the body announced by [`write_header`](Self::write_header)
    /// straight from `pipe` into the stream (splice(2)): the bytes never enter user space.
    /// `pipe` must hold at least `len` bytes and have no other reader (see
    /// [`SpliceWrite::poll_splice_from`]).
    ///
    /// # Errors
    ///
    /// [`WireError::BodyLengthMismatch`] if `len` goes past the announced size (nothing is
    /// written then), or [`WireError::Io`]: `Unsupported` on a stream that cannot splice,
    /// `UnexpectedEof` if the pipe ran dry. After an error mid-body the connection must be
    /// dropped, as the body is short of its declared length.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`write_frame`](Self::write_frame)).
    pub(crate) async fn splice_body(
        &mut self,
        pipe: BorrowedFd<'_>,
        len: usize,
    ) -> Result<(), WireError>
    where
        S: SpliceWrite,
    {
        let len64 = u64::try_from(len).unwrap_or(u64::MAX);
        if len64 > self.write_remaining {
            return Err(WireError::BodyLengthMismatch {
                declared: self.write_remaining,
                actual: len64,
            });
        }
        let mut left = len;
        while left > 0 {
            let n = poll_fn(|cx| self.stream.poll_splice_from(cx, pipe, left)).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            let n = n.min(left);
            left -= n;
            self.write_remaining -= n as u64;
        }
        Ok(())
    }

    /// Writes an error frame: pass an [`ErrorFrame`] or `&WireError`.
    ///
    /// # Errors
    ///
    /// As [`write_frame`](Self::write_frame).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`write_frame`](Self::write_frame)).
    pub(crate) async fn write_error(
        &mut self,
        error: impl Into<ErrorFrame>,
    ) -> Result<(), WireError> {
        self.write_frame(&error.into(), &[]).await
    }

    fn check_no_body_pending(&self) -> Result<(), WireError> {
        if self.write_remaining > 0 {
            return Err(WireError::BodyLengthMismatch {
                declared: self.write_remaining,
                actual: 0,
            });
        }
        Ok(())
    }
}

/// `write_all` for two slices, using vectored writes where the stream supports them.
async fn write_all_pair<W: AsyncWrite + Unpin>(
    stream: &mut W,
    mut first: &[u8],
    mut second: &[u8],
) -> io::Result<()> {
    while !first.is_empty() || !second.is_empty() {
        let n = if first.is_empty() {
            stream.write(second).await?
        } else {
            let slices = [IoSlice::new(first), IoSlice::new(second)];
            stream.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_first = n.min(first.len());
        first = first.get(from_first..).unwrap_or_default();
        second = second.get(n - from_first..).unwrap_or_default();
    }
    Ok(())
}
