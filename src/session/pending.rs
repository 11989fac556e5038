//! `Pending`: connections that have not finished their handshake, capped in total and per
//! source apart from the engine's `max_conns`, so silent or slow unauthenticated peers cannot
//! keep an authenticated client out.
//!
//! The per-source cap does not apply to `127.0.0.1`, `::1` and Unix sockets: every local
//! program shares that one source, so there a per-source cap would be a host-wide cap on
//! concurrent local clients (100 concurrent `exec run`s from one script must all get in).
//!
//! At a cap the *oldest* pending handshake is dropped to make room, rather than refusing the
//! newcomer: a client that completes its handshake within a round trip or two is never the
//! oldest for long, while a peer that holds its slot by saying nothing is the first to go.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::net::source::{is_local_source, source_key};

/// Default cap on handshakes in progress at once, per service.
pub const DEFAULT_MAX_PENDING: usize = 256;

/// Default cap on handshakes in progress at once from one source address (IPv6: one /64).
pub const DEFAULT_MAX_PENDING_PER_SOURCE: usize = 8;

/// The caps of a `Pending` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLimits {
    /// Handshakes in progress at once (at least 1).
    pub total: usize,
    /// Handshakes in progress at once from one source (at least 1).
    pub per_source: usize,
}

impl Default for PendingLimits {
    fn default() -> Self {
        PendingLimits {
            total: DEFAULT_MAX_PENDING,
            per_source: DEFAULT_MAX_PENDING_PER_SOURCE,
        }
    }
}

/// The set of handshakes in progress of one service; cheap to clone (shared).
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    inner: Arc<Mutex<Inner>>,
    limits: PendingLimits,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// Oldest first: the key is the order of arrival.
    entries: BTreeMap<u64, Entry>,
    per_source: HashMap<Source, usize>,
}

#[derive(Debug)]
struct Entry {
    source: Source,
    evict: CancellationToken,
}

/// A source as counted: an IPv4 address, an IPv6 /64, or "local" (a Unix socket peer).
type Source = Option<IpAddr>;

/// One connection's place in the set; leaving it (drop) frees the place.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    set: Pending,
    id: u64,
    evict: CancellationToken,
}

impl PendingSlot {
    /// Resolves when this handshake was dropped to make room for a newer one.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn evicted(&self) {
        self.evict.cancelled().await;
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.set.remove(self.id);
    }
}

impl Pending {
    /// An empty set with these caps.
    pub fn new(limits: PendingLimits) -> Self {
        Pending {
            inner: Arc::default(),
            limits: PendingLimits {
                total: limits.total.max(1),
                per_source: limits.per_source.max(1),
            },
        }
    }

    /// Enters a handshake from `source`, evicting the oldest one from the same source, then
    /// the oldest of all, when a cap is reached.
    pub fn enter(&self, source: Option<IpAddr>) -> PendingSlot {
        // Decided before keying: `::1` would otherwise become its /64, `::`.
        let capped = source.is_some_and(|ip| !is_local_source(ip));
        let source = source.map(source_key);
        let evict = CancellationToken::new();
        let mut inner = self.lock();
        if capped && inner.per_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source {
            let oldest = inner
                .entries
                .iter()
                .find(|(_, e)| e.source == source)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                inner.evict(id);
            }
        }
        while inner.entries.len() >= self.limits.total {
            let Some(id) = inner.entries.keys().next().copied() else {
                break;
            };
            inner.evict(id);
        }
        let id = inner.next;
        inner.next += 1;
        *inner.per_source.entry(source).or_insert(0) += 1;
        inner.entries.insert(
            id,
            Entry {
                source,
                evict: evict.clone(),
            },
        );
        drop(inner);
        PendingSlot {
            set: self.clone(),
            id,
            evict,
        }
    }

    /// Handshakes in progress now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no handshake is in progress.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, id: u64) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The set holds no invariant a panic elsewhere could break half-way.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn evict(&mut self, id: u64) {
        if let Some(entry) = self.remove(id) {
            entry.evict.cancel();
        }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(count) = self.per_source.get_mut(&entry.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_source_at_its_cap_loses_its_oldest_handshake_not_the_newest() {
        let set = Pending::new(PendingLimits {
            total: 100,
            per_source: 2,
        });
        let first = set.enter(ip("10.0.0.1"));
        let second = set.enter(ip("10.0.0.1"));
        let other = set.enter(ip("10.0.0.2"));
        let third = set.enter(ip("10.0.0.1"));
        assert!(first.evict.is_cancelled(), "the oldest of the source goes");
        assert!(!second.evict.is_cancelled());
        assert!(!third.evict.is_cancelled());
        assert!(!other.evict.is_cancelled(), "another source is untouched");
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn the_total_cap_drops_the_oldest_of_all() {
        let set = Pending::new(PendingLimits {
            total: 3,
            per_source: 3,
        });
        let slots: Vec<_> = (1..=3)
            .map(|i| set.enter(ip(&format!("10.0.0.{i}"))))
            .collect();
        let newcomer = set.enter(ip("10.0.0.9"));
        assert!(slots[0].evict.is_cancelled());
        assert!(!slots[1].evict.is_cancelled() && !slots[2].evict.is_cancelled());
        assert!(!newcomer.evict.is_cancelled());
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn a_finished_handshake_frees_its_place() {
        let set = Pending::new(PendingLimits {
            total: 1,
            per_source: 1,
        });
        let done = set.enter(ip("10.0.0.1"));
        drop(done);
        assert!(set.is_empty());
        let next = set.enter(ip("10.0.0.1"));
        assert!(!next.evict.is_cancelled());
    }

    #[test]
    fn ipv6_sources_count_by_their_64_block() {
        let set = Pending::new(PendingLimits {
            total: 100,
            per_source: 1,
        });
        let a = set.enter(ip("2001:db8::1"));
        let b = set.enter(ip("2001:db8::2"));
        assert!(a.evict.is_cancelled(), "same /64: one source");
        let c = set.enter(ip("2001:db8:0:1::1"));
        assert!(!b.evict.is_cancelled() && !c.evict.is_cancelled());
    }

    #[test]
    fn local_clients_share_only_the_total_cap() {
        let set = Pending::new(PendingLimits {
            total: 200,
            per_source: 2,
        });
        let local: Vec<_> = (0..50)
            .flat_map(|_| {
                [
                    set.enter(ip("127.0.0.1")),
                    set.enter(ip("::1")),
                    set.enter(None),
                ]
            })
            .collect();
        assert!(
            local.iter().all(|slot| !slot.evict.is_cancelled()),
            "150 local handshakes, none evicted below the total cap"
        );
        assert_eq!(set.len(), 150);
    }
}
