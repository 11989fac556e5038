//! The broker: nicks, rooms with their members and history, and what each command does. No
//! I/O: it only pushes shared [`Delivery`]s into members' [`Outbox`]es, which never waits.
//!
//! One mutex guards the whole state; every critical section is a few map operations and
//! queue pushes, with no await inside.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::history::{History, HistoryLimits, DEFAULT_HISTORY_BYTES, MAX_HISTORY_BYTES};
use super::messages::{ClientMessage, ServerMessage};
use super::nick::{normalize_room, skeleton, validate_nick, RoomName};
use super::outbox::{Delivery, Outbox};
use super::replies::{
    broadcast, change_nick, check_text, gone, list_rooms, notify, private, room_notice, send,
    send_ready, taken_check, who,
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
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub clients: HashMap<u64, Client>,
    /// Skeleton → client: the confusable-aware nick registry.
    pub nicks: HashMap<String, u64>,
    pub rooms: BTreeMap<String, Room>,
    pub next_id: u64,
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
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
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

    fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            messages: self.config.history,
            bytes: self.config.history_bytes,
        }
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
        if let Some(entry) = state.rooms.get_mut(&room) {
            entry.members.retain(|m| *m != id);
            if entry.members.is_empty() {
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
        let keep = Some(self.history_limits());
        broadcast(state, &room, Delivery::new(msg), keep);
        Ok(())
    }
}

#[cfg(test)]
#[path = "broker_tests.rs"]
mod tests;
