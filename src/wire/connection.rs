//! `Connection`: typed frame reads and writes over any async byte stream, with bounded buffering.
//! The type and its buffers live here; reading frames is in `read`, writing them in `write`.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::FrameDecoder;
use super::Limits;

mod read;
mod write;

/// Read buffer size at start and per growth step; headers reserve up to their (capped) length.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Below this much free space the read buffer grows by [`READ_BUFFER_BYTES`] before a read.
const MIN_READ_SPARE_BYTES: usize = 1024;

/// Largest read while inside a body: big bodies are read in steps this size rather than
/// [`READ_BUFFER_BYTES`], so bulk data costs few syscalls while memory stays bounded.
const BODY_READ_BYTES: usize = 256 * 1024;

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
    pub(crate) fn with_limits(stream: S, limits: Limits) -> Self {
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
    pub(crate) fn set_read_buffer_bytes(&mut self, bytes: usize) {
        self.read_step = bytes.max(READ_BUFFER_BYTES);
    }

    /// Replaces the read limits, e.g. after authentication; they apply from the next header.
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.decoder.set_limits(limits);
    }

    /// The read limits in force.
    pub fn limits(&self) -> Limits {
        self.decoder.limits()
    }

    /// How many bytes one read may fill (see [`set_read_buffer_bytes`](Self::set_read_buffer_bytes)).
    pub(crate) fn read_buffer_bytes(&self) -> usize {
        self.read_step
    }

    /// Gives back the stream and the bytes read past the last decoded item, e.g. to switch the
    /// stream from framed to raw. If called mid-frame, the bytes are the rest of that frame.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.read_buf)
    }

    /// The same connection over `f(stream)`, its buffers and framing state kept: e.g. to box
    /// the stream once a handshake on the concrete type is done.
    pub(crate) fn map_stream<T>(self, f: impl FnOnce(S) -> T) -> Connection<T> {
        Connection {
            stream: f(self.stream),
            read_buf: self.read_buf,
            decoder: self.decoder,
            write_buf: self.write_buf,
            write_remaining: self.write_remaining,
            read_step: self.read_step,
        }
    }

    /// The underlying stream.
    pub(crate) fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably; reading from it directly desynchronises the framing.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use tokio::io::{duplex, AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::wire::test_support::{encoded, put, read_body, reader_of, TestMsg};
    use crate::wire::{ErrorFrame, Hello, WireError};

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
