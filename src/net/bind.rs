//! Binding: the socket options a listener or datagram socket is bound with ([`BindOptions`]),
//! those each accepted TCP connection gets ([`AcceptOptions`]), and the socket2 calls that
//! apply them, including replacing a stale Unix socket file.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    bind_unix(&socket, path, opts)?;
    socket.listen(backlog(opts))?;
    socket.set_nonblocking(true)?;
    UnixListener::from_std(socket.into())
}

/// A bound Unix socket's file, removed when this is dropped if it is still the one bound
/// (same device and inode), so a listener leaves no stale file behind and never removes a
/// newer one.
#[derive(Debug)]
pub struct UnixSocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl UnixSocketFile {
    /// Remembers the socket file just bound at `path`; `None` if it cannot be read.
    pub(crate) fn bound(path: &Path) -> Option<UnixSocketFile> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(UnixSocketFile {
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
        })
    }
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let same = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.id);
        if same {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether a socket is bound at `path` now, read from `/proc/net/unix` without connecting
/// to it: a connection would be taken by a one-shot listener (`nc -lU`, `sockit listen`) and
/// start a `--exec` command for nobody. When the table cannot be read, or lists the name
/// with a relative path (bound from another directory), the socket counts as live: the file
/// is left alone and the bind fails with "address in use".
fn unix_socket_is_live(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return true;
    };
    let absolute = std::path::absolute(path).ok();
    let name = path.file_name();
    table.lines().skip(1).any(|line| {
        // The path is the eighth column, when the socket has one.
        let Some(bound) = line.split_whitespace().nth(7) else {
            return false;
        };
        let bound = Path::new(bound);
        if bound.is_absolute() {
            Some(bound) == absolute.as_deref()
        } else {
            bound.file_name() == name
        }
    })
}

/// Binds `socket` at `path`, first removing a stale socket file (one no socket is bound to).
fn bind_unix(socket: &Socket, path: &Path, opts: &BindOptions) -> io::Result<()> {
    let addr = SockAddr::unix(path)?;
    match socket.bind(&addr) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && opts.unlink_stale_unix => {
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(path)?.file_type().is_socket();
            if !is_socket || unix_socket_is_live(path) {
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
    bind_unix(&socket, path, opts)?;
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
        let path = dir.path().join("s.sock");
        drop(live);
        assert!(!path.exists(), "a listener removes its socket file");
        // A file left by a process that died (std leaves it): replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let again = Listener::bind(&addr, &BindOptions::default())
            .await
            .unwrap();
        // A newer socket at the path is not removed by an older listener's drop.
        std::fs::remove_file(&path).unwrap();
        let newer = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(again);
        assert!(path.exists(), "another socket's file was removed");
        drop(newer);
    }
}
