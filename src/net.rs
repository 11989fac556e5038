//! Addresses, binding and connecting: TCP (v4/v6), UDP, Unix stream and datagram sockets, their
//! socket options (through socket2, and the receive low-water mark in [`lowat`]), the allow/deny
//! address lists, the TLS wrap ([`tls`]) and zero-copy writes from a pipe ([`splice`]).

mod keepalive;
pub mod lowat;
pub mod splice;
pub mod tls;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use ipnet::IpNet;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream};

pub use keepalive::{Keepalive, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_RETRIES};

/// Default listen backlog: the kernel queue where clients wait while `max_conns` is reached.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Where a socket lives: `127.0.0.1:9000`, `[::1]:9000`, `localhost:9000` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// An IP socket address (TCP or UDP, chosen by the caller).
    Inet(SocketAddr),
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

/// An address string that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("invalid address {input:?}: {reason} (expected HOST:PORT, [IPv6]:PORT or unix:/path)")]
pub struct AddrParseError {
    input: String,
    reason: &'static str,
}

impl From<AddrParseError> for io::Error {
    /// An address that does not parse is invalid input, so `?` works in functions returning
    /// `io::Result`.
    fn from(e: AddrParseError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

impl FromStr for Addr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| AddrParseError {
            input: s.to_string(),
            reason,
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(err("empty unix socket path"));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Addr::Inet(sa));
        }
        // `localhost:PORT` and `:PORT` are common enough to accept without DNS.
        let (host, port) = s.rsplit_once(':').ok_or_else(|| err("missing port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| err("port is not a number 0-65535"))?;
        let ip: IpAddr = match host {
            "" | "localhost" => IpAddr::from([127, 0, 0, 1]),
            _ => return Err(err("host must be an IP address or localhost")),
        };
        Ok(Addr::Inet(SocketAddr::new(ip, port)))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(sa) => write!(f, "{sa}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Addr {
    /// True for loopback IPs and for Unix sockets (which never leave the host).
    pub fn is_local(&self) -> bool {
        match self {
            Addr::Inet(sa) => sa.ip().is_loopback(),
            Addr::Unix(_) => true,
        }
    }

    /// The IP address, if this is an IP socket address.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Addr::Inet(sa) => Some(sa.ip()),
            Addr::Unix(_) => None,
        }
    }
}

/// The peer of an accepted connection or a received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    /// An IP peer.
    Inet(SocketAddr),
    /// A Unix peer; unnamed peers (the usual case) have no path.
    Unix(Option<PathBuf>),
}

impl PeerAddr {
    /// The peer's IP, if any (Unix peers have none and pass IP-based access lists).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            PeerAddr::Inet(sa) => Some(sa.ip()),
            PeerAddr::Unix(_) => None,
        }
    }
}

/// The longest Unix socket path (`sun_path` on Linux).
const UNIX_PATH_MAX_BYTES: usize = 108;

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Inet(sa) => write!(f, "{sa}"),
            // The peer chose this path: escaped, as it reaches terminals and logs.
            PeerAddr::Unix(Some(p)) => write!(
                f,
                "unix:{}",
                crate::text::escape_one_line(&p.to_string_lossy(), UNIX_PATH_MAX_BYTES)
            ),
            PeerAddr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

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
    fn from_bind(opts: &BindOptions) -> Self {
        AcceptOptions {
            nodelay: opts.nodelay,
            keepalive: opts.keepalive,
        }
    }

    /// Failing to set an option on a socket that may already be reset is harmless: the
    /// connection's first read or write reports it.
    fn apply(&self, socket: &TcpStream) {
        if self.nodelay {
            let _ = socket.set_nodelay(true);
        }
        if let Some(keepalive) = &self.keepalive {
            let _ = keepalive.apply(socket);
        }
    }
}

/// A bound stream listener: TCP or Unix.
#[derive(Debug)]
pub enum Listener {
    /// TCP, with the options each accepted socket gets.
    Tcp(TcpListener, AcceptOptions),
    /// Unix stream.
    Unix(UnixListener),
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
            Addr::Unix(path) => bind_unix_stream(path, opts).map(Listener::Unix),
        };
        res.map_err(|e| with_addr(e, "bind", addr))
    }

    /// The address actually bound (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l, _) => l.local_addr().map(Addr::Inet),
            Listener::Unix(l) => Ok(Addr::Unix(unix_path(&l.local_addr()?).unwrap_or_default())),
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
            Listener::Unix(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Stream::Unix(s), PeerAddr::Unix(unix_path(&peer))))
            }
        }
    }
}

/// The path of a Unix socket address; unnamed and abstract sockets have none.
fn unix_path(sa: &tokio::net::unix::SocketAddr) -> Option<PathBuf> {
    sa.as_pathname().map(Path::to_path_buf)
}

fn with_addr(e: io::Error, op: &str, addr: &Addr) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {op} {addr}: {e}"))
}

fn bind_tcp(sa: SocketAddr, opts: &BindOptions) -> io::Result<TcpListener> {
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

fn bind_unix_stream(path: &Path, opts: &BindOptions) -> io::Result<UnixListener> {
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
    pub fn into_std_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        let fd: std::os::fd::OwnedFd = match self {
            Stream::Tcp(s) => s.into_std()?.into(),
            Stream::Unix(s) => s.into_std()?.into(),
        };
        let socket = Socket::from(fd);
        socket.set_nonblocking(false)?;
        Ok(socket.into())
    }

    /// The local address of this stream.
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Stream::Tcp(s) => s.local_addr().map(Addr::Inet),
            Stream::Unix(s) => Ok(Addr::Unix(unix_path(&s.local_addr()?).unwrap_or_default())),
        }
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(PeerAddr::Inet),
            Stream::Unix(s) => Ok(PeerAddr::Unix(unix_path(&s.peer_addr()?))),
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

/// A bound datagram socket: UDP or Unix datagram.
#[derive(Debug)]
pub enum Datagram {
    /// UDP.
    Udp(UdpSocket),
    /// Unix datagram.
    Unix(UnixDatagram),
}

impl Datagram {
    /// Binds a datagram socket at `addr`.
    ///
    /// # Errors
    /// The bind error, with the address in its message.
    pub async fn bind(addr: &Addr, opts: &BindOptions) -> io::Result<Datagram> {
        let res = match addr {
            Addr::Inet(sa) => bind_udp(*sa, opts).map(Datagram::Udp),
            Addr::Unix(path) => bind_unix_datagram(path, opts).map(Datagram::Unix),
        };
        res.map_err(|e| with_addr(e, "bind", addr))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Datagram::Udp(s) => s.local_addr().map(Addr::Inet),
            Datagram::Unix(s) => Ok(Addr::Unix(unix_path(&s.local_addr()?).unwrap_or_default())),
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
            Datagram::Unix(s) => {
                let (n, sa) = s.recv_from(buf).await?;
                (n, PeerAddr::Unix(unix_path(&sa)))
            }
        };
        Ok((n, n == buf.len(), peer))
    }

    /// Sends one datagram to `peer`.
    ///
    /// # Errors
    /// The send error; a Unix peer without a path cannot be answered.
    pub async fn send_to(&self, buf: &[u8], peer: &PeerAddr) -> io::Result<usize> {
        match (self, peer) {
            (Datagram::Udp(s), PeerAddr::Inet(sa)) => s.send_to(buf, sa).await,
            (Datagram::Unix(s), PeerAddr::Unix(Some(p))) => s.send_to(buf, p).await,
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot reply to {peer}"),
            )),
        }
    }
}

fn bind_udp(sa: SocketAddr, opts: &BindOptions) -> io::Result<UdpSocket> {
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

fn bind_unix_datagram(path: &Path, opts: &BindOptions) -> io::Result<UnixDatagram> {
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

/// Which peers may connect: `deny` wins over `allow`; an empty `allow` allows everyone.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// Networks allowed (empty: all).
    pub allow: Vec<IpNet>,
    /// Networks denied, checked first.
    pub deny: Vec<IpNet>,
}

impl Acl {
    /// Whether `peer` passes. Unix peers have no IP and always pass.
    pub fn permits(&self, peer: &PeerAddr) -> bool {
        let Some(ip) = peer.ip() else { return true };
        let ip = canonical_ip(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// True when nothing is restricted.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) are matched as the IPv4 address they are.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses a CIDR (`10.0.0.0/8`) or a bare IP (`10.1.2.3`, taken as a /32 or /128).
///
/// # Errors
/// A message naming the bad input.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("invalid network {s:?}: expected CIDR like 10.0.0.0/8 or an IP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_by_syntax() {
        assert_eq!(
            "127.0.0.1:9000".parse::<Addr>().unwrap(),
            Addr::Inet("127.0.0.1:9000".parse().unwrap())
        );
        assert_eq!(
            "[::1]:9000".parse::<Addr>().unwrap(),
            Addr::Inet("[::1]:9000".parse().unwrap())
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Addr>().unwrap(),
            Addr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            "localhost:80".parse::<Addr>().unwrap(),
            Addr::Inet("127.0.0.1:80".parse().unwrap())
        );
        for bad in ["", "unix:", "9000", "host:1", "1.2.3.4:99999", "[::1]"] {
            assert!(bad.parse::<Addr>().is_err(), "{bad:?} should not parse");
        }
    }

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

    #[test]
    fn deny_wins_over_allow() {
        let acl = Acl {
            allow: vec![parse_net("127.0.0.0/8").unwrap()],
            deny: vec![parse_net("127.0.0.2").unwrap()],
        };
        let peer = |s: &str| PeerAddr::Inet(s.parse().unwrap());
        assert!(acl.permits(&peer("127.0.0.1:5")));
        assert!(!acl.permits(&peer("127.0.0.2:5")));
        assert!(!acl.permits(&peer("10.0.0.1:5")));
        assert!(!acl.permits(&peer("[::ffff:127.0.0.2]:5")));
        assert!(acl.permits(&PeerAddr::Unix(None)));
        assert!(Acl::default().permits(&peer("10.0.0.1:5")));
    }

    #[test]
    fn a_unix_peer_path_is_shown_escaped() {
        let planted = PeerAddr::Unix(Some(PathBuf::from("/tmp/a\x1b[31m\nfake log line")));
        let shown = planted.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "unix:/tmp/a\\x1b[31m\\x0afake log line");
    }
}
