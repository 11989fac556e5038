//! Sources as per-source limits count them: an IPv4 address, an IPv6 /64 (the block one host
//! usually controls), and the local sources every local program shares.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The source `ip` counts as: itself for IPv4 (and IPv4-mapped IPv6), its /64 for IPv6.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

/// Whether `ip` is the address every local client connects from by default (`127.0.0.1`,
/// `::1`, `::ffff:127.0.0.1`): a per-source cap there would be a cap on all local clients
/// together, so per-source caps leave it out (the totals still apply).
pub(crate) fn is_local_source(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST)
        }
    }
}

/// Live connections per source, for a per-source cap. Entries exist only for sources with a
/// live connection, so the map is bounded by the connection limit.
#[derive(Debug, Clone)]
pub(crate) struct SourceCounts {
    cap: usize,
    live: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A connection's place in its source's count; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    counts: SourceCounts,
    key: IpAddr,
}

impl SourceCounts {
    /// Counts with at most `cap` (at least 1) live connections per source.
    pub(crate) fn new(cap: usize) -> Self {
        SourceCounts {
            cap: cap.max(1),
            live: Arc::default(),
        }
    }

    /// A place for a connection from `ip`, or `None` when its source is at the cap. Local
    /// sources (see [`is_local_source`]) and Unix peers (`None`) are not counted.
    pub(crate) fn enter(&self, ip: Option<IpAddr>) -> Result<Option<SourceSlot>, ()> {
        let Some(ip) = ip.filter(|ip| !is_local_source(*ip)) else {
            return Ok(None);
        };
        let key = source_key(ip);
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let count = live.entry(key).or_insert(0);
        if *count >= self.cap {
            return Err(());
        }
        *count += 1;
        Ok(Some(SourceSlot {
            counts: self.clone(),
            key,
        }))
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut live = self
            .counts
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = live.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_source_is_capped_and_freed_places_are_reused() {
        let counts = SourceCounts::new(2);
        let a = counts.enter(ip("192.0.2.1")).unwrap();
        let _b = counts.enter(ip("192.0.2.1")).unwrap();
        assert!(counts.enter(ip("192.0.2.1")).is_err());
        assert!(
            counts.enter(ip("192.0.2.2")).unwrap().is_some(),
            "others unaffected"
        );
        drop(a);
        assert!(counts.enter(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn ipv6_counts_by_64_and_local_sources_are_not_counted() {
        let counts = SourceCounts::new(1);
        let _a = counts.enter(ip("2001:db8::1")).unwrap();
        assert!(counts.enter(ip("2001:db8::2")).is_err(), "same /64");
        for local in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            for _ in 0..3 {
                assert!(counts.enter(ip(local)).unwrap().is_none(), "{local}");
            }
        }
        assert!(counts.enter(None).unwrap().is_none(), "unix peers");
        assert!(
            counts.enter(ip("127.0.0.2")).unwrap().is_some(),
            "other loopback addresses count"
        );
    }
}
