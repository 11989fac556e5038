//! A room's history: the last messages said in it, replayed to whoever joins, bounded in
//! messages and in bytes, and released when the room empties.

use std::collections::VecDeque;
use std::sync::Arc;

use super::outbox::{Delivery, DELIVERY_OVERHEAD_BYTES};

/// Default bytes of history one room keeps. A message counts three times its text plus
/// [`DELIVERY_OVERHEAD_BYTES`]: a kept delivery holds its text and, once sent, its line and
/// frame encodings.
pub const DEFAULT_HISTORY_BYTES: usize = 512 * 1024;
/// Most history bytes a room may be configured to keep (`--history-bytes`): 2 MiB counts at
/// most about 700 KB of text, so a whole replay fits a joining client's queue
/// ([`MAX_QUEUED_BYTES`](super::MAX_QUEUED_BYTES), 1 MiB) and never disconnects it as slow.
pub const MAX_HISTORY_BYTES: usize = 2 * 1024 * 1024;

/// Released history at least this large is handed back to the operating system at once
/// (`malloc_trim`): glibc keeps freed small blocks in its heap, so without it the memory of a
/// room's history stays in the server's RSS after the room empties.
const TRIM_AFTER_RELEASED_BYTES: usize = 1024 * 1024;

/// How much history a room keeps: whichever limit is reached first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryLimits {
    /// Most messages.
    pub(crate) messages: usize,
    /// Most bytes.
    pub(crate) bytes: usize,
}

/// The (node, sequence) naming a message across a cluster.
pub(crate) type Origin = (Arc<str>, u64);

/// Keep a broadcast in its room's history: within these limits, under this name.
#[derive(Debug, Clone)]
pub(crate) struct Keep {
    /// The room's history limits.
    pub(crate) limits: HistoryLimits,
    /// The message's name in the cluster, if the node is in one.
    pub(crate) origin: Option<Origin>,
}

/// The last messages of one room. A message is counted as three times its text plus
/// [`DELIVERY_OVERHEAD_BYTES`]: a kept delivery holds its text, and once sent its line and
/// frame encodings too, so the count follows the memory it keeps.
#[derive(Debug, Default)]
pub(super) struct History {
    entries: VecDeque<(Option<Origin>, Arc<Delivery>)>,
    bytes: usize,
}

impl History {
    /// What keeping `delivery` costs.
    fn cost(delivery: &Delivery) -> usize {
        delivery
            .message()
            .text_len()
            .saturating_mul(3)
            .saturating_add(DELIVERY_OVERHEAD_BYTES)
    }

    /// Keeps `delivery`, dropping the oldest entries until both limits hold. A message larger
    /// than the byte limit on its own is not kept.
    #[cfg(test)]
    pub(super) fn push(&mut self, delivery: Arc<Delivery>, limits: HistoryLimits) {
        self.push_from(delivery, None, limits);
    }

    /// [`History::push`] with the message's name in the cluster.
    pub(super) fn push_from(
        &mut self,
        delivery: Arc<Delivery>,
        origin: Option<Origin>,
        limits: HistoryLimits,
    ) {
        let cost = Self::cost(&delivery);
        if limits.messages == 0 || cost > limits.bytes {
            return;
        }
        while self.entries.len() >= limits.messages || self.bytes + cost > limits.bytes {
            let Some((_, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= Self::cost(&old);
        }
        self.bytes += cost;
        self.entries.push_back((origin, delivery));
    }

    /// Replaces the history with the cluster's copy (`kept`, oldest first), followed by any
    /// message kept here since that copy was read (one not in it).
    pub(crate) fn seed(
        &mut self,
        kept: Vec<crate::service::chat::cluster::remote::Kept>,
        limits: HistoryLimits,
    ) {
        let named: std::collections::HashSet<(Arc<str>, u64)> =
            kept.iter().map(|k| (k.node.clone(), k.seq)).collect();
        let newer: Vec<_> = std::mem::take(&mut self.entries)
            .into_iter()
            .filter(|(origin, _)| origin.as_ref().is_none_or(|o| !named.contains(o)))
            .collect();
        self.bytes = 0;
        for k in kept {
            self.push_from(k.delivery, Some((k.node, k.seq)), limits);
        }
        for (origin, delivery) in newer {
            self.push_from(delivery, origin, limits);
        }
    }

    /// The kept messages, oldest first.
    pub(super) fn replay(&self) -> Vec<Arc<Delivery>> {
        self.entries.iter().map(|(_, d)| d.clone()).collect()
    }

    /// Releases everything (the room emptied), the buffer included; a large history's
    /// memory goes back to the operating system.
    pub(super) fn clear(&mut self) {
        let released = std::mem::take(&mut self.bytes);
        self.entries = VecDeque::new();
        if released >= TRIM_AFTER_RELEASED_BYTES {
            return_freed_memory();
        }
    }

    /// Bytes counted now.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_freed_memory() {
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_memory() {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::chat::ServerMessage;

    fn said(text: &str) -> Arc<Delivery> {
        Delivery::new(ServerMessage::Message {
            time: 0,
            room: String::new(),
            nick: String::new(),
            text: text.into(),
        })
    }

    #[test]
    fn history_keeps_the_last_messages_within_both_limits() {
        let limits = HistoryLimits {
            messages: 3,
            bytes: 10_000,
        };
        let mut history = History::default();
        for text in ["a", "b", "c", "d"] {
            history.push(said(text), limits);
        }
        let kept: Vec<String> = history
            .replay()
            .iter()
            .map(|d| d.message().to_line())
            .collect();
        assert_eq!(kept, ["<> b", "<> c", "<> d"]);

        let big = "x".repeat(1000);
        let mut history = History::default();
        for _ in 0..10 {
            history.push(said(&big), limits);
        }
        let one = 3 * 1000 + DELIVERY_OVERHEAD_BYTES;
        assert_eq!(history.replay().len(), 10_000 / one);
        assert!(history.bytes() <= limits.bytes);
    }

    #[test]
    fn seeding_puts_the_cluster_copy_first_and_keeps_what_arrived_meanwhile_once() {
        use crate::service::chat::cluster::remote::Kept;
        let limits = HistoryLimits {
            messages: 10,
            bytes: 100_000,
        };
        let node: Arc<str> = Arc::from("n1");
        let kept = |seq: u64, text: &str| Kept {
            node: node.clone(),
            seq,
            delivery: said(text),
        };
        let mut history = History::default();
        // Arrived while the copy was being read: one it has, one it does not.
        history.push_from(said("b"), Some((node.clone(), 2)), limits);
        history.push_from(said("c"), Some((node.clone(), 3)), limits);
        history.seed(vec![kept(1, "a"), kept(2, "b")], limits);
        let lines: Vec<String> = history
            .replay()
            .iter()
            .map(|d| d.message().to_line())
            .collect();
        assert_eq!(lines, ["<> a", "<> b", "<> c"]);
    }

    #[test]
    fn a_message_over_the_byte_limit_is_not_kept_and_clear_releases_all() {
        let limits = HistoryLimits {
            messages: 10,
            bytes: 100,
        };
        let mut history = History::default();
        history.push(said("small"), limits);
        history.push(said(&"x".repeat(200)), limits);
        assert_eq!(history.replay().len(), 1);
        history.clear();
        assert_eq!((history.replay().len(), history.bytes()), (0, 0));
    }
}
