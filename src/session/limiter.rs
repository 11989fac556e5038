//! `AuthLimiter`: per-source delays after failed authentication, in a fixed-size shared table.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Slots in the penalty table: its memory is `8 × slots` bytes whatever the number of sources.
pub(crate) const PENALTY_SLOTS: usize = 4096;

/// Delay imposed after a source's first failure; each further failure doubles it.
pub(crate) const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(100);

/// Largest delay a source can accumulate.
pub(crate) const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);

/// A source with no failure for this long starts afresh.
pub(crate) const PENALTY_QUIET_PERIOD: Duration = Duration::from_secs(60);

/// Recent failures after which a source is refused at connect until they are forgotten,
/// instead of only being slowed down: a typo or two cost a short wait, a guesser gets no more
/// attempts for a while.
pub const REFUSE_AFTER_FAILURES: u64 = 3;

/// Failure counts saturate here: by then the delay has long reached its cap.
const MAX_COUNTED_FAILURES: u64 = 63;

/// Low bits of a slot hold the failure count; the rest, the time of the last failure.
const COUNT_BITS: u32 = 8;

/// Tuning of an [`AuthLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PenaltyConfig {
    /// Slots in the table (at least 1); sources hashing to the same slot share a penalty.
    pub slots: usize,
    /// Delay after the first failure.
    pub first_delay: Duration,
    /// Cap on the delay.
    pub max_delay: Duration,
    /// Quiet time after which a source's failures are forgotten.
    pub quiet_period: Duration,
}

impl Default for PenaltyConfig {
    fn default() -> Self {
        PenaltyConfig {
            slots: PENALTY_SLOTS,
            first_delay: FIRST_FAILURE_DELAY,
            max_delay: MAX_FAILURE_DELAY,
            quiet_period: PENALTY_QUIET_PERIOD,
        }
    }
}

/// Failed-attempt delays per source address, shared by all connections of a service (wrap it
/// in an `Arc`).
///
/// Sources are hashed with a per-limiter random key into a fixed table, so memory is bounded
/// and an attacker cannot aim collisions at someone else's slot. IPv6 sources are keyed by
/// their /64, the block one host usually controls. A slot is one atomic word: when nobody
/// fails, checking a source is a hash and a load.
pub struct AuthLimiter {
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
    epoch: Instant,
    config: PenaltyConfig,
}

impl AuthLimiter {
    /// A limiter with the default `PenaltyConfig`.
    pub fn new() -> Self {
        AuthLimiter::with_config(PenaltyConfig::default())
    }

    /// A limiter with the given tuning.
    pub(crate) fn with_config(config: PenaltyConfig) -> Self {
        let slots = (0..config.slots.max(1))
            .map(|_| AtomicU64::new(0))
            .collect();
        AuthLimiter {
            slots,
            hasher: RandomState::new(),
            epoch: Instant::now(),
            config,
        }
    }

    /// The delay owed by `source` before its next attempt is read; zero for a clean source.
    /// `None` (e.g. a Unix socket peer) is one shared source.
    pub(crate) fn penalty(&self, source: Option<IpAddr>) -> Duration {
        let slot = self.slot(source).load(Ordering::Relaxed);
        self.delay_for(self.live_failures(slot, self.now_ms()))
    }

    /// How much longer `source` is refused at connect: once it has [`REFUSE_AFTER_FAILURES`]
    /// recent failures, until its failures are forgotten (the quiet period after the last
    /// one; refused connections do not extend it); `None` when it may try.
    pub fn refusal(&self, source: Option<IpAddr>) -> Option<Duration> {
        let slot = self.slot(source).load(Ordering::Relaxed);
        let now_ms = self.now_ms();
        if self.live_failures(slot, now_ms) < REFUSE_AFTER_FAILURES {
            return None;
        }
        let last_ms = (slot >> COUNT_BITS).saturating_sub(1);
        let since = Duration::from_millis(now_ms.saturating_sub(last_ms));
        let left = self.config.quiet_period.saturating_sub(since);
        (!left.is_zero()).then_some(left)
    }

    /// Counts a failure for `source` and returns the delay to wait before answering it.
    pub(crate) fn record_failure(&self, source: Option<IpAddr>) -> Duration {
        let now_ms = self.now_ms();
        let mut failures = 0;
        let update = self
            .slot(source)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |slot| {
                failures = (self.live_failures(slot, now_ms) + 1).min(MAX_COUNTED_FAILURES);
                Some(((now_ms + 1) << COUNT_BITS) | failures)
            });
        debug_assert!(update.is_ok(), "the closure always returns Some");
        self.delay_for(failures)
    }

    /// Forgets the failures of `source` after it authenticated.
    pub(crate) fn record_success(&self, source: Option<IpAddr>) {
        let slot = self.slot(source);
        // Only write when there is something to clear: successes stay read-only.
        if slot.load(Ordering::Relaxed) != 0 {
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// Number of slots in the table; it never grows.
    #[cfg(test)]
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, source: Option<IpAddr>) -> &AtomicU64 {
        let index = self.hasher.hash_one(source_key(source)) % self.slots.len() as u64;
        // The modulo keeps the index in range; `usize` holds any index of a slice.
        &self.slots[index as usize]
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX >> COUNT_BITS)
    }

    /// Failures recorded in `slot` that are recent enough to count at `now_ms`.
    fn live_failures(&self, slot: u64, now_ms: u64) -> u64 {
        if slot == 0 {
            return 0;
        }
        let last_ms = (slot >> COUNT_BITS).saturating_sub(1);
        let quiet_ms = u64::try_from(self.config.quiet_period.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(last_ms) >= quiet_ms {
            return 0;
        }
        slot & ((1 << COUNT_BITS) - 1)
    }

    fn delay_for(&self, failures: u64) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(31);
        self.config
            .first_delay
            .saturating_mul(1 << doublings)
            .min(self.config.max_delay)
    }
}

impl Default for AuthLimiter {
    fn default() -> Self {
        AuthLimiter::new()
    }
}

impl fmt::Debug for AuthLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLimiter")
            .field("slots", &self.slots.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a source is keyed by: the IPv4 address (also when IPv4-mapped), or the IPv6 /64.
fn source_key(source: Option<IpAddr>) -> (u8, u128) {
    match source.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => (4, u128::from(u32::from(v4))),
        Some(IpAddr::V6(v6)) => (6, u128::from(v6) >> 64),
        None => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_source_owes_no_delay() {
        let limiter = AuthLimiter::new();
        assert_eq!(limiter.penalty(ip(1)), Duration::ZERO);
        limiter.record_success(ip(1));
        assert_eq!(limiter.penalty(ip(1)), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn each_failure_doubles_the_delay_up_to_the_cap() {
        let limiter = AuthLimiter::new();
        let delays: Vec<Duration> = (0..10).map(|_| limiter.record_failure(ip(1))).collect();
        let expected = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000].map(ms);
        assert_eq!(delays, expected);
        assert_eq!(limiter.penalty(ip(1)), MAX_FAILURE_DELAY);
        for _ in 0..1000 {
            assert!(limiter.record_failure(ip(1)) <= MAX_FAILURE_DELAY);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_penalty_belongs_to_its_source_only() {
        let limiter = AuthLimiter::new();
        limiter.record_failure(ip(1));
        limiter.record_failure(ip(1));
        assert_eq!(limiter.penalty(ip(1)), ms(200));
        // Another source may share the slot by chance (1 in 4096); pick one that does not.
        let other = (2..=255)
            .map(ip)
            .find(|o| !std::ptr::eq(limiter.slot(*o), limiter.slot(ip(1))))
            .expect("a source in another slot");
        assert_eq!(limiter.penalty(other), Duration::ZERO);
        assert_eq!(limiter.record_failure(other), FIRST_FAILURE_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn success_and_a_quiet_period_reset_the_delay() {
        let limiter = AuthLimiter::new();
        limiter.record_failure(ip(1));
        limiter.record_failure(ip(1));
        limiter.record_success(ip(1));
        assert_eq!(limiter.penalty(ip(1)), Duration::ZERO);
        limiter.record_failure(ip(1));
        limiter.record_failure(ip(1));
        tokio::time::advance(PENALTY_QUIET_PERIOD - ms(1)).await;
        assert_eq!(limiter.penalty(ip(1)), ms(200));
        tokio::time::advance(ms(1)).await;
        assert_eq!(limiter.penalty(ip(1)), Duration::ZERO);
        assert_eq!(limiter.record_failure(ip(1)), FIRST_FAILURE_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_is_refused_after_repeated_failures_until_they_are_forgotten() {
        let limiter = AuthLimiter::new();
        for _ in 1..REFUSE_AFTER_FAILURES {
            limiter.record_failure(ip(1));
            assert_eq!(
                limiter.refusal(ip(1)),
                None,
                "a typo only slows a source down"
            );
        }
        limiter.record_failure(ip(1));
        assert_eq!(limiter.refusal(ip(1)), Some(PENALTY_QUIET_PERIOD));
        assert_eq!(limiter.refusal(ip(2)), None, "other sources are not barred");
        tokio::time::advance(PENALTY_QUIET_PERIOD - ms(1)).await;
        assert_eq!(
            limiter.refusal(ip(1)),
            Some(ms(1)),
            "refusals do not extend it"
        );
        tokio::time::advance(ms(1)).await;
        assert_eq!(limiter.refusal(ip(1)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_stays_fixed_whatever_the_number_of_sources() {
        let limiter = AuthLimiter::new();
        for n in 0..20_000u32 {
            limiter.record_failure(Some(IpAddr::V4(Ipv4Addr::from(n))));
        }
        assert_eq!(limiter.slot_count(), PENALTY_SLOTS);
        assert_eq!(std::mem::size_of_val(&*limiter.slots), 8 * PENALTY_SLOTS);
        let tiny = AuthLimiter::with_config(PenaltyConfig {
            slots: 0,
            ..PenaltyConfig::default()
        });
        assert_eq!(tiny.slot_count(), 1);
        assert_eq!(tiny.record_failure(ip(9)), FIRST_FAILURE_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_sources_in_one_slash_64_share_a_penalty_and_mapped_ipv4_is_ipv4() {
        let limiter = AuthLimiter::new();
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().expect("addr");
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().expect("addr");
        limiter.record_failure(Some(IpAddr::V6(a)));
        assert_eq!(limiter.penalty(Some(IpAddr::V6(b))), FIRST_FAILURE_DELAY);
        let v4 = Ipv4Addr::new(198, 51, 100, 7);
        limiter.record_failure(Some(IpAddr::V4(v4)));
        let mapped = Some(IpAddr::V6(v4.to_ipv6_mapped()));
        assert_eq!(limiter.penalty(mapped), FIRST_FAILURE_DELAY);
    }
}
