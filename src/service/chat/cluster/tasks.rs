//! A node's three loops. None of them waits for another node: each talks to Redis alone,
//! under [`REDIS_TIMEOUT`], and a failure only makes it retry after a bounded backoff.
//!
//! - publisher: the broker's queued changes, in order, a batch per `MULTI`;
//! - reader: the event stream from the last ID it saw, other nodes' events to the broker
//!   (each node's events once, by its sequence numbers), a cut or reset stream told to users;
//! - heartbeat: the node's key and nick keys refreshed, dead nodes' clients dropped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::event::{Stored, StreamId};
use super::remote::MAX_REMOTE_NODES;
use super::store::{Store, READ_BLOCK};
use super::{Link, Op, REDIS_TIMEOUT};
use crate::service::chat::broker::Broker;

/// Most queued changes published in one `MULTI`.
const PUBLISH_BATCH: usize = 256;
/// First wait before trying Redis again after a failure; it doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// What the node's users are told when Redis goes away, and when it is back.
pub(crate) const LINK_DOWN: &str = "the link to the other chat nodes is down: you can still \
     talk with the users of this node, and what you say reaches the others once it is back";
pub(crate) const LINK_BACK: &str = "the link to the other chat nodes is back";
/// What a user is told whose nick another node gave away while this node was cut off.
pub(crate) const NICK_LOST: &str = "while this chat node was cut off from the others, your \
     nick was given to someone on another node; take another with /nick NEW";
/// Most users told [`NICK_LOST`] at once (each is told once).
const MAX_TOLD: usize = 10_000;
/// What they are told when events from other nodes were lost for good.
pub(crate) const LINK_GAP: &str = "some messages from the other chat nodes were lost while \
     the link was down (the cluster's Redis no longer had them)";

pub(super) fn spawn(
    link: Arc<Link>,
    broker: Arc<Broker>,
    ops: mpsc::Receiver<Op>,
    shutdown: CancellationToken,
) {
    let publishing = link.clone();
    let (b, s) = (broker.clone(), shutdown.clone());
    tokio::spawn(async move {
        publisher(publishing.clone(), b, ops, s).await;
        publishing.done.cancel();
    });
    tokio::spawn(reader(link.clone(), broker.clone(), shutdown.clone()));
    tokio::spawn(heartbeat(link, broker, shutdown));
}

fn went_down(link: &Link, broker: &Broker, why: &dyn std::fmt::Display) {
    if link.mark(true) {
        warn!(redis = %link.config.redis, error = %why, "chat cluster link down");
        broker.notify_everyone(LINK_DOWN);
    }
}

fn came_back(link: &Link, broker: &Broker) {
    if link.mark(false) {
        info!(redis = %link.config.redis, "chat cluster link back");
        broker.notify_everyone(LINK_BACK);
    }
}

/// Waits `backoff` (or until shutdown: false) and doubles it.
async fn pause(backoff: &mut Duration, shutdown: &CancellationToken) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(RETRY_MAX);
    tokio::select! {
        () = sleep(wait) => true,
        () = shutdown.cancelled() => false,
    }
}

async fn publisher(
    link: Arc<Link>,
    broker: Arc<Broker>,
    mut ops: mpsc::Receiver<Op>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut backoff = RETRY_MIN;
    loop {
        if batch.is_empty() {
            if ops.is_empty() && link.presence_dirty.swap(false, Ordering::Relaxed) {
                broker.publish_presence();
            }
            tokio::select! {
                n = ops.recv_many(&mut batch, PUBLISH_BATCH) => if n == 0 { return },
                () = shutdown.cancelled() => {
                    stop(&link, &broker, ops, batch).await;
                    return;
                }
            }
        }
        // A nick freed and taken again by a local client meanwhile stays taken.
        batch.retain(|op| !matches!(op, Op::Release { key } if broker.holds_locally(key)));
        let sent = timeout(
            REDIS_TIMEOUT,
            link.store
                .publish(&link.node, &batch, broker.history_size()),
        )
        .await;
        match sent {
            Ok(Ok(())) => {
                batch.clear();
                backoff = RETRY_MIN;
                link.publish_failed.store(false, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                link.publish_failed.store(true, Ordering::Relaxed);
                went_down(&link, &broker, &e);
                if !pause(&mut backoff, &shutdown).await {
                    return;
                }
            }
            Err(_) => {
                link.publish_failed.store(true, Ordering::Relaxed);
                link.store.reset().await;
                went_down(&link, &broker, &"Redis did not answer in time");
                if !pause(&mut backoff, &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// A clean stop: what is still queued gets one try, then the node's `stop` event, then its
/// key and nicks go, so the others drop its users and its nicks are free at once.
async fn stop(link: &Link, broker: &Broker, mut ops: mpsc::Receiver<Op>, mut batch: Vec<Op>) {
    ops.close();
    while batch.len() < PUBLISH_BATCH {
        let Ok(op) = ops.try_recv() else { break };
        batch.push(op);
    }
    let seq = link.seq.fetch_add(1, Ordering::Relaxed);
    batch.push(Op::Event {
        seq,
        event: super::Event::Stop,
    });
    let history = broker.history_size();
    let nicks = broker.local_nick_keys();
    let last = async {
        link.store.publish(&link.node, &batch, history).await?;
        link.store.leave(&link.node, &nicks).await
    };
    if let Err(e) = timeout(REDIS_TIMEOUT, last)
        .await
        .unwrap_or_else(|_| Ok(()))
    {
        warn!(error = %e, "chat node: could not say goodbye to the cluster");
    }
}

/// Where the reader is in the event stream, and each other node's last sequence applied.
#[derive(Debug, Default)]
struct Position {
    last: Option<StreamId>,
    seen: HashMap<String, u64>,
}

impl Position {
    /// Whether `stored` is new: another node's, after what was applied from that node.
    fn is_new(&mut self, me: &str, stored: &Stored) -> bool {
        if stored.node == me {
            return false;
        }
        if self.seen.len() >= MAX_REMOTE_NODES && !self.seen.contains_key(&stored.node) {
            self.seen.clear();
        }
        let seen = self.seen.entry(stored.node.clone()).or_default();
        if stored.seq <= *seen {
            return false;
        }
        *seen = stored.seq;
        true
    }
}

async fn reader(link: Arc<Link>, broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut position = Position::default();
    let mut backoff = RETRY_MIN;
    loop {
        match follow(&link, &broker, &mut position, &shutdown).await {
            Ok(()) => return,
            Err(why) => {
                went_down(&link, &broker, &why);
                if !pause(&mut backoff, &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Connects, catches up from the last ID seen, then follows the stream until an error
/// (returned) or shutdown (`Ok`).
async fn follow(
    link: &Link,
    broker: &Broker,
    position: &mut Position,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let deadline = |what: &'static str| move |_| format!("Redis did not answer in time ({what})");
    let mut conn = timeout(REDIS_TIMEOUT, link.store.reader())
        .await
        .map_err(deadline("connect"))?
        .map_err(|e| e.to_string())?;
    let state = timeout(REDIS_TIMEOUT, Store::stream_state(&mut conn))
        .await
        .map_err(deadline("XINFO"))?
        .map_err(|e| e.to_string())?;
    let start = match position.last {
        None => {
            load_presence(link, broker).await?;
            state.last
        }
        Some(last) if state.last < last => {
            // Redis came back without the events this node saw: it lost data. Read all it
            // has now, and say that some may be gone.
            broker.notify_everyone(LINK_GAP);
            load_presence(link, broker).await?;
            StreamId::default()
        }
        Some(last) => {
            if last < state.trimmed {
                broker.notify_everyone(LINK_GAP);
            }
            last
        }
    };
    position.last = Some(start);
    loop {
        let read = tokio::select! {
            read = timeout(READ_BLOCK + REDIS_TIMEOUT, Store::read(&mut conn, position.last.unwrap_or_default())) => read,
            () = shutdown.cancelled() => return Ok(()),
        };
        let (last, events) = read
            .map_err(deadline("XREAD"))?
            .map_err(|e| e.to_string())?;
        if !link.publish_failed.load(Ordering::Relaxed) {
            came_back(link, broker);
        }
        position.last = Some(last);
        for stored in events {
            if position.is_new(&link.node, &stored) {
                broker.apply_remote(stored);
            }
        }
    }
}

/// Reads every live node's member hash into the broker's view.
async fn load_presence(link: &Link, broker: &Broker) -> Result<(), String> {
    let nodes = timeout(REDIS_TIMEOUT, link.store.live_nodes(&link.node))
        .await
        .map_err(|_| "Redis did not answer in time (nodes)".to_owned())?
        .map_err(|e| e.to_string())?;
    for node in nodes {
        let members = timeout(REDIS_TIMEOUT, link.store.members(&node))
            .await
            .map_err(|_| "Redis did not answer in time (members)".to_owned())?
            .map_err(|e| e.to_string())?;
        broker.replace_remote(&node, members);
    }
    Ok(())
}

async fn heartbeat(link: Arc<Link>, broker: Arc<Broker>, shutdown: CancellationToken) {
    let interval = link.config.heartbeat();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut first = true;
    let mut told = std::collections::HashSet::new();
    // Since when this node's beats have succeeded: after an outage the others need a beat
    // of their own before their keys say anything, or they would all be taken for dead.
    let mut healthy_since = Some(Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let nicks = broker.local_nick_keys();
        let beat = link
            .store
            .heartbeat(&link.node, link.config.node_timeout, &nicks);
        match timeout(REDIS_TIMEOUT, beat).await {
            // The node's key had expired: others took it for dead (it was paused, or Redis
            // lost it), so they are told again who is here.
            Ok(Ok((expired, lost))) => {
                if expired && !first {
                    broker.publish_presence();
                }
                told.retain(|key| lost.contains(key));
                for key in lost {
                    if told.len() < MAX_TOLD && told.insert(key.clone()) {
                        broker.notify_holder(&key, NICK_LOST);
                    }
                }
            }
            Ok(Err(_)) | Err(_) => {
                healthy_since = None;
                continue;
            }
        }
        first = false;
        let since = *healthy_since.get_or_insert_with(Instant::now);
        if since.elapsed() < interval * 2 {
            continue;
        }
        if let Ok(Ok(live)) = timeout(REDIS_TIMEOUT, link.store.live_nodes(&link.node)).await {
            for node in broker.remote_nodes() {
                if !live.contains(&node) {
                    info!(%node, "chat node lost: its users leave");
                    broker.drop_node(&node, "node lost");
                }
            }
        }
    }
}
