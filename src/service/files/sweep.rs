//! When the file server expires stale partial files: once when it starts, then at most every
//! [`PARTIAL_SWEEP_INTERVAL`] as sessions open. Partials are only made by sessions, so a
//! server nobody uses has nothing new to expire and needs no timer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::store::Store;

/// Least time between two sweeps of a running server.
pub(crate) const PARTIAL_SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Decides when the next sweep is due; `max_age: None` never sweeps.
#[derive(Debug)]
pub(super) struct PartialSweeper {
    max_age: Option<Duration>,
    next: Mutex<Instant>,
}

impl PartialSweeper {
    /// A sweeper whose first sweep is due at `first`.
    pub(super) fn new(max_age: Option<Duration>, first: Instant) -> Self {
        PartialSweeper {
            max_age,
            next: Mutex::new(first),
        }
    }

    /// The max age to sweep with if a sweep is due at `now`; the next one is then due
    /// [`PARTIAL_SWEEP_INTERVAL`] later, so concurrent callers get one sweep between them.
    pub(super) fn take_due(&self, now: Instant) -> Option<Duration> {
        let max_age = self.max_age?;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if now < *next {
            return None;
        }
        *next = now + PARTIAL_SWEEP_INTERVAL;
        Some(max_age)
    }

    /// Sweeps `store` on a blocking thread if a sweep is due now.
    pub(super) fn spawn_if_due(&self, store: &Arc<Store>) {
        if let Some(max_age) = self.take_due(Instant::now()) {
            let store = store.clone();
            tokio::task::spawn_blocking(move || sweep(&store, max_age));
        }
    }
}

/// Expires `store`'s partials older than `max_age`, logging what happened; a failed sweep is
/// logged and otherwise ignored (the next one may succeed).
pub(super) fn sweep(store: &Store, max_age: Duration) {
    match store.expire_partials(max_age) {
        Ok(expired) if expired.removed > 0 || expired.busy > 0 => {
            info!(
                service = "files",
                removed = expired.removed,
                busy = expired.busy,
                max_age_s = max_age.as_secs(),
                "expired stale partial files"
            );
        }
        Ok(_) => {}
        Err(e) => warn!(service = "files", error = %e, "could not expire stale partial files"),
    }
    cap(store);
}

/// Drops the oldest partials at rest beyond the store's total cap (a cap lowered since they
/// were left), logging what happened.
pub(super) fn cap(store: &Store) {
    let limit = store.options().partial_max_total;
    match store.cap_partials() {
        Ok(capped) if capped.removed > 0 => {
            info!(
                service = "files",
                removed = capped.removed,
                limit,
                "dropped the oldest partial files to stay within --partial-max-total"
            );
        }
        Ok(_) => {}
        Err(e) => warn!(service = "files", error = %e, "could not cap partial files"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_due_at_most_once_per_interval() {
        let start = Instant::now();
        let week = Duration::from_secs(7 * 24 * 3600);
        let sweeper = PartialSweeper::new(Some(week), start + PARTIAL_SWEEP_INTERVAL);
        assert_eq!(sweeper.take_due(start), None, "just swept at start");
        let due = start + PARTIAL_SWEEP_INTERVAL;
        assert_eq!(sweeper.take_due(due), Some(week));
        assert_eq!(sweeper.take_due(due), None, "taken once");
        let later = due + PARTIAL_SWEEP_INTERVAL;
        assert_eq!(sweeper.take_due(later - Duration::from_secs(1)), None);
        assert_eq!(sweeper.take_due(later), Some(week));
    }

    #[test]
    fn without_a_max_age_no_sweep_is_ever_due() {
        let start = Instant::now();
        let sweeper = PartialSweeper::new(None, start);
        assert_eq!(sweeper.take_due(start + PARTIAL_SWEEP_INTERVAL * 10), None);
    }
}
