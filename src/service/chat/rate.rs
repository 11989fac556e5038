//! Per-connection flood control: a token bucket, and a throttle on the notice that says so.

use std::time::{Duration, Instant};

/// Default sustained rate: lines (messages and commands) per second per connection.
pub const DEFAULT_RATE_PER_SEC: u32 = 20;
/// Default burst: lines a quiet connection may send at once.
pub const DEFAULT_BURST: u32 = 40;
/// At most one "slow down" notice per connection per this long, so the notice cannot flood.
pub(crate) const RATE_NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// Rate-limit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained lines per second.
    pub per_sec: u32,
    /// Bucket size.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_sec: DEFAULT_RATE_PER_SEC,
            burst: DEFAULT_BURST,
        }
    }
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Handle it.
    Allow,
    /// Drop it and tell the client (the first drop in a [`RATE_NOTICE_INTERVAL`]).
    DropAndNotify,
    /// Drop it silently (already told).
    Drop,
}

/// A token bucket for one connection.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
    last_notice: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            tokens: f64::from(limit.burst),
            last: now,
            last_notice: None,
        }
    }

    /// Takes a token for one line at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let burst = f64::from(self.limit.burst.max(1));
        self.tokens = (self.tokens + elapsed * f64::from(self.limit.per_sec)).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        match self.last_notice {
            Some(at) if now.saturating_duration_since(at) < RATE_NOTICE_INTERVAL => Verdict::Drop,
            _ => {
                self.last_notice = Some(now);
                Verdict::DropAndNotify
            }
        }
    }

    /// The sentence sent with [`Verdict::DropAndNotify`].
    pub fn notice(&self) -> String {
        format!(
            "slow down: at most {} lines a second (bursts of {}); lines over the limit are dropped",
            self.limit.per_sec, self.limit.burst
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_dropped_with_one_notice() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                per_sec: 10,
                burst: 3,
            },
            start,
        );
        let verdicts: Vec<_> = (0..6).map(|_| bucket.check(start)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Allow,
                Verdict::DropAndNotify,
                Verdict::Drop,
                Verdict::Drop
            ]
        );
        // 100 ms at 10/s refills one token.
        assert_eq!(
            bucket.check(start + Duration::from_millis(100)),
            Verdict::Allow
        );
        assert_eq!(
            bucket.check(start + Duration::from_millis(100)),
            Verdict::Drop
        );
        let later = start + RATE_NOTICE_INTERVAL + Duration::from_millis(100);
        assert_eq!(bucket.check(later), Verdict::Allow);
        assert!(bucket.notice().contains("10 lines a second"));
    }
}
