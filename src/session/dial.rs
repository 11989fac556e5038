//! The client's way in, shared by every framed service: connect under a deadline, wrap in TLS
//! when asked (never falling back to plaintext), and hand back one stream type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::tls::{ClientTlsStream, TlsConnector, TlsError};
use crate::net::{Addr, Stream};

/// A connected client stream: plaintext, or TLS around it.
#[derive(Debug)]
pub enum ClientStream {
    /// A plain TCP or Unix stream.
    Plain(Stream),
    /// TLS over a TCP or Unix stream.
    Tls(Box<ClientTlsStream<Stream>>),
}

/// Why a client could not get a stream to the server.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The server could not be reached (or not within the deadline).
    #[error("{0}")]
    Connect(io::Error),
    /// The TLS handshake failed (pin mismatch, untrusted certificate, a plaintext server, …).
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Connects to `addr` within `deadline`.
///
/// # Errors
/// The connect error, or `TimedOut` when the deadline passes.
pub async fn connect_stream(addr: &Addr, deadline: Duration) -> io::Result<Stream> {
    tokio::time::timeout(deadline, Stream::connect(addr))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Connects to `addr` within `deadline`, then runs the TLS handshake if `tls` is given.
///
/// # Errors
/// [`DialError::Connect`] or [`DialError::Tls`].
pub async fn dial(
    addr: &Addr,
    tls: Option<&TlsConnector>,
    deadline: Duration,
) -> Result<ClientStream, DialError> {
    let stream = connect_stream(addr, deadline)
        .await
        .map_err(DialError::Connect)?;
    match tls {
        None => Ok(ClientStream::Plain(stream)),
        Some(tls) => Ok(ClientStream::Tls(Box::new(
            tls.connect(addr, stream).await?,
        ))),
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
