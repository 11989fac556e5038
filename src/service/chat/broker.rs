//! The broker: nicks, rooms with their members and history, and what each command does. No
//! I/O: it only pushes shared [`Delivery`]s into members' [`Outbox`]es, which never waits.
//!
//! One mutex guards the whole state; every critical section is a few map operations and
//! queue pushes, with no await inside.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::messages::{ClientMessage, ServerMessage};
use super::nick::{normalize_room, skeleton, suggest, validate_nick, RoomName};
use super::outbox::{Delivery, Outbox};
use super::{now_ms, sanitize, Refusal, MAX_MESSAGE_BYTES};

/// Default number of messages a room keeps and replays to whoever joins.
pub const DEFAULT_HISTORY: usize = 50;
/// Most history a room may be configured to keep (`--history`).
pub const MAX_HISTORY: usize = 10_000;
/// Default room every client starts in.
pub const DEFAULT_ROOM: &str = "lobby";
/// Most names listed by `/who` or `/rooms`; the rest are counted.
pub const MAX_LISTED_NAMES: usize = 100;

/// Broker settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Messages kept per room (capped at [`MAX_HISTORY`]).
    pub history: usize,
    /// Room a client joins when it names none (normalised, without `#`).
    pub default_room: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            history: DEFAULT_HISTORY,
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
struct Client {
    nick: String,
    room: Option<String>,
    outbox: Arc<Outbox>,
}

#[derive(Debug, Default)]
struct Room {
    members: Vec<u64>,
    history: VecDeque<Arc<Delivery>>,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<u64, Client>,
    /// Skeleton → client: the confusable-aware nick registry.
    nicks: HashMap<String, u64>,
    rooms: BTreeMap<String, Room>,
    next_id: u64,
}

/// The chat broker shared by every connection of a server (framed and line alike).
#[derive(Debug, Default)]
pub struct Broker {
    state: Mutex<State>,
    config: BrokerConfig,
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

    /// Says why the client left, for the notice its room sees.
    pub fn set_leave_reason(&mut self, reason: &'static str) {
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
        Arc::new(Broker {
            state: Mutex::new(State::default()),
            config,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `nick` with its `outbox` and joins `room` (else the default room): the
    /// client gets `ready`, the room's history, then everyone sees the join notice.
    ///
    /// # Errors
    /// A [`Refusal`] (`invalid_nick`, `nick_taken` with a free suggestion, `invalid_room`);
    /// nothing changed, and the client may try again.
    pub fn register(
        self: &Arc<Self>,
        nick: &str,
        room: Option<&str>,
        outbox: Arc<Outbox>,
    ) -> Result<Member, Refusal> {
        validate_nick(nick).map_err(|e| Refusal::new("invalid_nick", e.to_string()))?;
        let room = match room {
            Some(room) => {
                normalize_room(room).map_err(|e| Refusal::new("invalid_room", e.to_string()))?
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

    fn remove(&self, id: u64, reason: &str) {
        let mut state = self.lock();
        self.exit_room(&mut state, id, reason);
        if let Some(client) = state.clients.remove(&id) {
            state.nicks.remove(&skeleton(&client.nick));
        }
    }

    fn handle(&self, id: u64, msg: ClientMessage) -> Control {
        let mut state = self.lock();
        let result = match msg {
            ClientMessage::Say { text } => self.speak(&mut state, id, &text, false),
            ClientMessage::Me { text } => self.speak(&mut state, id, &text, true),
            ClientMessage::Msg { to, text } => private(&state, id, &to, &text),
            ClientMessage::Nick { nick } => change_nick(&mut state, id, &nick),
            ClientMessage::Join { room } => match normalize_room(&room) {
                Ok(room) => {
                    self.enter(&mut state, id, room);
                    Ok(())
                }
                Err(e) => Err(Refusal::new("invalid_room", e.to_string())),
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
            ClientMessage::Register { .. } => Err(Refusal::new(
                "already_registered",
                "you already have a nick; use /nick NEW to change it",
            )),
        };
        if let Err(refusal) = result {
            send(&state, id, Delivery::new(refusal.to_message()));
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
        let entry = state.rooms.entry(room.clone()).or_default();
        entry.members.push(id);
        let replay: Vec<_> = entry.history.iter().cloned().collect();
        if !replay.is_empty() {
            let n = replay.len();
            notify(
                state,
                id,
                Some(&room),
                format!("last {n} messages in {}:", RoomName(&room)),
            );
            for delivery in replay {
                send(state, id, delivery);
            }
        }
        let joined = format!("{nick} joined {}", RoomName(&room));
        broadcast(state, &room, room_notice(&room, joined), false, 0);
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
        if let Some(entry) = state.rooms.get_mut(&room) {
            entry.members.retain(|m| *m != id);
            if entry.members.is_empty() && !keep {
                // An empty room and its history go, so rooms are bounded by clients.
                state.rooms.remove(&room);
            }
        }
        let left = format!("{nick} left {} ({reason})", RoomName(&room));
        broadcast(state, &room, room_notice(&room, left), false, 0);
    }

    fn speak(&self, state: &mut State, id: u64, text: &str, action: bool) -> Result<(), Refusal> {
        check_text(text)?;
        let client = state.clients.get(&id).ok_or_else(gone)?;
        let Some(room) = client.room.clone() else {
            return Err(Refusal::new(
                "not_in_room",
                "you are in no room; /join ROOM first",
            ));
        };
        let (time, nick, text) = (now_ms(), client.nick.clone(), sanitize(text));
        let msg = if action {
            ServerMessage::Action {
                time,
                room: room.clone(),
                nick,
                text,
            }
        } else {
            ServerMessage::Message {
                time,
                room: room.clone(),
                nick,
                text,
            }
        };
        broadcast(state, &room, Delivery::new(msg), true, self.config.history);
        Ok(())
    }
}

fn gone() -> Refusal {
    Refusal::new("internal", "you are not registered")
}

fn check_text(text: &str) -> Result<(), Refusal> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(Refusal::new(
            "message_too_long",
            format!(
                "a message has at most {MAX_MESSAGE_BYTES} bytes (this one has {}); not sent",
                text.len()
            ),
        ));
    }
    Ok(())
}

/// Refuses `nick` (skeleton `key`) if someone other than `me` holds a look-alike.
fn taken_check(state: &State, key: &str, nick: &str, me: Option<u64>) -> Result<(), Refusal> {
    let Some(holder) = state.nicks.get(key).filter(|h| Some(**h) != me) else {
        return Ok(());
    };
    let held = state.clients.get(holder).map_or("", |c| c.nick.as_str());
    let hint = match suggest(nick, |s| state.nicks.contains_key(s)) {
        Some(free) => format!("; try {free}"),
        None => String::new(),
    };
    Err(Refusal::new(
        "nick_taken",
        format!("nick {nick} is taken (too close to {held}){hint}"),
    ))
}

fn change_nick(state: &mut State, id: u64, nick: &str) -> Result<(), Refusal> {
    validate_nick(nick).map_err(|e| Refusal::new("invalid_nick", e.to_string()))?;
    let key = skeleton(nick);
    taken_check(state, &key, nick, Some(id))?;
    let client = state.clients.get_mut(&id).ok_or_else(gone)?;
    let old = std::mem::replace(&mut client.nick, nick.to_owned());
    let room = client.room.clone();
    state.nicks.remove(&skeleton(&old));
    state.nicks.insert(key, id);
    send_ready(state, id);
    if let Some(room) = room {
        let text = format!("{old} is now known as {nick}");
        broadcast(state, &room, room_notice(&room, text), false, 0);
    }
    Ok(())
}

fn private(state: &State, id: u64, to: &str, text: &str) -> Result<(), Refusal> {
    check_text(text)?;
    let from = state.clients.get(&id).ok_or_else(gone)?;
    let not_found = || {
        let shown = crate::text::escape_one_line(to, super::nick::MAX_NICK_CHARS);
        Refusal::new("no_such_nick", format!("nobody is called {shown}"))
    };
    let target = *state.nicks.get(&skeleton(to)).ok_or_else(not_found)?;
    let to_nick = state
        .clients
        .get(&target)
        .ok_or_else(not_found)?
        .nick
        .clone();
    let delivery = Delivery::new(ServerMessage::Private {
        time: now_ms(),
        from: from.nick.clone(),
        to: to_nick,
        text: sanitize(text),
    });
    send(state, target, delivery.clone());
    if target != id {
        send(state, id, delivery);
    }
    Ok(())
}

fn who(state: &State, id: u64) -> Result<(), Refusal> {
    let room = state.clients.get(&id).and_then(|c| c.room.clone());
    let Some(room) = room else {
        return Err(Refusal::new(
            "not_in_room",
            "you are in no room; /join ROOM first",
        ));
    };
    let members = state.rooms.get(&room).map_or(&[][..], |r| &r.members[..]);
    let names: Vec<&str> = members
        .iter()
        .filter_map(|m| state.clients.get(m).map(|c| c.nick.as_str()))
        .collect();
    let text = format!("in {}: {}", RoomName(&room), listing(&names));
    notify(state, id, Some(&room), text);
    Ok(())
}

fn list_rooms(state: &State, id: u64) {
    let names: Vec<String> = state
        .rooms
        .iter()
        .map(|(name, room)| format!("{} ({})", RoomName(name), room.members.len()))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    notify(state, id, None, format!("rooms: {}", listing(&names)));
}

/// `a, b, c` for at most [`MAX_LISTED_NAMES`] names, then `… and N more`.
fn listing(names: &[&str]) -> String {
    let mut text = names
        .iter()
        .take(MAX_LISTED_NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED_NAMES {
        text.push_str(&format!(", … and {} more", names.len() - MAX_LISTED_NAMES));
    }
    if names.is_empty() {
        text.push_str("(none)");
    }
    text
}

fn room_notice(room: &str, text: String) -> Arc<Delivery> {
    Delivery::new(ServerMessage::Notice {
        time: now_ms(),
        room: Some(room.to_owned()),
        text,
    })
}

fn send_ready(state: &State, id: u64) {
    if let Some(client) = state.clients.get(&id) {
        let ready = ServerMessage::Ready {
            nick: client.nick.clone(),
            room: client.room.clone(),
        };
        client.outbox.push(Delivery::new(ready));
    }
}

fn notify(state: &State, id: u64, room: Option<&str>, text: String) {
    let msg = ServerMessage::Notice {
        time: now_ms(),
        room: room.map(str::to_owned),
        text,
    };
    send(state, id, Delivery::new(msg));
}

/// Queues for one client; an overflow closes its outbox and its connection ends on its own.
fn send(state: &State, id: u64, delivery: Arc<Delivery>) {
    if let Some(client) = state.clients.get(&id) {
        client.outbox.push(delivery);
    }
}

/// Queues one shared delivery for every member of `room`, and keeps it in the room's
/// history (at most `history` entries) when `keep` is set.
fn broadcast(state: &mut State, room: &str, delivery: Arc<Delivery>, keep: bool, history: usize) {
    let Some(entry) = state.rooms.get_mut(room) else {
        return;
    };
    if keep && history > 0 {
        if entry.history.len() >= history {
            entry.history.pop_front();
        }
        entry.history.push_back(delivery.clone());
    }
    for member in &entry.members {
        if let Some(client) = state.clients.get(member) {
            client.outbox.push(delivery.clone());
        }
    }
}

#[cfg(test)]
#[path = "broker_tests.rs"]
mod tests;
