//! What keeps datagram echo from being a reflector or one end of a loop: a per-source rate,
//! no answers to service ports, and a guard that stops a ping-pong with another echo.
//!
//! A datagram whose source is spoofed as another echo server's address starts a loop: each
//! server answers the other for ever (13,600 datagrams/s each way on loopback, measured with
//! two sockit servers before this guard). Off-host sources are rate-limited, which slows such
//! a loop but does not end it; loopback sources are exempt from the rate (every local client
//! shares one address). So the guard looks at what a loop is: the same few payloads coming
//! back from one address and port, again and again, without a pause. A source that sends a
//! payload it sent within its last [`LOOP_HISTORY`] datagrams, [`LOOP_STREAK`] times in a row
//! with less than [`LOOP_PAUSE`] between them, is not answered; one unanswered datagram ends
//! a loop. A client that sends different payloads (sequence numbers, typed lines) or pauses
//! is never affected.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Number of slots in the fixed-size per-source tables; sources that hash alike share one.
pub(crate) const RATE_TABLE_SLOTS: usize = 4096;

/// Source ports below this are not answered: they belong to system services (echo 7,
/// chargen 19, DNS 53, NTP 123, SNMP 161, …), which answer back.
pub const LOWEST_ANSWERED_PORT: u16 = 1024;

/// Service ports above [`LOWEST_ANSWERED_PORT`] that answer datagrams and so are not
/// answered either: SSDP, WS-Discovery, mDNS, CoAP, memcached.
pub const SERVICE_PORTS: [u16; 5] = [1900, 3702, 5353, 5683, 11211];

/// Repeats in a row (see the module docs) after which a source is taken for a loop.
pub const LOOP_STREAK: u32 = 32;

/// How many of a source's recent payloads a repeat is looked for in: a loop may carry
/// several datagrams at once.
pub const LOOP_HISTORY: usize = 4;

/// A pause this long between two datagrams of a source ends its streak: loops do not pause.
pub const LOOP_PAUSE: Duration = Duration::from_secs(1);

/// Number of slots in the loop guard's table.
pub(crate) const LOOP_TABLE_SLOTS: usize = 1024;

/// Whether `port` is a service's port, never answered by default.
pub(crate) fn is_service_port(port: u16) -> bool {
    port < LOWEST_ANSWERED_PORT || SERVICE_PORTS.contains(&port)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The tables hold counters only: a panic elsewhere leaves nothing half-updated.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A token bucket per source IP in a fixed-size table: memory does not grow with the number
/// of sources, however many an attacker spoofs.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    limit_loopback: bool,
    hasher: RandomState,
    slots: Mutex<Vec<Bucket>>,
    epoch: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Seconds since the limiter's epoch at the last refill.
    refilled: f64,
}

impl RateLimiter {
    pub(crate) fn new(rate: u32, limit_loopback: bool) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimiter {
            rate,
            limit_loopback,
            hasher: RandomState::new(),
            slots: Mutex::new(vec![
                Bucket {
                    tokens: rate,
                    refilled: 0.0
                };
                RATE_TABLE_SLOTS
            ]),
            epoch: Instant::now(),
        }
    }

    /// Takes a token for `ip`; false when its bucket is empty. The burst is one second's rate.
    pub(crate) fn allow(&self, ip: IpAddr) -> bool {
        if ip.is_loopback() && !self.limit_loopback {
            return true;
        }
        let slot = (self.hasher.hash_one(ip) as usize) % RATE_TABLE_SLOTS;
        let now = self.epoch.elapsed().as_secs_f64();
        let mut slots = lock(&self.slots);
        let bucket = &mut slots[slot];
        bucket.tokens = (bucket.tokens + (now - bucket.refilled) * self.rate).min(self.rate);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Recent payloads per source address and port, in a fixed-size table (see the module docs).
#[derive(Debug)]
pub(crate) struct LoopGuard {
    hasher: RandomState,
    slots: Mutex<Vec<Recent>>,
    epoch: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    /// Which source the slot tracks (a hash of its address and port).
    source: u64,
    /// Hashes of its last payloads, newest at `next - 1`.
    payloads: [u64; LOOP_HISTORY],
    next: usize,
    streak: u32,
    /// Time since the guard's epoch of its last datagram.
    last: Duration,
}

impl LoopGuard {
    pub(crate) fn new() -> Self {
        LoopGuard {
            hasher: RandomState::new(),
            slots: Mutex::new(vec![Recent::default(); LOOP_TABLE_SLOTS]),
            epoch: Instant::now(),
        }
    }

    /// Records `payload` from `source`; false when the source is taken for a loop.
    pub(crate) fn allow(&self, source: SocketAddr, payload: &[u8]) -> bool {
        let key = self.hasher.hash_one(source);
        let payload = self.hasher.hash_one(payload);
        let now = self.epoch.elapsed();
        let mut slots = lock(&self.slots);
        let recent = &mut slots[(key as usize) % LOOP_TABLE_SLOTS];
        if recent.source != key || now.saturating_sub(recent.last) >= LOOP_PAUSE {
            *recent = Recent {
                source: key,
                ..Recent::default()
            };
        }
        recent.last = now;
        if recent.payloads.contains(&payload) {
            recent.streak = recent.streak.saturating_add(1);
        } else {
            recent.streak = 0;
        }
        recent.payloads[recent.next] = payload;
        recent.next = (recent.next + 1) % LOOP_HISTORY;
        recent.streak < LOOP_STREAK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_caps_a_source_and_spares_others() {
        let limiter = RateLimiter::new(10, true);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..100).filter(|_| limiter.allow(a)).count();
        assert!((10..=11).contains(&allowed), "allowed {allowed}");
        let exempt = RateLimiter::new(10, false);
        assert!((0..100).all(|_| exempt.allow("127.0.0.1".parse().unwrap())));
    }

    #[test]
    fn the_same_payloads_bouncing_back_are_cut_off() {
        let guard = LoopGuard::new();
        let echo: SocketAddr = "127.0.0.1:7007".parse().unwrap();
        // Two datagrams in flight, as a loop started by two spoofed packets carries.
        let answered = (0..1000)
            .take_while(|i| guard.allow(echo, if i % 2 == 0 { b"ping" } else { b"pong" }))
            .count();
        // The first (new), then repeats until the streak reaches its limit.
        assert_eq!(answered, LOOP_STREAK as usize + 1);
        // Another source is not affected.
        let other: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert!(guard.allow(other, b"ping"));
    }

    #[test]
    fn a_client_with_fresh_payloads_is_never_cut_off() {
        let guard = LoopGuard::new();
        let client: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert!((0u32..10_000).all(|seq| guard.allow(client, &seq.to_be_bytes())));
    }

    #[test]
    fn service_ports_are_recognised() {
        for port in [7, 19, 53, 123, 161, 1023, 1900, 5353, 11211] {
            assert!(is_service_port(port), "{port}");
        }
        for port in [1024, 7007, 40000, 65535] {
            assert!(!is_service_port(port), "{port}");
        }
    }
}
