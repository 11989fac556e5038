//! Addresses: where a socket lives ([`Addr`], parsed from the command line's `HOST:PORT` or
//! `unix:/path`) and who is on the other end ([`PeerAddr`]).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

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

/// The path of a Unix socket address; unnamed and abstract sockets have none.
pub(super) fn unix_path(sa: &tokio::net::unix::SocketAddr) -> Option<PathBuf> {
    sa.as_pathname().map(Path::to_path_buf)
}

/// Names the address in a bind or connect error: the bare OS error does not say which one.
pub(super) fn with_addr(e: io::Error, op: &str, addr: &Addr) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {op} {addr}: {e}"))
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

    #[test]
    fn a_unix_peer_path_is_shown_escaped() {
        let planted = PeerAddr::Unix(Some(PathBuf::from("/tmp/a\x1b[31m\nfake log line")));
        let shown = planted.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "unix:/tmp/a\\x1b[31m\\x0afake log line");
    }
}
