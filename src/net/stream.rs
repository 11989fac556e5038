//! Byte streams: a bound [`Listener`] (TCP or Unix) and the connected [`Stream`] it accepts or
//! a client opens, one type for both families so services never care which.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::Socket;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::net::addr::{unix_path, with_addr};
use crate::net::bind::{bind_tcp, bind_unix_stream, UnixSocketFile};
use crate::net::{AcceptOptions, Addr, BindOptions, PeerAddr};

/// A bound stream listener: TCP or Unix.
#[derive(Debug)]
pub enum Listener {
    /// TCP, with the options each accepted socket gets.
    Tcp(TcpListener, AcceptOptions),
    /// Unix stream, with its socket file (removed when the listener is dropped).
    Unix(UnixListener, Option<UnixSocketFile>),
}

impl Listener {
    /// Binds a stream listener at `addr` with `opts`.
    ///
    /// # Errors
    /// The bind error, e.g. `AddrInUse`, with the address in its message.
    pub async fn bind(addr: &Addr, opts: &BindOptions) -> io::Result<Listener> {
        let res = match addr {
            Addr::Inet(sa) => {
                bind_tcp(*sa, opts).map(|l| Listener::Tcp(l, AcceptOptions::from_bind(opts)))
            }
            Addr::Unix(path) => {
                bind_unix_stream(path, opts).map(|l| Listener::Unix(l, UnixSocketFile::bound(path)))
            }
        };
        res.map_err(|e| with_addr(e, "bind", addr))
    }

    /// The address actually bound (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l, _) => l.local_addr().map(Addr::Inet),
            Listener::Unix(l, _) => Ok(Addr::Unix(unix_path(&l.local_addr()?).unwrap_or_default())),
        }
    }

    /// Accepts one connection.
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled, no connection is lost.
    pub async fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp(l, options) => {
                let (s, peer) = l.accept().await?;
                options.apply(&s);
                Ok((Stream::Tcp(s), PeerAddr::Inet(peer)))
            }
            Listener::Unix(l, _) => {
                let (s, peer) = l.accept().await?;
                Ok((Stream::Unix(s), PeerAddr::Unix(unix_path(&peer))))
            }
        }
    }
}

/// A connected byte stream: TCP or Unix.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix stream.
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `addr` (TCP_NODELAY set on TCP).
    ///
    /// # Errors
    /// The connect error, with the address in its message.
    pub async fn connect(addr: &Addr) -> io::Result<Stream> {
        let res = match addr {
            Addr::Inet(sa) => TcpStream::connect(sa).await.map(|s| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            Addr::Unix(p) => UnixStream::connect(p).await.map(Stream::Unix),
        };
        res.map_err(|e| with_addr(e, "connect to", addr))
    }

    /// A connected pair of Unix streams, both ends as [`Stream::Unix`]: a handler tested with
    /// no network (one end is the handler's connection, the other the test's client).
    ///
    /// # Errors
    /// If the socket pair cannot be created (out of descriptors).
    pub fn pair() -> io::Result<(Stream, Stream)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Stream::Unix(a), Stream::Unix(b)))
    }

    /// Turns the stream into a blocking std file descriptor, for handing to a child process.
    pub(crate) fn into_std_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        let fd: std::os::fd::OwnedFd = match self {
            Stream::Tcp(s) => s.into_std()?.into(),
            Stream::Unix(s) => s.into_std()?.into(),
        };
        let socket = Socket::from(fd);
        socket.set_nonblocking(false)?;
        Ok(socket.into())
    }

    /// The stream off the runtime (its registration with the reactor dropped), still
    /// non-blocking: to be watched by other means and made a [`Stream`] again with
    /// [`StdStream::into_stream`].
    pub(crate) fn into_std(self) -> io::Result<StdStream> {
        Ok(match self {
            Stream::Tcp(s) => StdStream::Tcp(s.into_std()?),
            Stream::Unix(s) => StdStream::Unix(s.into_std()?),
        })
    }

    /// The local address of this stream.
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Stream::Tcp(s) => s.local_addr().map(Addr::Inet),
            Stream::Unix(s) => Ok(Addr::Unix(unix_path(&s.local_addr()?).unwrap_or_default())),
        }
    }

    /// The address of the other end.
    pub(crate) fn peer_addr(&self) -> io::Result<PeerAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(PeerAddr::Inet),
            Stream::Unix(s) => Ok(PeerAddr::Unix(unix_path(&s.peer_addr()?))),
        }
    }
}

/// A [`Stream`] off the runtime ([`Stream::into_std`]): a non-blocking socket that no task
/// waits on.
#[derive(Debug)]
pub(crate) enum StdStream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl StdStream {
    /// The stream on the current runtime again.
    ///
    /// # Errors
    /// If it cannot be registered with the reactor.
    pub(crate) fn into_stream(self) -> io::Result<Stream> {
        Ok(match self {
            StdStream::Tcp(s) => Stream::Tcp(TcpStream::from_std(s)?),
            StdStream::Unix(s) => Stream::Unix(UnixStream::from_std(s)?),
        })
    }
}

impl std::os::fd::AsFd for StdStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            StdStream::Tcp(s) => s.as_fd(),
            StdStream::Unix(s) => s.as_fd(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::Unix($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
