//! A client's `ADDR` as typed: an address (`127.0.0.1:7009`, `[::1]:7009`, `localhost:7009`,
//! `unix:/path`) or a host name and port for the system resolver (`/etc/hosts`, then DNS),
//! as `connect` takes it. Every client command (`exec`, `put`/`get`/`ls`/`send`, `chat join`,
//! `bench`) reads its peer this way, so a name works wherever an address does.

use std::fmt;
use std::str::FromStr;

use sockit::net::{Addr, BarePort, Target, TargetError};

/// A peer to connect to, before name resolution.
#[derive(Debug, Clone)]
pub struct Peer(Target, Option<String>);

impl FromStr for Peer {
    type Err = TargetError;

    /// `HOST:PORT`, `[IPv6]:PORT` or `unix:/path`; a bare port is refused, naming the host
    /// it lacks (a client has no sensible default peer).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let target = Target::parse(s, None, BarePort::Refused)?;
        // `localhost:PORT` parses straight to loopback, but it was typed as a name.
        let host = match &target {
            Target::Name { host, .. } => Some(host.clone()),
            Target::Addr(_) if s.starts_with("localhost:") => Some("localhost".to_owned()),
            Target::Addr(_) => None,
        };
        Ok(Peer(target, host))
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Peer {
    /// The host name as typed, for a peer given by name (`None` for an address).
    pub fn host_name(&self) -> Option<&str> {
        self.1.as_deref()
    }

    /// The address to connect to: the address itself, or the first one the resolver gives
    /// for the name (within [`sockit::net::RESOLVE_TIMEOUT`]).
    ///
    /// # Errors
    /// A name that does not resolve, or took too long; the message names it.
    pub async fn resolve(&self) -> anyhow::Result<Addr> {
        let mut addrs = self.0.resolve().await?;
        // `Target::resolve` never returns an empty list without an error.
        Ok(addrs.swap_remove(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_is_taken_as_it_is_and_localhost_resolves_to_loopback() {
        let peer: Peer = "127.0.0.1:7009".parse().unwrap();
        assert_eq!(peer.resolve().await.unwrap().to_string(), "127.0.0.1:7009");
        let peer: Peer = "localhost:7009".parse().unwrap();
        let addr = peer.resolve().await.unwrap();
        assert!(addr.ip().is_some_and(|ip| ip.is_loopback()), "{addr}");
        let peer: Peer = "unix:/tmp/x.sock".parse().unwrap();
        assert_eq!(
            peer.resolve().await.unwrap().to_string(),
            "unix:/tmp/x.sock"
        );
    }

    #[test]
    fn the_host_name_is_kept_as_typed_and_an_address_has_none() {
        let name = |s: &str| s.parse::<Peer>().unwrap().host_name().map(str::to_owned);
        assert_eq!(
            name("files.example.org:7010").as_deref(),
            Some("files.example.org")
        );
        assert_eq!(name("localhost:7010").as_deref(), Some("localhost"));
        assert_eq!(name("127.0.0.1:7010"), None);
        assert_eq!(name("[::1]:7010"), None);
        assert_eq!(name("unix:/tmp/x.sock"), None);
    }

    #[test]
    fn a_bare_port_or_a_missing_port_is_refused_naming_what_is_missing() {
        let err = "7009".parse::<Peer>().unwrap_err().to_string();
        assert!(err.contains("host"), "{err}");
        assert!("example:".parse::<Peer>().is_err());
        assert!("example:notaport".parse::<Peer>().is_err());
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_says_which() {
        // `.invalid` never resolves (RFC 2606).
        let peer: Peer = "no-such-host.invalid:7009".parse().unwrap();
        let err = peer.resolve().await.unwrap_err().to_string();
        assert!(err.contains("no-such-host.invalid"), "{err}");
    }
}
