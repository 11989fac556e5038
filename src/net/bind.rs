//! Binding: the socket options a listener or datagram socket is bound with ([`BindOptions`]),
//! those each accepted TCP connection gets ([`AcceptOptions`]), and the socket2 calls that
//! apply them, including replacing a stale Unix socket file.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener};

use crate::net::Keepalive;

/// Default listen backlog: the kernel queue where clients wait while `max_conns` is reached.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Socket options applied when binding. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct BindOptions {
    /// SO_REUSEADDR (on by default, as Python's `allow_reuse_address` in practice).
    pub reuse_address: bool,
    /// SO_REUSEPORT, for several processes sharing one port (off by default).
    pub reuse_port: bool,
    /// Listen backlog (default [`DEFAULT_BACKLOG`]).
    pub backlog: u32,
    /// TCP_NODELAY on accepted connections (on by default: echo replies must not wait for Nagle).
    pub nodelay: bool,
    /// TCP keepalive on accepted connections (off by default; chat turns it on so a vanished
    /// peer's nick is freed).
    pub keepalive: Option<Keepalive>,
    /// Remove a stale Unix socket file before binding (only if nothing is listening on it).
    pub unlink_stale_unix: bool,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            reuse_address: true,
            reuse_port: false,
            backlog: DEFAULT_BACKLOG,
            nodelay: true,
            keepalive: None,
            unlink_stale_unix: true,
        }
    }
}

/// Options a TCP listener applies to each socket it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptOptions {
    /// TCP_NODELAY.
    pub nodelay: bool,
    /// TCP keepalive, if any.
    pub keepalive: Option<Keepalive>,
}

impl AcceptOptions {
    pub(super) fn from_bind(opts: &BindOptions) -> Self {
        AcceptOptions {
            nodelay: opts.nodelay,
            keepalive: opts.keepalive,
        }
    }

    /// Failing to set an option on a socket that may already be reset is harmless: the
    /// connection's first read or write reports it.
    pub(super) fn apply(&self, socket: &TcpStream) {
        if self.nodelay {
            let _ = socket.set_nodelay(true);
        }
        if let Some(keepalive) = &self.keepalive {
            let _ = keepalive.apply(socket);
        }
    }
}

pub(super) fn bind_tcp(sa: SocketAddr, opts: &BindOptions) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(opts.reuse_address)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if sa.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&sa.into())?;
    socket.listen(backlog(opts))?;
    TcpListener::from_std(socket.into())
}

fn backlog(opts: &BindOptions) -> i32 {
    i32::try_from(opts.backlog).unwrap_or(i32::MAX)
}

pub(super) fn bind_unix_stream(path: &Path, opts: &BindOptions) -> io::Result<UnixListener> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    bind_unix(&socket, path, opts, |p| {
        std::os::unix::net::UnixStream::connect(p).is_ok()
    })?;
    socket.listen(backlog(opts))?;
    socket.set_nonblocking(true)?;
    UnixListener::from_std(socket.into())
}

/// Binds `socket` at `path`, first removing a stale socket file that nothing answers on.
fn bind_unix(
    socket: &Socket,
    path: &Path,
    opts: &BindOptions,
    in_use: impl Fn(&Path) -> bool,
) -> io::Result<()> {
    let addr = SockAddr::unix(path)?;
    match socket.bind(&addr) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && opts.unlink_stale_unix => {
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(path)?.file_type().is_socket();
            if !is_socket || in_use(path) {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            socket.bind(&addr)
        }
        other => other,
    }
}

pub(super) fn bind_udp(sa: SocketAddr, opts: &BindOptions) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(sa), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(opts.reuse_address)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if sa.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&sa.into())?;
    UdpSocket::from_std(socket.into())
}

pub(super) fn bind_unix_datagram(path: &Path, opts: &BindOptions) -> io::Result<UnixDatagram> {
    let socket = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
    // A datagram socket cannot be probed by connecting; a datagram socket file left behind by
    // a dead process is replaced only when connecting to it is refused.
    bind_unix(&socket, path, opts, |p| {
        let probe = std::os::unix::net::UnixDatagram::unbound();
        probe.is_ok_and(|s| s.connect(p).is_ok())
    })?;
    socket.set_nonblocking(true)?;
    UnixDatagram::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Addr, Listener};

    #[tokio::test]
    async fn reuse_port_lets_two_listeners_share_a_port_and_is_off_by_default() {
        let opts = BindOptions {
            reuse_port: true,
            ..BindOptions::default()
        };
        let first = Listener::bind(&"127.0.0.1:0".parse().unwrap(), &opts)
            .await
            .unwrap();
        let addr = first.local_addr().unwrap();
        let second = Listener::bind(&addr, &opts).await;
        assert!(second.is_ok(), "{second:?}");
        let err = Listener::bind(&addr, &BindOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[tokio::test]
    async fn a_stale_unix_socket_file_is_replaced_but_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let addr = Addr::Unix(dir.path().join("s.sock"));
        let live = Listener::bind(&addr, &BindOptions::default())
            .await
            .unwrap();
        let err = Listener::bind(&addr, &BindOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(live); // the socket file stays behind, with nobody listening
        assert!(Listener::bind(&addr, &BindOptions::default()).await.is_ok());
    }
}
