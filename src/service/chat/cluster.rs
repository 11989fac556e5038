//! Many chat nodes, one chat: the link from a node's [`Broker`] to the cluster's Redis.
//!
//! ```text
//!  event    what one node tells the others, as a stream entry (node id, sequence, JSON)
//!  store    the Redis side: connections, keys, the nick scripts, history reads
//!  tasks    the node's three loops: publisher (its queue → XADD), reader (XREAD → broker),
//!           heartbeat (node key, nick expiry, dead nodes)
//!  remote   the broker's view of other nodes' clients, and what their events do locally
//! ```
//!
//! The local broker stays the authority for its own clients and never waits on Redis: it
//! queues each change for the publisher through [`Link`], a handle that a node without
//! `--redis` does not have. Design and guarantees: docs/architecture.md, "Chat cluster".

mod event;
pub(crate) mod remote;
mod store;
mod tasks;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) use event::Event;
use store::Store;

use super::broker::Broker;

/// Default time after which a node that stopped its heartbeat is taken for dead: its
/// clients leave `/who` and their nicks become free (within this plus one heartbeat).
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default number of a node's changes queued while Redis cannot be reached. When it is full,
/// a message is refused to its sender (with an error saying why); joins, leaves and nick
/// changes are then summed up in one presence event once the link is back.
pub const DEFAULT_LINK_QUEUE: usize = 10_000;
/// Entries the cluster's event stream keeps (`XADD MAXLEN ~`): a node cut off for longer
/// than this many events tells its clients that messages from other nodes were lost.
pub const EVENTS_KEPT: usize = 100_000;
/// How long connecting to Redis (and each command) may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Prefix of every key the cluster uses.
pub const KEY_PREFIX: &str = "sockit:chat:";

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The Redis every node of the cluster shares.
    pub redis: RedisTarget,
    /// After this long without a heartbeat a node is taken for dead.
    pub node_timeout: Duration,
    /// The node's queue of changes while Redis is away.
    pub queue: usize,
}

impl ClusterConfig {
    /// The defaults, on `redis`.
    pub fn new(redis: RedisTarget) -> Self {
        ClusterConfig {
            redis,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            queue: DEFAULT_LINK_QUEUE,
        }
    }

    fn heartbeat(&self) -> Duration {
        self.node_timeout / 3
    }
}

/// A Redis URL (`redis://[:PASSWORD@]HOST:PORT[/DB]`), shown everywhere with its password
/// masked.
#[derive(Clone)]
pub struct RedisTarget {
    info: redis::ConnectionInfo,
    shown: String,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl RedisTarget {
    /// Parses `url`; `password`, when given (from a file), replaces any in the URL.
    ///
    /// # Errors
    /// [`ClusterError::BadUrl`], naming the URL with its password masked.
    pub fn parse(url: &str, password: Option<&str>) -> Result<RedisTarget, ClusterError> {
        use redis::IntoConnectionInfo;
        let shown = redact(url);
        let info = url
            .into_connection_info()
            .map_err(|e| ClusterError::BadUrl(format!("{shown}: {}", e.detail().unwrap_or(""))))?;
        let info = match password {
            Some(password) => {
                let settings = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(settings)
            }
            None => info,
        };
        Ok(RedisTarget { info, shown })
    }

    /// Whether the URL itself carries a password (better kept in a file: argv is public).
    pub fn url_has_password(url: &str) -> bool {
        redact(url) != url
    }
}

/// `url` with the password of its user-info part replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{user}@{}", &rest[at + 1..])
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL is not a Redis URL.
    #[error("not a Redis URL: {0}")]
    BadUrl(String),
    /// Redis refused the password (or user).
    #[error("Redis at {target} refused the password: {reason}")]
    Auth {
        /// The URL, password masked.
        target: String,
        /// Redis' answer.
        reason: String,
    },
    /// Redis could not be reached or answered with an error.
    #[error("cannot use Redis at {target}: {reason}")]
    Unreachable {
        /// The URL, password masked.
        target: String,
        /// What failed.
        reason: String,
    },
}

/// One thing for the publisher to do, in the order the broker queued it.
#[derive(Debug)]
pub(crate) enum Op {
    /// Publish an event with this node's sequence number.
    Event { seq: u64, event: Event },
    /// Free a nick key (a skeleton) unless a local client holds it again by then.
    Release { key: String },
}

/// The broker's handle on the cluster: a bounded queue to the publisher, the node's
/// identity and sequence, and the link's state. Every method the broker calls under its lock
/// returns at once.
#[derive(Debug)]
pub struct Link {
    node: Arc<str>,
    seq: AtomicU64,
    ops: mpsc::Sender<Op>,
    ops_rx: Mutex<Option<mpsc::Receiver<Op>>>,
    /// A presence change could not be queued: publish the node's whole presence next.
    presence_dirty: AtomicBool,
    down: AtomicBool,
    /// The publisher's last try failed.
    publish_failed: AtomicBool,
    /// The publisher has ended (after its goodbye on a clean stop).
    done: CancellationToken,
    store: Store,
    config: ClusterConfig,
}

/// A place in the publisher's queue, taken before a message is delivered locally so that a
/// full queue refuses the message instead of delivering it on one node only.
pub(crate) struct Slot<'a> {
    permit: mpsc::Permit<'a, Op>,
    seq: u64,
}

impl Slot<'_> {
    /// The (node, sequence) the event will carry, which also keys it in history.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Queues `event`.
    pub(crate) fn send(self, event: Event) {
        self.permit.send(Op::Event {
            seq: self.seq,
            event,
        });
    }
}

impl Link {
    /// Connects to Redis and checks it answers (and accepts the password); nothing is
    /// started until [`Link::start`].
    ///
    /// # Errors
    /// [`ClusterError::Auth`] for a refused password, [`ClusterError::Unreachable`] else.
    pub async fn connect(config: ClusterConfig) -> Result<Arc<Link>, ClusterError> {
        let store = Store::connect(&config.redis).await?;
        let mut id = [0u8; 8];
        // The node id only has to differ from other nodes'; a clock-based one if the OS has
        // no randomness to give.
        if getrandom::fill(&mut id).is_err() {
            id = super::now_ms().to_le_bytes();
        }
        let (ops, ops_rx) = mpsc::channel(config.queue.max(1));
        Ok(Arc::new(Link {
            node: Arc::from(hex::encode(id)),
            seq: AtomicU64::new(1),
            ops,
            ops_rx: Mutex::new(Some(ops_rx)),
            presence_dirty: AtomicBool::new(false),
            down: AtomicBool::new(false),
            publish_failed: AtomicBool::new(false),
            done: CancellationToken::new(),
            store,
            config,
        }))
    }

    /// Starts the node's publisher, reader and heartbeat for `broker` (which must hold this
    /// link); they run until `shutdown`. A second call does nothing.
    pub fn start(self: &Arc<Self>, broker: &Arc<Broker>, shutdown: &CancellationToken) {
        let rx = self.ops_rx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rx) = rx {
            tasks::spawn(self.clone(), broker.clone(), rx, shutdown.clone());
        }
    }

    /// Waits (at most twice [`REDIS_TIMEOUT`]) for the publisher to have said goodbye after
    /// shutdown, so a server does not exit before the others learn that its users left.
    pub async fn stopped(&self) {
        let _ = tokio::time::timeout(REDIS_TIMEOUT * 2, self.done.cancelled()).await;
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Takes a place in the queue for an event that must not be lost, or `None` when the
    /// queue is full (Redis has been away for a while).
    pub(crate) fn reserve(&self) -> Option<Slot<'_>> {
        let permit = self.ops.try_reserve().ok()?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        Some(Slot { permit, seq })
    }

    /// Queues a presence change; if the queue is full, the node's whole presence is
    /// published once the queue drains instead.
    pub(crate) fn publish(&self, event: Event) {
        match self.reserve() {
            Some(slot) => slot.send(event),
            None => self.presence_dirty.store(true, Ordering::Relaxed),
        }
    }

    /// Queues the release of a nick's key.
    pub(crate) fn release(&self, key: String) {
        // A release that does not fit expires on its own: the heartbeat stops refreshing it.
        let _ = self.ops.try_send(Op::Release { key });
    }

    /// Claims a nick (its skeleton) for this node.
    ///
    /// # Errors
    /// The refusal a client sees when Redis cannot be asked.
    pub(crate) async fn claim(&self, key: &str) -> Result<bool, crate::wire::ErrorFrame> {
        self.store
            .claim(key, &self.node, self.config.node_timeout)
            .await
            .map_err(|_| unavailable())
    }

    /// The last `count` messages of `room` kept in Redis, oldest first, or `None` when
    /// Redis cannot be asked (the node's own copy is used then).
    pub(crate) async fn history(&self, room: &str, count: usize) -> Option<Vec<remote::Kept>> {
        self.store.history(room, count).await.ok()
    }

    /// Whether the link to Redis is down now.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Records whether the link is down; true if that is news.
    fn mark(&self, down: bool) -> bool {
        self.down.swap(down, Ordering::Relaxed) != down
    }
}

/// What a client is told when a nick cannot be claimed because Redis is away.
fn unavailable() -> crate::wire::ErrorFrame {
    crate::wire::ErrorFrame::new(
        "cluster_unavailable",
        "the chat cluster's Redis cannot be reached, so no nick can be taken now; try again shortly",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_wherever_a_url_is_shown() {
        assert_eq!(
            redact("redis://:s3cret@db:6379/0"),
            "redis://:***@db:6379/0"
        );
        assert_eq!(redact("redis://u:p@db/"), "redis://u:***@db/");
        assert_eq!(redact("redis://tok@db/"), "redis://***@db/");
        assert_eq!(redact("redis://db:6379/"), "redis://db:6379/");
        assert!(RedisTarget::url_has_password("redis://:x@h/"));
        let target = RedisTarget::parse("redis://:hunter2@127.0.0.1:1/", None).expect("parses");
        assert!(!format!("{target} {target:?}").contains("hunter2"));
        let err = RedisTarget::parse("http://:hunter2@h/", None).expect_err("not redis");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
