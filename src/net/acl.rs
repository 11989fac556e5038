//! Access lists: which peer IPs may connect ([`Acl`]), built from CIDRs or bare IPs
//! ([`parse_net`]).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::net::PeerAddr;

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
    pub(crate) fn permits(&self, peer: &PeerAddr) -> bool {
        let Some(ip) = peer.ip() else { return true };
        let ip = canonical_ip(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
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
}
