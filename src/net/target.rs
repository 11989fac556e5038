//! Targets as a user writes them: an [`Addr`], or a host name and port that the system
//! resolver (`/etc/hosts`, DNS) turns into addresses, including nc's two-word `HOST PORT`.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::Addr;

/// How long resolving one name may take before the command gives up.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest host name accepted (RFC 1035's 253 characters of a dotted name).
const MAX_HOST_CHARS: usize = 253;

/// What a bare port (`9000`, with no host) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarePort {
    /// A listener's port on loopback, `127.0.0.1` (sockit binds loopback unless told).
    Loopback,
    /// Refused, naming the missing host (a client has no sensible default peer).
    Refused,
}

/// A place to connect to or listen on, before name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address and port, or a Unix socket path: nothing to resolve.
    Addr(Addr),
    /// A host name for the resolver, and a port.
    Name {
        /// The name as given (`example.org`, a name from `/etc/hosts`).
        host: String,
        /// The port.
        port: u16,
    },
}

/// A target that cannot be understood; the message says what is missing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(String);

impl Target {
    /// Reads `ADDR` or nc's `HOST PORT`: `HOST:PORT`, `[IPv6]:PORT`, `unix:/path`, a name
    /// and a port as two words, and a bare `PORT` as `bare` says.
    ///
    /// # Errors
    /// A [`TargetError`] naming what is missing or malformed.
    pub fn parse(addr: &str, port: Option<&str>, bare: BarePort) -> Result<Target, TargetError> {
        let (host, port) = match port {
            Some(port) => {
                if addr.starts_with("unix:") {
                    return Err(TargetError(format!(
                        "{addr:?} is a Unix socket path: it takes no port ({port:?})"
                    )));
                }
                (addr.trim_start_matches('[').trim_end_matches(']'), port)
            }
            None => {
                if let Ok(parsed) = addr.parse::<Addr>() {
                    return Ok(Target::Addr(parsed));
                }
                if let Ok(port) = addr.parse::<u16>() {
                    return match bare {
                        BarePort::Loopback => Ok(Target::Addr(Addr::Inet(SocketAddr::new(
                            IpAddr::V4(Ipv4Addr::LOCALHOST),
                            port,
                        )))),
                        BarePort::Refused => Err(TargetError(format!(
                            "{addr:?} is a port without a host: write 127.0.0.1:{port} \
                             (or `127.0.0.1 {port}`, as nc takes it)"
                        ))),
                    };
                }
                match addr.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && !host.contains(':') => (host, port),
                    _ => {
                        return Err(TargetError(format!(
                            "invalid address {:?}: the port is missing (expected HOST:PORT, \
                             HOST PORT, [IPv6]:PORT or unix:/path)",
                            crate::text::escape_one_line(addr, MAX_HOST_CHARS)
                        )))
                    }
                }
            }
        };
        let port: u16 = port.parse().map_err(|_| {
            TargetError(format!(
                "port {:?} is not a number 0-65535",
                crate::text::escape_one_line(port, 32)
            ))
        })?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Target::Addr(Addr::Inet(SocketAddr::new(ip, port))));
        }
        if host.is_empty()
            || host.chars().count() > MAX_HOST_CHARS
            || host.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(TargetError(format!(
                "{:?} is not a host name",
                crate::text::escape_one_line(host, MAX_HOST_CHARS)
            )));
        }
        Ok(Target::Name {
            host: host.to_owned(),
            port,
        })
    }

    /// The addresses this target names, in the resolver's order (a name may have several,
    /// `::1` before `127.0.0.1` for instance); at least one.
    ///
    /// # Errors
    /// The resolver's error (`NotFound` for an unknown name), or `TimedOut` past
    /// [`RESOLVE_TIMEOUT`].
    pub async fn resolve(&self) -> io::Result<Vec<Addr>> {
        let (host, port) = match self {
            Target::Addr(addr) => return Ok(vec![addr.clone()]),
            Target::Name { host, port } => (host.as_str(), *port),
        };
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("resolving {self} took over {RESOLVE_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("cannot resolve {self}: {e}"),
                )
            })?;
        let addrs: Vec<Addr> = found.map(Addr::Inet).collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{self} has no address"),
            ));
        }
        Ok(addrs)
    }
}

impl fmt::Display for Target {
    /// The address, or the name (escaped: it may have come from a script) and port.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Name { host, port } => write!(
                f,
                "{}:{port}",
                crate::text::escape_one_line(host, MAX_HOST_CHARS)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(addr: &str, port: Option<&str>) -> Result<Target, TargetError> {
        Target::parse(addr, port, BarePort::Refused)
    }

    #[test]
    fn addresses_names_and_nc_style_pairs_parse() {
        let v4: Addr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(
            parse("127.0.0.1:80", None).unwrap(),
            Target::Addr(v4.clone())
        );
        assert_eq!(parse("127.0.0.1", Some("80")).unwrap(), Target::Addr(v4));
        assert_eq!(
            parse("::1", Some("80")).unwrap(),
            Target::Addr("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse("[::1]", Some("80")).unwrap(),
            Target::Addr("[::1]:80".parse().unwrap())
        );
        let name = Target::Name {
            host: "example.org".into(),
            port: 443,
        };
        assert_eq!(parse("example.org:443", None).unwrap(), name);
        assert_eq!(parse("example.org", Some("443")).unwrap(), name);
    }

    #[test]
    fn a_bare_port_is_loopback_for_a_listener_and_refused_for_a_client() {
        assert_eq!(
            Target::parse("9000", None, BarePort::Loopback).unwrap(),
            Target::Addr("127.0.0.1:9000".parse().unwrap())
        );
        let err = parse("9000", None).unwrap_err().to_string();
        assert!(
            err.contains("without a host") && err.contains("127.0.0.1:9000"),
            "{err}"
        );
    }

    #[test]
    fn malformed_targets_say_what_is_wrong() {
        for (addr, port, needle) in [
            ("example.org", None, "port is missing"),
            ("example.org:http", None, "not a number"),
            ("example.org", Some("99999"), "not a number"),
            ("unix:/tmp/s", Some("80"), "takes no port"),
            ("bad\x1bname", Some("80"), "not a host name"),
            ("::1", None, "port is missing"),
        ] {
            let err = parse(addr, port).unwrap_err().to_string();
            assert!(err.contains(needle), "{addr:?} {port:?}: {err}");
            assert!(!err.contains('\x1b'), "{err:?}");
        }
    }

    #[tokio::test]
    async fn localhost_resolves_through_the_system_resolver() {
        let target = parse("localhost", Some("9")).unwrap();
        assert!(matches!(target, Target::Name { .. }));
        let addrs = target.resolve().await.expect("localhost is in /etc/hosts");
        assert!(addrs.iter().all(Addr::is_local), "{addrs:?}");
    }

    #[tokio::test]
    async fn an_unknown_name_is_not_found() {
        let err = parse("no-such-host.invalid", Some("80"))
            .unwrap()
            .resolve()
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot resolve no-such-host.invalid:80"),
            "{err}"
        );
    }
}
