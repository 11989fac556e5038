//! Telling TLS from plaintext by a peer's first bytes, so a mismatch (`--tls` on one side
//! only) is reported as such instead of as whatever the other protocol's parser made of it.
//!
//! ```text
//! TLS record:        type (0x14..=0x17) | 0x03 | minor (0x00..=0x04) | length (2) | …
//!   ClientHello:     0x16 0x03 0x01 …   (a handshake record)
//!   alert:           0x15 0x03 0x03 …
//! sockit frame:      header length, u32 big-endian: 0x00 0x00 … for any header under 64 KiB
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How many first bytes [`Sniffer`] keeps, and the most any check here looks at.
pub const SNIFF_BYTES: usize = 3;

/// TLS record content types: change_cipher_spec, alert, handshake, application_data.
const TLS_CONTENT_TYPES: std::ops::RangeInclusive<u8> = 0x14..=0x17;
/// The content type of a handshake record, which every ClientHello is.
const TLS_HANDSHAKE: u8 = 0x16;
/// Every TLS (and SSL 3.0) record version is 3.x.
const TLS_MAJOR_VERSION: u8 = 0x03;
/// Highest record minor version seen in the field (TLS 1.3 still writes 0x03 0x03).
const TLS_MAX_MINOR_VERSION: u8 = 0x04;

/// Whether `first` (a peer's first bytes) starts like a TLS record: any record, so it matches
/// a server's alert as well as its ServerHello. Needs [`SNIFF_BYTES`] bytes; fewer is `false`.
pub(crate) fn looks_like_tls(first: &[u8]) -> bool {
    match first {
        [kind, major, minor, ..] => {
            TLS_CONTENT_TYPES.contains(kind)
                && *major == TLS_MAJOR_VERSION
                && *minor <= TLS_MAX_MINOR_VERSION
        }
        _ => false,
    }
}

/// Whether `first` starts like a TLS ClientHello: what a client sends first.
pub(crate) fn looks_like_client_hello(first: &[u8]) -> bool {
    first.first() == Some(&TLS_HANDSHAKE) && looks_like_tls(first)
}

/// A stream that remembers the first [`SNIFF_BYTES`] bytes read from it, so a failed TLS
/// handshake can tell "not TLS at all" from a TLS-level refusal. Reads and writes pass through.
#[derive(Debug)]
pub struct Sniffer<S> {
    inner: S,
    first: [u8; SNIFF_BYTES],
    seen: usize,
}

impl<S> Sniffer<S> {
    /// Wraps `inner`, having seen nothing yet.
    pub fn new(inner: S) -> Self {
        Sniffer {
            inner,
            first: [0; SNIFF_BYTES],
            seen: 0,
        }
    }

    /// The first bytes read through this stream (up to [`SNIFF_BYTES`]).
    pub(crate) fn first_bytes(&self) -> &[u8] {
        &self.first[..self.seen]
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffer<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.seen < SNIFF_BYTES {
            let fresh = buf.filled().get(before..).unwrap_or_default();
            let take = fresh.len().min(SNIFF_BYTES - this.seen);
            this.first[this.seen..this.seen + take].copy_from_slice(&fresh[..take]);
            this.seen += take;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffer<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn tls_records_are_recognised_by_type_and_version() {
        assert!(
            looks_like_tls(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            "ClientHello"
        );
        assert!(looks_like_tls(&[0x15, 0x03, 0x03, 0x00, 0x02]), "alert");
        assert!(looks_like_tls(&[0x17, 0x03, 0x03]), "application data");
        assert!(looks_like_client_hello(&[0x16, 0x03, 0x01]));
        assert!(!looks_like_client_hello(&[0x15, 0x03, 0x03]), "an alert");
    }

    #[test]
    fn plaintext_frames_and_short_input_are_not_tls() {
        let hello_frame = b"\0\0\0\x2a{\"type\":\"hello\"";
        assert!(!looks_like_tls(hello_frame));
        assert!(!looks_like_client_hello(hello_frame));
        assert!(!looks_like_tls(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_tls(&[0x16, 0x03]), "too short to say");
        assert!(!looks_like_tls(&[]));
        assert!(!looks_like_tls(&[0x16, 0x02, 0x00]), "not version 3.x");
        assert!(
            !looks_like_tls(&[0x16, 0x03, 0x05]),
            "unknown minor version"
        );
        assert!(!looks_like_tls(&[0x18, 0x03, 0x03]), "unknown content type");
    }

    #[tokio::test]
    async fn a_sniffer_keeps_the_first_bytes_across_split_reads() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut sniffer = Sniffer::new(far);
        assert_eq!(sniffer.first_bytes(), b"");
        near.write_all(b"a").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(sniffer.read(&mut buf).await.unwrap(), 1);
        assert_eq!(sniffer.first_bytes(), b"a");
        near.write_all(b"bcdef").await.unwrap();
        let mut rest = [0u8; 5];
        sniffer.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"bcdef", "reads pass through untouched");
        assert_eq!(sniffer.first_bytes(), b"abc");
        sniffer.write_all(b"out").await.unwrap();
        let mut out = [0u8; 3];
        near.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"out");
    }
}
