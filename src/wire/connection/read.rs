//! Reading from a [`Connection`]: frame headers, their bodies (as chunks, into the caller's
//! buffer, or spliced into a pipe), and the bounded buffer fill behind them all.

use std::future::poll_fn;
use std::io;
use std::os::fd::BorrowedFd;

use bytes::{Buf, Bytes};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::net::splice::SpliceRead;
use crate::wire::codec::Decoded;
use crate::wire::connection::{Connection, MIN_READ_SPARE_BYTES, READ_BUFFER_BYTES};
use crate::wire::{Message, WireError};

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Reads the next frame's header.
    ///
    /// Returns `Ok(None)` only on a clean EOF at a frame boundary. If the previous frame's body
    /// was not fully read with [`read_body_chunk`](Self::read_body_chunk), its remaining bytes
    /// are discarded first.
    ///
    /// # Errors
    ///
    /// [`WireError::UnexpectedEof`] if the stream ends inside a frame, any decode error of
    /// [`FrameDecoder::decode`](crate::wire::FrameDecoder::decode), or [`WireError::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: all progress lives in the connection's buffer and decoder, so a cancelled
    /// call loses nothing and the next call resumes.
    pub async fn read_frame<M: DeserializeOwned + Message>(
        &mut self,
    ) -> Result<Option<M>, WireError> {
        loop {
            match self.decoder.decode::<M>(&mut self.read_buf)? {
                Some(Decoded::Header(msg)) => return Ok(Some(msg)),
                Some(Decoded::Body(_unread)) => continue,
                None => {}
            }
            if self.fill().await? == 0 {
                return if self.decoder.is_idle() && self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::UnexpectedEof)
                };
            }
        }
    }

    /// Reads the next chunk of the current frame's body; `Ok(None)` at its end (or if the
    /// last header had no body).
    ///
    /// # Errors
    ///
    /// [`WireError::UnexpectedEof`] if the stream ends inside the body, or [`WireError::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, like [`read_frame`](Self::read_frame).
    pub async fn read_body_chunk(&mut self) -> Result<Option<Bytes>, WireError> {
        while self.decoder.in_body() {
            if let Some(chunk) = self.decoder.decode_body(&mut self.read_buf) {
                return Ok(Some(chunk));
            }
            if self.fill().await? == 0 {
                return Err(WireError::UnexpectedEof);
            }
        }
        Ok(None)
    }

    /// Reads the next bytes of the current frame's body into `out` and returns how many;
    /// `Ok(0)` at its end (or if the last header had no body, or `out` is empty).
    ///
    /// Bytes already buffered are copied first; after that the stream is read straight into
    /// `out`, so a caller with its own (reused) buffers moves bulk data with one copy.
    ///
    /// # Errors
    ///
    /// [`WireError::UnexpectedEof`] if the stream ends inside the body, or [`WireError::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes count as read only once they are in `out` and the call returns.
    pub async fn read_body_into(&mut self, out: &mut [u8]) -> Result<usize, WireError> {
        let remaining = self.decoder.body_remaining();
        let want = usize::try_from(remaining).map_or(out.len(), |r| r.min(out.len()));
        let Some(out) = out.get_mut(..want).filter(|o| !o.is_empty()) else {
            return Ok(0);
        };
        let n = if self.read_buf.is_empty() {
            match self.stream.read(out).await? {
                0 => return Err(WireError::UnexpectedEof),
                n => n,
            }
        } else {
            let n = out.len().min(self.read_buf.len());
            out[..n].copy_from_slice(&self.read_buf[..n]);
            self.read_buf.advance(n);
            n
        };
        self.decoder.consume_body(n);
        Ok(n)
    }

    /// The current body's bytes that are already buffered, without reading the stream;
    /// `None` once none are (or outside a body). Take them all before
    /// [`splice_body_to`](Self::splice_body_to).
    pub(crate) fn take_buffered_body(&mut self) -> Option<Bytes> {
        if self.read_buf.is_empty() {
            return None;
        }
        self.decoder.decode_body(&mut self.read_buf)
    }

    /// Moves up to `max` bytes of the current body from the stream straight into `pipe`,
    /// without them passing through user space; returns how many, `Ok(0)` when `pipe` is full
    /// (wait until it has room, then call again) or the body is done.
    ///
    /// # Errors
    ///
    /// [`WireError::UnexpectedEof`] if the stream ends inside the body; [`WireError::Io`]:
    /// `InvalidInput` while body bytes are still buffered (see
    /// [`take_buffered_body`](Self::take_buffered_body)), `Unsupported` on a stream that cannot
    /// splice, or the stream's errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes count as read only once they are in `pipe` and the call returns.
    pub(crate) async fn splice_body_to(
        &mut self,
        pipe: BorrowedFd<'_>,
        max: usize,
    ) -> Result<usize, WireError>
    where
        S: SpliceRead,
    {
        let remaining = self.decoder.body_remaining();
        let want = usize::try_from(remaining).map_or(max, |r| r.min(max));
        if want == 0 {
            return Ok(0);
        }
        if !self.read_buf.is_empty() {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffered body bytes must be taken before splicing",
            );
            return Err(e.into());
        }
        match poll_fn(|cx| self.stream.poll_splice_to(cx, pipe, want)).await {
            Ok(0) => Err(WireError::UnexpectedEof),
            Ok(n) => {
                self.decoder.consume_body(n);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes read from the stream and not yet decoded. After a rejected length prefix (e.g.
    /// [`WireError::HeaderTooLarge`]) they start with that prefix, so a caller can see what
    /// the peer really sent, such as a TLS record on a plaintext port.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.read_buf
    }

    /// Reads whatever the peer sends next into the buffer without decoding it, so a caller can
    /// look at a peer's first bytes in [`buffered`](Self::buffered) before they make a frame;
    /// returns how many bytes arrived (0 at EOF). The next
    /// [`read_frame`](Self::read_frame) decodes them as usual.
    ///
    /// # Errors
    ///
    /// [`WireError::Io`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes read are kept in the buffer.
    pub(crate) async fn read_more(&mut self) -> Result<usize, WireError> {
        Ok(self.fill().await?)
    }

    /// Whether the next byte read starts a frame: nothing of one has been decoded since the
    /// last complete frame (and no decode error). Then [`buffered`](Self::buffered) holds what
    /// the peer sent that is still too short for a length prefix.
    pub(crate) fn at_frame_start(&self) -> bool {
        self.decoder.is_idle()
    }

    /// Bytes of the current frame's body still to be read from the stream (not yet buffered);
    /// zero between frames. The peer has committed to sending them, so a reader may wait for
    /// them all (see [`crate::net::lowat::RecvLowat`]).
    pub(crate) fn unread_body_bytes(&self) -> u64 {
        if !self.decoder.in_body() {
            return 0;
        }
        let buffered = u64::try_from(self.read_buf.len()).unwrap_or(u64::MAX);
        self.decoder.body_remaining().saturating_sub(buffered)
    }

    /// One read into the buffer, growing it by a bounded step when nearly full. Inside a
    /// body the step is the rest of the body, up to the read step
    /// ([`BODY_READ_BYTES`](crate::wire::connection::BODY_READ_BYTES) by default).
    async fn fill(&mut self) -> io::Result<usize> {
        let body_left = usize::try_from(self.decoder.body_remaining()).unwrap_or(usize::MAX);
        let step = body_left.clamp(READ_BUFFER_BYTES, self.read_step);
        let spare = self.read_buf.capacity() - self.read_buf.len();
        if spare < MIN_READ_SPARE_BYTES || (spare < step && self.read_buf.is_empty()) {
            self.read_buf.reserve(step);
        }
        self.stream.read_buf(&mut self.read_buf).await
    }
}
