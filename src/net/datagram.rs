//! Datagram sockets: one [`Datagram`] type for UDP and Unix datagrams, with the peer of each
//! datagram as a [`PeerAddr`] to answer.

use std::io;

use tokio::net::{UdpSocket, UnixDatagram};

use crate::net::addr::{unix_path, with_addr};
use crate::net::bind::{bind_udp, bind_unix_datagram, UnixSocketFile};
use crate::net::{Addr, BindOptions, PeerAddr};

/// A bound datagram socket: UDP or Unix datagram.
#[derive(Debug)]
pub enum Datagram {
    /// UDP.
    Udp(UdpSocket),
    /// Unix datagram, with its socket file (removed when the socket is dropped).
    Unix(UnixDatagram, Option<UnixSocketFile>),
}

impl Datagram {
    /// Binds a datagram socket at `addr`.
    ///
    /// # Errors
    /// The bind error, with the address in its message.
    pub async fn bind(addr: &Addr, opts: &BindOptions) -> io::Result<Datagram> {
        let res = match addr {
            Addr::Inet(sa) => bind_udp(*sa, opts).map(Datagram::Udp),
            Addr::Unix(path) => bind_unix_datagram(path, opts)
                .map(|s| Datagram::Unix(s, UnixSocketFile::bound(path))),
        };
        res.map_err(|e| with_addr(e, "bind", addr))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Datagram::Udp(s) => s.local_addr().map(Addr::Inet),
            Datagram::Unix(s, _) => Ok(Addr::Unix(unix_path(&s.local_addr()?).unwrap_or_default())),
        }
    }

    /// Receives one datagram into `buf`, returning its length, whether it filled `buf`
    /// completely (so it may have been cut: size `buf` one byte past the largest datagram you
    /// accept, and a full buffer means "too long"), and its source.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled call receives nothing.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, bool, PeerAddr)> {
        let (n, peer) = match self {
            Datagram::Udp(s) => {
                let (n, sa) = s.recv_from(buf).await?;
                (n, PeerAddr::Inet(sa))
            }
            Datagram::Unix(s, _) => {
                let (n, sa) = s.recv_from(buf).await?;
                (n, PeerAddr::Unix(unix_path(&sa)))
            }
        };
        Ok((n, n == buf.len(), peer))
    }

    /// Connects the socket to `peer`: it then receives only from `peer`, and an ICMP port
    /// unreachable for what it sent comes back as `ConnectionRefused` on a later call.
    ///
    /// # Errors
    /// The connect error; a Unix peer without a path cannot be connected to.
    pub async fn connect(&self, peer: &PeerAddr) -> io::Result<()> {
        match (self, peer) {
            (Datagram::Udp(s), PeerAddr::Inet(sa)) => s.connect(sa).await,
            (Datagram::Unix(s, _), PeerAddr::Unix(Some(p))) => s.connect(p),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot connect to {peer}"),
            )),
        }
    }

    /// Sends one datagram to `peer`.
    ///
    /// # Errors
    /// The send error; a Unix peer without a path cannot be answered.
    pub async fn send_to(&self, buf: &[u8], peer: &PeerAddr) -> io::Result<usize> {
        match (self, peer) {
            (Datagram::Udp(s), PeerAddr::Inet(sa)) => s.send_to(buf, sa).await,
            (Datagram::Unix(s, _), PeerAddr::Unix(Some(p))) => s.send_to(buf, p).await,
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot reply to {peer}"),
            )),
        }
    }
}
