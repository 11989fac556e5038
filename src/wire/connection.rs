//! `Connection`: typed frame reads and writes over any async byte stream, with bounded buffering.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;

use bytes::{Buf, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{Decoded, FrameDecoder};
use super::encode::{check_body_len, encode_header};
use super::{ErrorFrame, Limits, Message, WireError};
use crate::net::splice::{SpliceRead, SpliceWrite};

/// Read buffer size at start and per growth step; headers reserve up to their (capped) length.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Below this much free space the read buffer grows by [`READ_BUFFER_BYTES`] before a read.
const MIN_READ_SPARE_BYTES: usize = 1024;

/// Largest read while inside a body: big bodies are read in steps this size rather than
/// [`READ_BUFFER_BYTES`], so bulk data costs few syscalls while memory stays bounded.
const BODY_READ_BYTES: usize = 256 * 1024;

/// Bodies up to this size are copied behind the header and sent in one write.
const COPY_BODY_MAX_BYTES: usize = 8 * 1024;

/// A framed connection: reads typed headers and streamed bodies, writes frames.
///
/// ```no_run
/// # async fn demo(stream: tokio::net::TcpStream) -> Result<(), sockit::wire::WireError> {
/// use sockit::wire::{Connection, Hello};
///
/// let mut conn = Connection::new(stream);
/// conn.write_frame(&Hello { service: "exec".into(), version: 1 }, &[]).await?;
/// while let Some(reply) = conn.read_frame::<sockit::wire::ErrorFrame>().await? {
///     println!("{}: {}", reply.code, reply.message);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    read_buf: BytesMut,
    decoder: FrameDecoder,
    write_buf: BytesMut,
    /// Body bytes announced by `write_header` and not yet written.
    write_remaining: u64,
    /// The largest read inside a body (headers are read in [`READ_BUFFER_BYTES`] steps).
    read_step: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps `stream` with the default [`Limits`].
    pub fn new(stream: S) -> Self {
        Connection::with_limits(stream, Limits::default())
    }

    /// Wraps `stream` with the given limits.
    pub fn with_limits(stream: S, limits: Limits) -> Self {
        Connection {
            stream,
            read_buf: BytesMut::with_capacity(READ_BUFFER_BYTES),
            decoder: FrameDecoder::with_limits(limits),
            write_buf: BytesMut::new(),
            write_remaining: 0,
            read_step: BODY_READ_BYTES,
        }
    }

    /// Sets how many bytes one read inside a body may fill (default 256 KiB, never
    /// less than 8 KiB). Memory stays bounded by a few steps, plus whatever body chunks the
    /// caller still holds.
    pub fn set_read_buffer_bytes(&mut self, bytes: usize) {
        self.read_step = bytes.max(READ_BUFFER_BYTES);
    }

    /// Replaces the read limits, e.g. after authentication; they apply from the next header.
    pub fn set_limits(&mut self, limits: Limits) {
        self.decoder.set_limits(limits);
    }

    /// The read limits in force.
    pub fn limits(&self) -> Limits {
        self.decoder.limits()
    }

    /// How many bytes one read may fill (see [`set_read_buffer_bytes`](Self::set_read_buffer_bytes)).
    pub fn read_buffer_bytes(&self) -> usize {
        self.read_step
    }

    /// Reads the next frame's header.
    ///
    /// Returns `Ok(None)` only on a clean EOF at a frame boundary. If the previous frame's body
    /// was not fully read with [`read_body_chunk`](Self::read_body_chunk), its remaining bytes
    /// are discarded first.
    ///
    /// # Errors
    ///
    /// [`WireError::UnexpectedEof`] if the stream ends inside a frame, any decode error of
    /// [`FrameDecoder::decode`], or [`WireError::Io`].
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
    pub fn take_buffered_body(&mut self) -> Option<Bytes> {
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
    pub async fn splice_body_to(
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

    /// Writes a whole frame, header then `body`, and flushes.
    ///
    /// Small bodies are copied behind the header for a single write; larger ones go out with
    /// vectored writes, uncopied.
    ///
    /// # Errors
    ///
    /// [`WireError::BodyLengthMismatch`] unless `body.len() == msg.body_size()` or while a
    /// streamed body is unfinished, the errors of [`encode_header`], or [`WireError::Io`].
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

    /// Writes just the header of a frame whose body will follow through
    /// [`write_body`](Self::write_body), and flushes.
    ///
    /// # Errors
    ///
    /// [`WireError::BodyLengthMismatch`] while a previous body is unfinished, the errors of
    /// [`encode_header`], or [`WireError::Io`].
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
    pub async fn splice_body(&mut self, pipe: BorrowedFd<'_>, len: usize) -> Result<(), WireError>
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
    pub async fn write_error(&mut self, error: impl Into<ErrorFrame>) -> Result<(), WireError> {
        self.write_frame(&error.into(), &[]).await
    }

    /// Gives back the stream and the bytes read past the last decoded item, e.g. to switch the
    /// stream from framed to raw. If called mid-frame, the bytes are the rest of that frame.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.read_buf)
    }

    /// The same connection over `f(stream)`, its buffers and framing state kept: e.g. to box
    /// the stream once a handshake on the concrete type is done.
    pub fn map_stream<T>(self, f: impl FnOnce(S) -> T) -> Connection<T> {
        Connection {
            stream: f(self.stream),
            read_buf: self.read_buf,
            decoder: self.decoder,
            write_buf: self.write_buf,
            write_remaining: self.write_remaining,
            read_step: self.read_step,
        }
    }

    /// Bytes read from the stream and not yet decoded. After a rejected length prefix (e.g.
    /// [`WireError::HeaderTooLarge`]) they start with that prefix, so a caller can see what
    /// the peer really sent, such as a TLS record on a plaintext port.
    pub fn buffered(&self) -> &[u8] {
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
    pub async fn read_more(&mut self) -> Result<usize, WireError> {
        Ok(self.fill().await?)
    }

    /// Whether the next byte read starts a frame: nothing of one has been decoded since the
    /// last complete frame (and no decode error). Then [`buffered`](Self::buffered) holds what
    /// the peer sent that is still too short for a length prefix.
    pub fn at_frame_start(&self) -> bool {
        self.decoder.is_idle()
    }

    /// Bytes of the current frame's body still to be read from the stream (not yet buffered);
    /// zero between frames. The peer has committed to sending them, so a reader may wait for
    /// them all (see [`crate::net::lowat::RecvLowat`]).
    pub fn unread_body_bytes(&self) -> u64 {
        if !self.decoder.in_body() {
            return 0;
        }
        let buffered = u64::try_from(self.read_buf.len()).unwrap_or(u64::MAX);
        self.decoder.body_remaining().saturating_sub(buffered)
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably; reading from it directly desynchronises the framing.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
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

    /// One read into the buffer, growing it by a bounded step when nearly full. Inside a
    /// body the step is the rest of the body, up to the read step ([`BODY_READ_BYTES`] by default).
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

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, DuplexStream};

    use super::*;
    use crate::wire::test_support::{encoded, put, read_body, reader_of, TestMsg};
    use crate::wire::Hello;

    fn pair(capacity: usize) -> (Connection<DuplexStream>, Connection<DuplexStream>) {
        let (a, b) = duplex(capacity);
        (Connection::new(a), Connection::new(b))
    }

    async fn next<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Connection<S>) -> Option<TestMsg> {
        conn.read_frame::<TestMsg>().await.expect("reads a frame")
    }

    #[tokio::test]
    async fn frames_with_streamed_bodies_round_trip_over_a_tiny_pipe() {
        let (mut client, mut server) = pair(8);
        let big: Vec<u8> = (0..30_000u32).map(|i| (i % 253) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_frame(&put(3), b"abc").await?;
            client.write_frame(&TestMsg::Ping, &[]).await?;
            client.write_frame(&put(30_000), &sent).await?;
            client.write_header(&put(6)).await?;
            client.write_body(b"str").await?;
            client.write_body(b"eam").await?;
            client.write_error(ErrorFrame::new("done", "bye")).await?;
            Ok::<_, WireError>(())
        });
        assert_eq!(next(&mut server).await, Some(put(3)));
        assert_eq!(read_body(&mut server).await.ok(), Some(b"abc".to_vec()));
        assert_eq!(next(&mut server).await, Some(TestMsg::Ping));
        assert_eq!(read_body(&mut server).await.ok(), Some(Vec::new()));
        assert_eq!(next(&mut server).await, Some(put(30_000)));
        assert_eq!(read_body(&mut server).await.ok(), Some(big));
        assert_eq!(next(&mut server).await, Some(put(6)));
        assert_eq!(read_body(&mut server).await.ok(), Some(b"stream".to_vec()));
        let err = server.read_frame::<ErrorFrame>().await.expect("reads");
        assert_eq!(err, Some(ErrorFrame::new("done", "bye")));
        writer.await.expect("join").expect("writes");
        assert_eq!(next(&mut server).await, None);
    }

    #[tokio::test]
    async fn bodies_read_into_caller_buffers_keep_the_framing_over_a_tiny_pipe() {
        let (mut client, mut server) = pair(8);
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_frame(&put(70_000), &sent).await?;
            client.write_frame(&TestMsg::Ping, &[]).await?;
            client.write_frame(&put(3), b"xyz").await?;
            Ok::<_, WireError>(())
        });
        assert_eq!(next(&mut server).await, Some(put(70_000)));
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            match server.read_body_into(&mut buf).await.expect("reads") {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(got, big);
        assert_eq!(server.read_body_into(&mut buf).await.ok(), Some(0));
        assert_eq!(next(&mut server).await, Some(TestMsg::Ping));
        assert_eq!(
            server.read_body_into(&mut buf).await.ok(),
            Some(0),
            "no body"
        );
        assert_eq!(next(&mut server).await, Some(put(3)));
        assert_eq!(read_body(&mut server).await.ok(), Some(b"xyz".to_vec()));
        writer.await.expect("join").expect("writes");
        assert_eq!(next(&mut server).await, None);
    }

    #[tokio::test]
    async fn a_read_into_takes_buffered_bytes_first_and_stops_at_the_body_end() {
        let mut bytes = encoded(&put(10), b"0123456789");
        bytes.extend(encoded(&TestMsg::Ping, &[]));
        let mut conn = reader_of(bytes).await;
        assert_eq!(next(&mut conn).await, Some(put(10)));
        let mut buf = [0u8; 64];
        let n = conn.read_body_into(&mut buf[..4]).await.expect("reads");
        assert_eq!(&buf[..n], b"0123");
        let n = conn.read_body_into(&mut buf).await.expect("reads");
        assert_eq!(&buf[..n], b"456789", "never past the body");
        assert_eq!(next(&mut conn).await, Some(TestMsg::Ping));
    }

    #[tokio::test]
    async fn eof_inside_a_body_read_into_a_buffer_is_unexpected() {
        let frame = encoded(&put(10), b"0123456789");
        let mut conn = reader_of(frame[..frame.len() - 3].to_vec()).await;
        assert!(matches!(conn.read_frame::<TestMsg>().await, Ok(Some(_))));
        let mut buf = [0u8; 64];
        let n = conn.read_body_into(&mut buf).await.expect("the bytes sent");
        assert_eq!(&buf[..n], b"0123456");
        assert!(matches!(
            conn.read_body_into(&mut buf).await,
            Err(WireError::UnexpectedEof)
        ));
    }

    #[tokio::test]
    async fn an_unread_body_is_skipped_by_the_next_read_frame() {
        let mut bytes = encoded(&put(4), b"skip");
        bytes.extend(encoded(&TestMsg::Ping, &[]));
        let mut conn = reader_of(bytes).await;
        assert_eq!(next(&mut conn).await, Some(put(4)));
        assert_eq!(next(&mut conn).await, Some(TestMsg::Ping));
        assert_eq!(next(&mut conn).await, None);
    }

    #[tokio::test]
    async fn eof_inside_a_header_is_unexpected() {
        let frame = encoded(&TestMsg::Ping, &[]);
        for cut in [1, 4, frame.len() - 1] {
            let mut conn = reader_of(frame[..cut].to_vec()).await;
            assert!(matches!(
                conn.read_frame::<TestMsg>().await,
                Err(WireError::UnexpectedEof)
            ));
        }
    }

    #[tokio::test]
    async fn eof_inside_a_body_is_unexpected() {
        let frame = encoded(&put(10), b"0123456789");
        let mut conn = reader_of(frame[..frame.len() - 3].to_vec()).await;
        assert!(matches!(conn.read_frame::<TestMsg>().await, Ok(Some(_))));
        assert!(matches!(
            read_body(&mut conn).await,
            Err(WireError::UnexpectedEof)
        ));
        let mut conn = reader_of(frame[..frame.len() - 3].to_vec()).await;
        assert!(matches!(conn.read_frame::<TestMsg>().await, Ok(Some(_))));
        assert!(matches!(
            conn.read_frame::<TestMsg>().await,
            Err(WireError::UnexpectedEof)
        ));
    }

    #[tokio::test]
    async fn clean_eof_between_frames_is_none() {
        let mut conn = reader_of(encoded(&TestMsg::Ping, &[])).await;
        assert_eq!(next(&mut conn).await, Some(TestMsg::Ping));
        assert_eq!(next(&mut conn).await, None);
        let mut empty = reader_of(Vec::new()).await;
        assert_eq!(next(&mut empty).await, None);
    }

    #[tokio::test]
    async fn into_parts_returns_bytes_buffered_past_the_frame() {
        let mut bytes = encoded(&TestMsg::Ping, &[]);
        bytes.extend_from_slice(b"raw tail");
        let mut conn = reader_of(bytes).await;
        assert_eq!(next(&mut conn).await, Some(TestMsg::Ping));
        let (_stream, rest) = conn.into_parts();
        assert_eq!(&rest[..], b"raw tail");
    }

    #[tokio::test]
    async fn a_ten_mib_body_streams_with_a_bounded_read_buffer() {
        const SIZE: usize = 10 * 1024 * 1024;
        let (mut client, mut server) = pair(8192);
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            client.write_header(&put(SIZE as u64)).await?;
            for _ in 0..SIZE / chunk.len() {
                client.write_body(&chunk).await?;
            }
            client.write_frame(&TestMsg::Ping, &[]).await
        });
        assert!(matches!(
            server.read_frame::<TestMsg>().await,
            Ok(Some(TestMsg::Put { .. }))
        ));
        let (mut total, mut max_capacity) = (0, 0);
        while let Some(chunk) = server.read_body_chunk().await.expect("reads") {
            assert!(chunk.iter().all(|b| *b == 7));
            total += chunk.len();
            max_capacity = max_capacity.max(server.read_buf.capacity());
        }
        assert_eq!(total, SIZE);
        assert!(
            max_capacity <= 2 * BODY_READ_BYTES,
            "capacity {max_capacity}"
        );
        assert_eq!(next(&mut server).await, Some(TestMsg::Ping));
        writer.await.expect("join").expect("writes");
    }

    #[tokio::test]
    async fn a_larger_read_buffer_yields_larger_body_chunks() {
        const SIZE: usize = 1024 * 1024;
        let (mut client, mut server) = pair(SIZE);
        server.set_read_buffer_bytes(256 * 1024);
        let writer = tokio::spawn(async move {
            client
                .write_frame(&put(SIZE as u64), &vec![1u8; SIZE])
                .await
        });
        assert!(matches!(next(&mut server).await, Some(TestMsg::Put { .. })));
        let (mut total, mut largest) = (0, 0);
        while let Some(chunk) = server.read_body_chunk().await.expect("reads") {
            total += chunk.len();
            largest = largest.max(chunk.len());
        }
        assert_eq!(total, SIZE);
        assert!(largest > 2 * READ_BUFFER_BYTES, "largest chunk {largest}");
        assert!(server.read_buf.capacity() <= 2 * 256 * 1024);
        writer.await.expect("join").expect("writes");
    }

    #[tokio::test]
    async fn writing_past_or_short_of_the_announced_body_is_refused() {
        let (mut client, _server) = pair(1024);
        let short = client.write_frame(&put(5), b"abc").await;
        assert!(matches!(
            short,
            Err(WireError::BodyLengthMismatch {
                declared: 5,
                actual: 3
            })
        ));
        client.write_header(&put(2)).await.expect("header");
        assert!(client.write_body(b"abc").await.is_err());
        assert!(client.write_frame(&TestMsg::Ping, &[]).await.is_err());
        client.write_body(b"ab").await.expect("body");
        client
            .write_frame(&TestMsg::Ping, &[])
            .await
            .expect("next frame");
    }

    #[tokio::test]
    async fn pre_auth_limits_reject_a_body_and_write_error_reports_it() {
        let (mut client, server) = duplex(4096);
        let mut server = Connection::with_limits(server, Limits::pre_auth());
        let mut client_conn = Connection::new(&mut client);
        client_conn.write_frame(&put(1), b"x").await.expect("write");
        let err = server
            .read_frame::<TestMsg>()
            .await
            .expect_err("body not allowed");
        assert_eq!(err.code(), "body_too_large");
        server.write_error(&err).await.expect("write error");
        let reply = client_conn.read_frame::<ErrorFrame>().await.expect("read");
        assert_eq!(reply.map(|f| f.code), Some("body_too_large".to_string()));
    }

    #[tokio::test]
    async fn raised_limits_apply_from_the_next_header() {
        let (client, server) = duplex(4096);
        let mut server = Connection::with_limits(server, Limits::pre_auth());
        let mut client = Connection::new(client);
        let hello = Hello {
            service: "files".into(),
            version: 1,
        };
        client.write_frame(&hello, &[]).await.expect("write");
        client.write_frame(&put(2), b"ok").await.expect("write");
        assert_eq!(server.read_frame::<Hello>().await.ok(), Some(Some(hello)));
        server.set_limits(Limits::default());
        assert_eq!(next(&mut server).await, Some(put(2)));
        assert_eq!(read_body(&mut server).await.ok(), Some(b"ok".to_vec()));
    }

    #[tokio::test]
    async fn a_body_splices_into_a_pipe_only_once_its_buffered_bytes_are_taken() {
        use std::os::fd::AsFd;

        use crate::net::Stream;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let mut sender = client.unwrap();
        let mut conn = Connection::new(Stream::Tcp(accepted.unwrap().0));
        let (rx, tx) = nix::unistd::pipe().unwrap();
        nix::fcntl::fcntl(
            &tx,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        // The header and the body's first bytes arrive together, the rest later.
        let whole = encoded(&put(10), b"abcdefghij");
        sender.write_all(&whole[..whole.len() - 6]).await.unwrap();
        assert!(matches!(
            next(&mut conn).await,
            Some(TestMsg::Put { size: 10, .. })
        ));
        let refused = conn.splice_body_to(tx.as_fd(), 100).await;
        assert!(
            matches!(&refused, Err(WireError::Io(e)) if e.kind() == io::ErrorKind::InvalidInput),
            "{refused:?}"
        );
        assert_eq!(conn.take_buffered_body().as_deref(), Some(&b"abcd"[..]));
        assert_eq!(conn.take_buffered_body(), None);
        sender.write_all(b"efghij").await.unwrap();
        let mut moved = 0;
        while moved < 6 {
            moved += conn.splice_body_to(tx.as_fd(), 100).await.unwrap();
        }
        assert_eq!(conn.unread_body_bytes(), 0);
        let mut got = [0u8; 6];
        assert_eq!(nix::unistd::read(&rx, &mut got).unwrap(), 6);
        assert_eq!(&got, b"efghij");
        assert_eq!(conn.splice_body_to(tx.as_fd(), 100).await.unwrap(), 0);
    }
}
