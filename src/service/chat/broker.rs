//! The broker: nicks, rooms with their members and history, and what each command does. No
//! I/O: it only pushes shared [`Delivery`]s into members' [`Outbox`]es, which never waits.
//!
//! One mutex guards the whole state; every critical section is a few map operations and
//! queue pushes, with no await inside.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::cluster::remote::said;
use super::cluster::remote::Remote;
use super::cluster::Slot;
use super::cluster::{Event, Link};
use super::history::{History, HistoryLimits, Keep, DEFAULT_HISTORY_BYTES, MAX_HISTORY_BYTES};
use super::messages::{ClientMessage, ServerMessage};
use super::nick::{normalize_room, skeleton, validate_nick, RoomName};
use super::outbox::{Delivery, Outbox};
use super::replies::{
    broadcast, change_nick, check_text, gone, list_rooms, notify, private, room_notice, send,
    send_ready, taken, taken_check, who,
};
use super::{is_blank, now_ms, sanitize};
use crate::wire::ErrorFrame;

/// Default number of messages a room keeps and replays to whoever joins.
pub const DEFAULT_HISTORY: usize = 50;
/// Most history a room may be configured to keep (`--history`).
pub const MAX_HISTORY: usize = 10_000;
/// Default room every client starts in.
pub(crate) const DEFAULT_ROOM: &str = "lobby";
/// Most names listed by `/who` or `/rooms`; the rest are counted.
pub(crate) const MAX_LISTED_NAMES: usize = 100;

/// Broker settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Messages kept per room (capped at [`MAX_HISTORY`]).
    pub history: usize,
    /// Bytes of history kept per room (capped at [`MAX_HISTORY_BYTES`]; see
    /// [`DEFAULT_HISTORY_BYTES`] for how a message is counted).
    pub history_bytes: usize,
    /// Room a client joins when it names none (normalised, without `#`).
    pub default_room: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            history: DEFAULT_HISTORY,
            history_bytes: DEFAULT_HISTORY_BYTES,
            default_room: DEFAULT_ROOM.to_owned(),
        }
    }
}

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep going.
    Continue,
    /// The client said `/quit`: close after what is queued.
    Quit,
}

#[derive(Debug)]
pub(super) struct Client {
    pub nick: String,
    pub room: Option<String>,
    pub outbox: Arc<Outbox>,
}

#[derive(Debug, Default)]
pub(super) struct Room {
    pub members: Vec<u64>,
    pub history: History,
    /// Joins waiting for the room's history from the cluster: the room stays until then.
    pub loading: usize,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub clients: HashMap<u64, Client>,
    /// Skeleton → client: the confusable-aware nick registry.
    pub nicks: HashMap<String, u64>,
    pub rooms: BTreeMap<String, Room>,
    pub next_id: u64,
    /// Other nodes' clients, when the broker is in a cluster.
    pub remote: Remote,
}

/// The chat broker shared by every connection of a server (framed and line alike).
#[derive(Debug, Default)]
pub struct Broker {
    state: Mutex<State>,
    config: BrokerConfig,
    link: Option<Arc<Link>>,
}

/// A registered client. Dropping it frees the nick and leaves the room, however the
/// connection ended.
#[derive(Debug)]
pub struct Member {
    broker: Arc<Broker>,
    id: u64,
    leave_reason: &'static str,
}

impl Member {
    /// Handles one command from this client.
    pub fn handle(&self, msg: ClientMessage) -> Control {
        self.broker.handle(self.id, msg)
    }

    /// [`Member::handle`], first asking the cluster (if the broker is in one) what a command
    /// needs from it: a new nick is claimed in Redis, a room's history is read from it.
    pub async fn dispatch(&self, msg: ClientMessage) -> Control {
        let Some(link) = self.broker.link.clone() else {
            return self.handle(msg);
        };
        match &msg {
            ClientMessage::Nick { nick } => {
                let key = skeleton(nick);
                if validate_nick(nick).is_ok() && !self.broker.holds(self.id, &key) {
                    if let Err(refusal) = self.broker.claim(&link, nick, Some(self.id)).await {
                        self.broker.refuse(self.id, &refusal);
                        return Control::Continue;
                    }
                    let control = self.handle(msg);
                    if !self.broker.holds_locally(&key) {
                        link.release(key);
                    }
                    return control;
                }
            }
            ClientMessage::Join { room } => {
                if let Ok(room) = normalize_room(room) {
                    let loaded = self.broker.load_room(&link, &room).await;
                    let control = self.handle(msg);
                    self.broker.loaded(loaded);
                    return control;
                }
            }
            _ => {}
        }
        self.handle(msg)
    }

    /// Says why the client left, for the notice its room sees.
    pub(crate) fn set_leave_reason(&mut self, reason: &'static str) {
        self.leave_reason = reason;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.broker.remove(self.id, self.leave_reason);
    }
}

impl Broker {
    /// A broker with `config` (its history capped at [`MAX_HISTORY`]).
    pub fn new(mut config: BrokerConfig) -> Arc<Broker> {
        config.history = config.history.min(MAX_HISTORY);
        config.history_bytes = config.history_bytes.min(MAX_HISTORY_BYTES);
        Arc::new(Broker {
            state: Mutex::new(State::default()),
            config,
            link: None,
        })
    }

    /// A broker that is one node of a cluster through `link`; start the link's loops with
    /// [`Link::start`] on the result.
    pub fn clustered(mut config: BrokerConfig, link: Arc<Link>) -> Arc<Broker> {
        config.history = config.history.min(MAX_HISTORY);
        config.history_bytes = config.history_bytes.min(MAX_HISTORY_BYTES);
        Arc::new(Broker {
            state: Mutex::new(State::default()),
            config,
            link: Some(link),
        })
    }

    /// The broker's cluster link, if it is a node of one.
    pub fn link(&self) -> Option<&Arc<Link>> {
        self.link.as_ref()
    }

    /// Messages each room keeps.
    pub(crate) fn history_size(&self) -> usize {
        self.config.history
    }

    /// [`Broker::register`] for a broker in a cluster as well: the nick is first claimed in
    /// Redis (exactly one of two nodes claiming it at once gets it) and the room's history
    /// read from there.
    ///
    /// # Errors
    /// As [`Broker::register`], and `cluster_unavailable` when Redis cannot be asked.
    pub async fn admit(
        self: &Arc<Self>,
        nick: &str,
        room: Option<&str>,
        outbox: Arc<Outbox>,
    ) -> Result<Member, ErrorFrame> {
        let Some(link) = self.link.clone() else {
            return self.register(nick, room, outbox);
        };
        validate_nick(nick).map_err(|e| ErrorFrame::new("invalid_nick", e.to_string()))?;
        let room = match room {
            Some(room) => {
                normalize_room(room).map_err(|e| ErrorFrame::new("invalid_room", e.to_string()))?
            }
            None => self.config.default_room.clone(),
        };
        self.claim(&link, nick, None).await?;
        let loaded = self.load_room(&link, &room).await;
        let registered = self.register(nick, Some(&room), outbox);
        self.loaded(loaded);
        if registered.is_err() && !self.holds_locally(&skeleton(nick)) {
            link.release(skeleton(nick));
        }
        registered
    }

    /// Claims `nick` in the cluster for client `me` (or a new one).
    async fn claim(&self, link: &Link, nick: &str, me: Option<u64>) -> Result<(), ErrorFrame> {
        let key = skeleton(nick);
        taken_check(&self.lock(), &key, nick, me)?;
        if link.claim(&key).await? {
            return Ok(());
        }
        let state = self.lock();
        let held = state.remote.holder(&key).map_or(nick, |m| m.nick.as_str());
        Err(taken(&state, nick, held))
    }

    /// Whether client `id` holds the nick skeleton `key`.
    fn holds(&self, id: u64, key: &str) -> bool {
        self.lock().nicks.get(key) == Some(&id)
    }

    fn refuse(&self, id: u64, refusal: &ErrorFrame) {
        send(
            &self.lock(),
            id,
            Delivery::new(ServerMessage::from(refusal)),
        );
    }

    /// Makes sure `room` has the cluster's history before someone joins it here: if no
    /// local client is in it, its history is read from Redis (merged with anything that
    /// arrived meanwhile). Returns the room to pass to [`Broker::loaded`] after the join.
    async fn load_room(&self, link: &Link, room: &str) -> Option<String> {
        {
            let mut state = self.lock();
            let entry = state.rooms.entry(room.to_owned()).or_default();
            if !entry.members.is_empty() {
                return None;
            }
            entry.loading += 1;
        }
        let kept = link.history(room, self.config.history).await;
        let mut state = self.lock();
        if let (Some(entry), Some(kept)) = (state.rooms.get_mut(room), kept) {
            if entry.members.is_empty() {
                entry.history.seed(kept, self.history_limits());
            }
        }
        Some(room.to_owned())
    }

    /// Ends a [`Broker::load_room`]: a room nobody joined after all goes again.
    fn loaded(&self, room: Option<String>) {
        let Some(room) = room else {
            return;
        };
        let mut state = self.lock();
        let keep = room == self.config.default_room;
        if let Some(entry) = state.rooms.get_mut(&room) {
            entry.loading = entry.loading.saturating_sub(1);
            if entry.members.is_empty() && entry.loading == 0 {
                entry.history.clear();
                if !keep {
                    state.rooms.remove(&room);
                }
            }
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `nick` with its `outbox` and joins `room` (else the default room): the
    /// client gets `ready`, the room's history, then everyone sees the join notice.
    ///
    /// # Errors
    /// A [`ErrorFrame`] (`invalid_nick`, `nick_taken` with a free suggestion, `invalid_room`);
    /// nothing changed, and the client may try again.
    pub fn register(
        self: &Arc<Self>,
        nick: &str,
        room: Option<&str>,
        outbox: Arc<Outbox>,
    ) -> Result<Member, ErrorFrame> {
        validate_nick(nick).map_err(|e| ErrorFrame::new("invalid_nick", e.to_string()))?;
        let room = match room {
            Some(room) => {
                normalize_room(room).map_err(|e| ErrorFrame::new("invalid_room", e.to_string()))?
            }
            None => self.config.default_room.clone(),
        };
        let mut state = self.lock();
        let key = skeleton(nick);
        taken_check(&state, &key, nick, None)?;
        let id = state.next_id;
        state.next_id += 1;
        state.nicks.insert(key, id);
        state.clients.insert(
            id,
            Client {
                nick: nick.to_owned(),
                room: None,
                outbox,
            },
        );
        self.enter(&mut state, id, room);
        Ok(Member {
            broker: self.clone(),
            id,
            leave_reason: "connection closed",
        })
    }

    /// Nicks registered now.
    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    /// Bytes of history kept now, all rooms together (counted as [`BrokerConfig`]'s
    /// `history_bytes` is).
    pub fn history_bytes(&self) -> usize {
        self.lock().rooms.values().map(|r| r.history.bytes()).sum()
    }

    pub(crate) fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            messages: self.config.history,
            bytes: self.config.history_bytes,
        }
    }

    fn remove(&self, id: u64, reason: &str) {
        let mut state = self.lock();
        self.exit_room(&mut state, id, reason);
        if let Some(client) = state.clients.remove(&id) {
            let key = skeleton(&client.nick);
            state.nicks.remove(&key);
            if let Some(link) = &self.link {
                link.publish(Event::Quit { nick: client.nick });
                link.release(key);
            }
        }
    }

    fn handle(&self, id: u64, msg: ClientMessage) -> Control {
        let mut state = self.lock();
        let result = match msg {
            ClientMessage::Say { text } => self.speak(&mut state, id, &text, false),
            ClientMessage::Me { text } => self.speak(&mut state, id, &text, true),
            ClientMessage::Msg { to, text } => self.private(&state, id, &to, &text),
            ClientMessage::Nick { nick } => {
                let old = state.clients.get(&id).map(|c| c.nick.clone());
                let changed = change_nick(&mut state, id, &nick);
                self.renamed(&state, id, old, &changed);
                changed
            }
            ClientMessage::Join { room } => match normalize_room(&room) {
                Ok(room) => {
                    self.enter(&mut state, id, room);
                    Ok(())
                }
                Err(e) => Err(ErrorFrame::new("invalid_room", e.to_string())),
            },
            ClientMessage::Leave => {
                self.exit_room(&mut state, id, "left");
                send_ready(&state, id);
                Ok(())
            }
            ClientMessage::Rooms => {
                list_rooms(&state, id);
                Ok(())
            }
            ClientMessage::Who => who(&state, id),
            ClientMessage::Help => {
                for line in super::command::HELP_LINES {
                    notify(&state, id, None, (*line).to_owned());
                }
                Ok(())
            }
            ClientMessage::Quit => {
                notify(&state, id, None, "bye".to_owned());
                return Control::Quit;
            }
            ClientMessage::Register { .. } => Err(ErrorFrame::new(
                "already_registered",
                "you already have a nick; use /nick NEW to change it",
            )),
        };
        if let Err(refusal) = result {
            send(&state, id, Delivery::new(ServerMessage::from(&refusal)));
        }
        Control::Continue
    }

    /// Moves `id` into `room`: leave notice in the old room, `ready` and history for the
    /// client, join notice in the new room.
    fn enter(&self, state: &mut State, id: u64, room: String) {
        let current = state.clients.get(&id).and_then(|c| c.room.clone());
        if current.as_deref() == Some(room.as_str()) {
            notify(
                state,
                id,
                Some(&room),
                format!("you are already in {}", RoomName(&room)),
            );
            return;
        }
        self.exit_room(state, id, "left");
        let Some(client) = state.clients.get_mut(&id) else {
            return;
        };
        client.room = Some(room.clone());
        let nick = client.nick.clone();
        send_ready(state, id);
        if let Some(link) = &self.link {
            link.publish(Event::Join {
                nick: nick.clone(),
                room: room.clone(),
            });
        }
        let entry = state.rooms.entry(room.clone()).or_default();
        entry.members.push(id);
        let replay = entry.history.replay();
        if !replay.is_empty() {
            let n = replay.len();
            notify(
                state,
                id,
                Some(&room),
                match n {
                    1 => format!("the last message in {}:", RoomName(&room)),
                    n => format!("the last {n} messages in {}:", RoomName(&room)),
                },
            );
            for delivery in replay {
                send(state, id, delivery);
            }
        }
        let joined = format!("{nick} joined {}", RoomName(&room));
        broadcast(state, &room, room_notice(&room, joined), None);
    }

    fn exit_room(&self, state: &mut State, id: u64, reason: &str) {
        let Some(client) = state.clients.get_mut(&id) else {
            return;
        };
        let Some(room) = client.room.take() else {
            return;
        };
        let nick = client.nick.clone();
        let keep = room == self.config.default_room;
        if let Some(link) = &self.link {
            link.publish(Event::Leave {
                nick: nick.clone(),
                room: room.clone(),
                reason: if reason == "left" { "" } else { reason }.to_owned(),
            });
        }
        if let Some(entry) = state.rooms.get_mut(&room) {
            entry.members.retain(|m| *m != id);
            if entry.members.is_empty() && entry.loading == 0 {
                // An empty room's history goes (and the room, but for the default one), so
                // what the broker holds is bounded by who is connected.
                entry.history.clear();
                if !keep {
                    state.rooms.remove(&room);
                }
            }
        }
        let left = match reason {
            "left" => format!("{nick} left {}", RoomName(&room)),
            reason => format!("{nick} left {} ({reason})", RoomName(&room)),
        };
        broadcast(state, &room, room_notice(&room, left), None);
    }

    fn speak(
        &self,
        state: &mut State,
        id: u64,
        text: &str,
        action: bool,
    ) -> Result<(), ErrorFrame> {
        check_text(text)?;
        if is_blank(text) {
            // Nothing visible to say: nobody is sent an empty line.
            return Ok(());
        }
        let client = state.clients.get(&id).ok_or_else(gone)?;
        let Some(room) = client.room.clone() else {
            return Err(ErrorFrame::new(
                "not_in_room",
                "you are in no room; /join ROOM first",
            ));
        };
        let (time, nick, text) = (now_ms(), client.nick.clone(), sanitize(text));
        let slot = self.slot()?;
        let keep = Keep {
            limits: self.history_limits(),
            origin: slot
                .as_ref()
                .zip(self.link.as_ref())
                .map(|(slot, link)| (Arc::from(link.node()), slot.seq())),
        };
        let msg = said(time, room.clone(), nick.clone(), text.clone(), action);
        broadcast(state, &room, Delivery::new(msg), Some(keep));
        if let Some(slot) = slot {
            slot.send(Event::Say {
                time,
                room,
                nick,
                text,
                action,
            });
        }
        Ok(())
    }

    /// A place in the cluster link's queue for a message, if the broker is in a cluster.
    fn slot(&self) -> Result<Option<Slot<'_>>, ErrorFrame> {
        let Some(link) = &self.link else {
            return Ok(None);
        };
        link.reserve().map(Some).ok_or_else(|| {
            ErrorFrame::new(
                "cluster_queue_full",
                "not sent: the chat cluster's Redis has been away too long and this node's \
                 queue for it is full; try again when it is back",
            )
        })
    }

    /// A private message: to a local client as on a lone node, else through the cluster to
    /// the node whose client holds the nick.
    fn private(&self, state: &State, id: u64, to: &str, text: &str) -> Result<(), ErrorFrame> {
        let key = skeleton(to);
        let remote = match state.remote.holder(&key) {
            Some(member) if !state.nicks.contains_key(&key) => member.nick.clone(),
            _ => return private(state, id, to, text),
        };
        check_text(text)?;
        if is_blank(text) {
            return Ok(());
        }
        let from = state.clients.get(&id).ok_or_else(gone)?.nick.clone();
        let slot = self.slot()?;
        let (time, text) = (now_ms(), sanitize(text));
        let msg = ServerMessage::Private {
            time,
            from: from.clone(),
            to: remote.clone(),
            text: text.clone(),
        };
        send(state, id, Delivery::new(msg));
        if let Some(slot) = slot {
            slot.send(Event::Private {
                time,
                from,
                to: remote,
                text,
            });
        }
        Ok(())
    }

    /// After a `/nick`: tells the cluster, and frees the old nick's key there.
    fn renamed(
        &self,
        state: &State,
        id: u64,
        old: Option<String>,
        changed: &Result<(), ErrorFrame>,
    ) {
        let (Some(link), Some(old), Ok(())) = (&self.link, old, changed) else {
            return;
        };
        let Some(client) = state.clients.get(&id) else {
            return;
        };
        if client.nick == old {
            return;
        }
        let (old_key, new_key) = (skeleton(&old), skeleton(&client.nick));
        link.publish(Event::Nick {
            old,
            new: client.nick.clone(),
            room: client.room.clone(),
        });
        if old_key != new_key {
            link.release(old_key);
        }
    }
}

#[cfg(test)]
#[path = "broker_tests.rs"]
mod tests;
