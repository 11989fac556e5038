//! The Redis side of the link: connections under deadlines, the keys, the nick scripts and
//! each command the node's loops send.
//!
//! ```text
//!  sockit:chat:events          stream: every node's events (MAXLEN ~ EVENTS_KEPT)
//!  sockit:chat:history:ROOM    stream: the room's messages (MAXLEN ~ the history size)
//!  sockit:chat:nick:SKELETON   string: the node holding the nick (PX node timeout)
//!  sockit:chat:node:ID         string: the node's heartbeat (PX node timeout)
//!  sockit:chat:nodes           set: nodes that have started
//!  sockit:chat:members:ID      hash: the node's clients, nick → room ("" for none)
//! ```

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};
use tokio::sync::Mutex;

use super::event::{Event, Stored, StreamId};
use super::remote::Kept;
use super::{ClusterError, Op, RedisTarget, EVENTS_KEPT, KEY_PREFIX, REDIS_TIMEOUT};

/// How long one `XREAD` waits for new events before asking again.
pub(super) const READ_BLOCK: Duration = Duration::from_millis(1000);
/// Most events one `XREAD` returns.
pub(super) const READ_BATCH: usize = 512;
/// Most nick keys refreshed by one script call.
const REFRESH_CHUNK: usize = 1000;

/// Takes a nick key if it is free, or keeps it if this node already holds it.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";
/// Frees a nick key if this node holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";
/// Extends this node's nick keys, taking back any that expired (Redis restarted without
/// them, or the node was paused past the timeout); returns the keys another node took
/// meanwhile.
const REFRESH: &str = r"
local lost = {}
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2])
  elseif v == false then redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
  else table.insert(lost, k) end
end
return lost";

/// Key names.
pub(super) fn events_key() -> String {
    format!("{KEY_PREFIX}events")
}
fn history_key(room: &str) -> String {
    format!("{KEY_PREFIX}history:{room}")
}
fn nick_key(skeleton: &str) -> String {
    format!("{KEY_PREFIX}nick:{skeleton}")
}
fn node_key(node: &str) -> String {
    format!("{KEY_PREFIX}node:{node}")
}
fn nodes_key() -> String {
    format!("{KEY_PREFIX}nodes")
}
fn members_key(node: &str) -> String {
    format!("{KEY_PREFIX}members:{node}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The Redis client and the node's shared connection (nick claims, history, publishing).
#[derive(Debug)]
pub(super) struct Store {
    client: Client,
    shown: String,
    shared: Mutex<Option<MultiplexedConnection>>,
}

/// What the event stream says about itself, to tell a cut reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamState {
    /// The newest ID ever added (`0-0` for a stream that does not exist).
    pub last: StreamId,
    /// The newest ID trimmed away.
    pub trimmed: StreamId,
}

impl Store {
    /// Connects and pings, so a wrong password or an unreachable Redis fails at startup.
    pub(super) async fn connect(target: &RedisTarget) -> Result<Store, ClusterError> {
        let store = Store {
            client: Client::open(target.info.clone())
                .map_err(|e| ClusterError::BadUrl(format!("{target}: {e}")))?,
            shown: target.to_string(),
            shared: Mutex::new(None),
        };
        let checked = async {
            let mut conn = store.shared().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match checked.await {
            Ok(_) => Ok(store),
            Err(e) if is_auth(&e) => Err(ClusterError::Auth {
                target: store.shown.clone(),
                reason: e.to_string(),
            }),
            Err(e) => Err(ClusterError::Unreachable {
                target: store.shown.clone(),
                reason: e.to_string(),
            }),
        }
    }

    async fn open(&self, response: Duration) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(response));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// The shared connection, opened again after a failure.
    pub(super) async fn shared(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.shared.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.open(REDIS_TIMEOUT).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the shared connection after a failure, so the next use opens a new one.
    pub(super) async fn reset(&self) {
        *self.shared.lock().await = None;
    }

    /// `result`, after dropping the shared connection if it failed (the next call opens a
    /// new one).
    async fn checked<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if result.is_err() {
            self.reset().await;
        }
        result
    }

    /// A connection of its own for the reader, whose `XREAD` blocks.
    pub(super) async fn reader(&self) -> Result<MultiplexedConnection, RedisError> {
        self.open(READ_BLOCK + REDIS_TIMEOUT).await
    }

    /// Takes `skeleton` for `node` unless another node holds it.
    pub(super) async fn claim(
        &self,
        skeleton: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let mut conn = self.shared().await?;
        let got = Script::new(CLAIM)
            .key(nick_key(skeleton))
            .arg(node)
            .arg(millis(ttl))
            .invoke_async::<i64>(&mut conn)
            .await;
        Ok(self.checked(got).await? == 1)
    }

    /// A room's kept messages, oldest first, at most `count`, without repeats.
    pub(super) async fn history(&self, room: &str, count: usize) -> Result<Vec<Kept>, RedisError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.shared().await?;
        let reply: Result<redis::streams::StreamRangeReply, _> = redis::cmd("XREVRANGE")
            .arg(history_key(room))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await;
        let reply = self.checked(reply).await;
        let mut kept: Vec<Kept> = reply?
            .ids
            .iter()
            .rev()
            .filter_map(|e| Event::from_fields(&e.id, &e.map))
            .filter_map(Kept::from_stored)
            .collect();
        let mut seen = std::collections::HashSet::new();
        kept.retain(|k| seen.insert((k.node.clone(), k.seq)));
        Ok(kept)
    }

    /// Publishes a batch of the node's changes in one `MULTI`: each event on the event
    /// stream, a message also on its room's history stream, presence in the node's hash.
    pub(super) async fn publish(
        &self,
        node: &str,
        batch: &[Op],
        history: usize,
    ) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let members = members_key(node);
        for op in batch {
            match op {
                Op::Event { seq, event } => {
                    let (ev, seq) = (event.to_json(), seq.to_string());
                    let fields = [("node", node), ("seq", seq.as_str()), ("ev", ev.as_str())];
                    pipe.cmd("XADD")
                        .arg(events_key())
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(EVENTS_KEPT)
                        .arg("*")
                        .arg(&fields[..])
                        .ignore();
                    add_presence(&mut pipe, &members, event);
                    if let Event::Say { room, .. } = event {
                        if history > 0 {
                            pipe.cmd("XADD")
                                .arg(history_key(room))
                                .arg("MAXLEN")
                                .arg("~")
                                .arg(history)
                                .arg("*")
                                .arg(&fields[..])
                                .ignore();
                        }
                    }
                }
                Op::Release { key } => {
                    pipe.cmd("EVAL")
                        .arg(RELEASE)
                        .arg(1)
                        .arg(nick_key(key))
                        .arg(node)
                        .ignore();
                }
            }
        }
        let mut conn = self.shared().await?;
        let done = pipe.query_async::<()>(&mut conn).await;
        self.checked(done).await
    }

    /// The node's heartbeat: its key, its place in the node set, and its nick keys
    /// refreshed. Returns whether the node's key had expired (others took it for dead), and
    /// the nicks (skeletons) another node holds now.
    pub(super) async fn heartbeat(
        &self,
        node: &str,
        ttl: Duration,
        nicks: &[String],
    ) -> Result<(bool, Vec<String>), RedisError> {
        let mut conn = self.shared().await?;
        let done = async {
            let (existed,): (bool,) = redis::pipe()
                .cmd("EXISTS")
                .arg(node_key(node))
                .cmd("SET")
                .arg(node_key(node))
                .arg(1)
                .arg("PX")
                .arg(millis(ttl))
                .ignore()
                .cmd("SADD")
                .arg(nodes_key())
                .arg(node)
                .ignore()
                .query_async(&mut conn)
                .await?;
            let refresh = Script::new(REFRESH);
            let mut lost = Vec::new();
            for chunk in nicks.chunks(REFRESH_CHUNK) {
                let mut script = refresh.prepare_invoke();
                for nick in chunk {
                    script.key(nick_key(nick));
                }
                let keys: Vec<String> = script
                    .arg(node)
                    .arg(millis(ttl))
                    .invoke_async(&mut conn)
                    .await?;
                let prefix = nick_key("");
                lost.extend(
                    keys.iter()
                        .filter_map(|k| k.strip_prefix(&prefix))
                        .map(str::to_owned),
                );
            }
            Ok((!existed, lost))
        };
        self.checked(done.await).await
    }

    /// A clean stop, after the node's last events: the node's key and set entry go and the
    /// nicks it holds are freed (its `stop` event, published with them, drops its member hash
    /// and tells the others its users left).
    pub(super) async fn leave(&self, node: &str, nicks: &[String]) -> Result<(), RedisError> {
        let mut conn = self.shared().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("DEL").arg(node_key(node)).ignore();
        pipe.cmd("SREM").arg(nodes_key()).arg(node).ignore();
        for nick in nicks {
            pipe.cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(nick_key(nick))
                .arg(node)
                .ignore();
        }
        pipe.query_async(&mut conn).await
    }

    /// The nodes alive now (their heartbeat key exists), other than `me`; the dead ones are
    /// removed from the node set with their member hashes.
    pub(super) async fn live_nodes(&self, me: &str) -> Result<Vec<String>, RedisError> {
        let mut conn = self.shared().await?;
        let done = async {
            let nodes: Vec<String> = redis::cmd("SMEMBERS")
                .arg(nodes_key())
                .query_async(&mut conn)
                .await?;
            let nodes: Vec<String> = nodes.into_iter().filter(|n| n != me).collect();
            if nodes.is_empty() {
                return Ok(nodes);
            }
            let mut pipe = redis::pipe();
            for node in &nodes {
                pipe.cmd("EXISTS").arg(node_key(node));
            }
            let alive: Vec<bool> = pipe.query_async(&mut conn).await?;
            let (live, dead): (Vec<_>, Vec<_>) =
                nodes.into_iter().zip(alive).partition(|(_, alive)| *alive);
            if !dead.is_empty() {
                let mut pipe = redis::pipe();
                for (node, _) in &dead {
                    pipe.cmd("SREM").arg(nodes_key()).arg(node).ignore();
                    pipe.cmd("DEL").arg(members_key(node)).ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
            }
            Ok(live.into_iter().map(|(n, _)| n).collect())
        };
        self.checked(done.await).await
    }

    /// A node's clients as its hash says: nick → room.
    pub(super) async fn members(
        &self,
        node: &str,
    ) -> Result<Vec<(String, Option<String>)>, RedisError> {
        let mut conn = self.shared().await?;
        let map: Result<HashMap<String, String>, _> = redis::cmd("HGETALL")
            .arg(members_key(node))
            .query_async(&mut conn)
            .await;
        let map = self.checked(map).await;
        Ok(map?
            .into_iter()
            .map(|(nick, room)| (nick, (!room.is_empty()).then_some(room)))
            .collect())
    }

    /// The event stream's newest and newest-trimmed IDs.
    pub(super) async fn stream_state(
        conn: &mut MultiplexedConnection,
    ) -> Result<StreamState, RedisError> {
        let exists: bool = redis::cmd("EXISTS")
            .arg(events_key())
            .query_async(conn)
            .await?;
        if !exists {
            return Ok(StreamState {
                last: StreamId::default(),
                trimmed: StreamId::default(),
            });
        }
        let info: HashMap<String, Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(events_key())
            .query_async(conn)
            .await?;
        let id = |name: &str| {
            info.get(name)
                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                .and_then(|s| StreamId::parse(&s))
                .unwrap_or_default()
        };
        Ok(StreamState {
            last: id("last-generated-id"),
            trimmed: id("max-deleted-entry-id"),
        })
    }

    /// Events after `after`, waiting up to [`READ_BLOCK`] for some.
    pub(super) async fn read(
        conn: &mut MultiplexedConnection,
        after: StreamId,
    ) -> Result<(StreamId, Vec<Stored>), RedisError> {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(millis(READ_BLOCK))
            .arg("STREAMS")
            .arg(events_key())
            .arg(after.to_string())
            .query_async(conn)
            .await?;
        let mut last = after;
        let mut events = Vec::new();
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            if let Some(id) = StreamId::parse(&entry.id) {
                last = last.max(id);
            }
            if let Some(stored) = Event::from_fields(&entry.id, &entry.map) {
                events.push(stored);
            }
        }
        Ok((last, events))
    }
}

/// Keeps the node's member hash in step with a presence event.
fn add_presence(pipe: &mut redis::Pipeline, members: &str, event: &Event) {
    match event {
        Event::Join { nick, room } => {
            pipe.cmd("HSET").arg(members).arg(nick).arg(room).ignore();
        }
        Event::Leave { nick, .. } => {
            pipe.cmd("HSET").arg(members).arg(nick).arg("").ignore();
        }
        Event::Nick { old, new, room } => {
            pipe.cmd("HDEL").arg(members).arg(old).ignore();
            let room = room.as_deref().unwrap_or("");
            pipe.cmd("HSET").arg(members).arg(new).arg(room).ignore();
        }
        Event::Quit { nick } => {
            pipe.cmd("HDEL").arg(members).arg(nick).ignore();
        }
        Event::Presence { members: all } => {
            pipe.cmd("DEL").arg(members).ignore();
            for (nick, room) in all {
                let room = room.as_deref().unwrap_or("");
                pipe.cmd("HSET").arg(members).arg(nick).arg(room).ignore();
            }
        }
        Event::Stop => {
            pipe.cmd("DEL").arg(members).ignore();
        }
        Event::Say { .. } | Event::Private { .. } => {}
    }
}

fn is_auth(e: &RedisError) -> bool {
    let text = e.to_string();
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
        || text.contains("invalid password")
}
