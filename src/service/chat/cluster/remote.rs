//! Other nodes' clients as this node knows them (from their events, heartbeats and member
//! hashes), and what an event from another node does to the local broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::event::{Event, Stored};
use crate::service::chat::broker::{Broker, State};
use crate::service::chat::history::Keep;
use crate::service::chat::messages::ServerMessage;
use crate::service::chat::nick::{skeleton, RoomName};
use crate::service::chat::outbox::Delivery;
use crate::service::chat::replies::{broadcast, room_notice};

/// Most other nodes this node keeps track of; events from further nodes are not shown in
/// `/who` (their messages are still delivered).
pub(crate) const MAX_REMOTE_NODES: usize = 1024;

/// A message kept in a room's history with the (node, sequence) that names it everywhere.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    /// The node that published it.
    pub node: Arc<str>,
    /// Its sequence number on that node.
    pub seq: u64,
    /// The message.
    pub delivery: Arc<Delivery>,
}

impl Kept {
    /// A history entry read back from Redis, if it is a room message.
    pub(crate) fn from_stored(stored: Stored) -> Option<Kept> {
        let delivery = match stored.event {
            Event::Say {
                time,
                room,
                nick,
                text,
                action,
            } => Delivery::new(said(time, room, nick, text, action)),
            _ => return None,
        };
        Some(Kept {
            node: Arc::from(stored.node),
            seq: stored.seq,
            delivery,
        })
    }
}

/// A room message as its clients see it.
pub(crate) fn said(
    time: u64,
    room: String,
    nick: String,
    text: String,
    action: bool,
) -> ServerMessage {
    if action {
        ServerMessage::Action {
            time,
            room,
            nick,
            text,
        }
    } else {
        ServerMessage::Message {
            time,
            room,
            nick,
            text,
        }
    }
}

/// One client of another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteMember {
    /// Its nick.
    pub nick: String,
    /// Its room, if any.
    pub room: Option<String>,
}

/// Other nodes' clients: node → nick skeleton → client.
#[derive(Debug, Default)]
pub(crate) struct Remote {
    nodes: HashMap<String, HashMap<String, RemoteMember>>,
}

impl Remote {
    /// The other node's client holding a nick with this skeleton.
    pub(crate) fn holder(&self, key: &str) -> Option<&RemoteMember> {
        self.nodes.values().find_map(|m| m.get(key))
    }

    /// Nicks of other nodes' clients in `room`.
    pub(crate) fn in_room<'a>(&'a self, room: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.nodes
            .values()
            .flat_map(|m| m.values())
            .filter(move |m| m.room.as_deref() == Some(room))
            .map(|m| m.nick.as_str())
    }

    /// Rooms with other nodes' clients in them, with how many.
    pub(crate) fn rooms(&self) -> BTreeMap<&str, usize> {
        let mut rooms = BTreeMap::new();
        for member in self.nodes.values().flat_map(|m| m.values()) {
            if let Some(room) = &member.room {
                *rooms.entry(room.as_str()).or_default() += 1;
            }
        }
        rooms
    }

    /// The nodes known.
    pub(crate) fn nodes(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    fn node(&mut self, node: &str) -> Option<&mut HashMap<String, RemoteMember>> {
        if !self.nodes.contains_key(node) && self.nodes.len() >= MAX_REMOTE_NODES {
            return None;
        }
        Some(self.nodes.entry(node.to_owned()).or_default())
    }

    fn set(&mut self, node: &str, nick: &str, room: Option<String>) {
        if let Some(members) = self.node(node) {
            let member = RemoteMember {
                nick: nick.to_owned(),
                room,
            };
            members.insert(skeleton(nick), member);
        }
    }

    fn remove(&mut self, node: &str, nick: &str) {
        if let Some(members) = self.nodes.get_mut(node) {
            members.remove(&skeleton(nick));
        }
    }

    /// Replaces all a node knows of `node`'s clients.
    pub(crate) fn replace(&mut self, node: &str, all: Vec<(String, Option<String>)>) {
        if let Some(members) = self.node(node) {
            *members = all
                .into_iter()
                .map(|(nick, room)| (skeleton(&nick), RemoteMember { nick, room }))
                .collect();
        }
    }

    /// Forgets `node`, returning its clients.
    pub(crate) fn drop_node(&mut self, node: &str) -> Vec<RemoteMember> {
        self.nodes
            .remove(node)
            .map(|m| m.into_values().collect())
            .unwrap_or_default()
    }
}

impl Broker {
    /// Delivers an event from another node to this node's clients and updates the view of
    /// that node's clients.
    pub(crate) fn apply_remote(&self, stored: Stored) {
        let mut state = self.lock();
        let node = stored.node.as_str();
        match stored.event {
            Event::Say {
                time,
                room,
                nick,
                text,
                action,
            } => {
                let keep = Keep {
                    limits: self.history_limits(),
                    origin: Some((Arc::from(node), stored.seq)),
                };
                let msg = said(time, room.clone(), nick, text, action);
                broadcast(&mut state, &room, Delivery::new(msg), Some(keep));
            }
            Event::Private {
                time,
                from,
                to,
                text,
            } => {
                let Some(id) = state.nicks.get(&skeleton(&to)).copied() else {
                    return;
                };
                let Some(client) = state.clients.get(&id) else {
                    return;
                };
                let to = client.nick.clone();
                let msg = ServerMessage::Private {
                    time,
                    from,
                    to,
                    text,
                };
                client.outbox.push(Delivery::new(msg));
            }
            Event::Join { nick, room } => {
                state.remote.set(node, &nick, Some(room.clone()));
                let text = format!("{nick} joined {}", RoomName(&room));
                broadcast(&mut state, &room, room_notice(&room, text), None);
            }
            Event::Leave { nick, room, reason } => {
                state.remote.set(node, &nick, None);
                left(&mut state, &nick, &room, &reason);
            }
            Event::Nick { old, new, room } => {
                state.remote.remove(node, &old);
                state.remote.set(node, &new, room.clone());
                if let Some(room) = room {
                    let text = format!("{old} is now known as {new}");
                    broadcast(&mut state, &room, room_notice(&room, text), None);
                }
            }
            Event::Quit { nick } => state.remote.remove(node, &nick),
            Event::Presence { members } => state.remote.replace(node, members),
            Event::Stop => {
                drop(state);
                self.drop_node(node, "server stopped");
            }
        }
    }

    /// Forgets a node that stopped or was taken for dead (`why`): its clients leave their
    /// rooms here.
    pub(crate) fn drop_node(&self, node: &str, why: &str) {
        let mut state = self.lock();
        for member in state.remote.drop_node(node) {
            if let Some(room) = member.room {
                left(&mut state, &member.nick, &room, why);
            }
        }
    }

    /// Replaces what this node knows of `node`'s clients (from its member hash).
    pub(crate) fn replace_remote(&self, node: &str, members: Vec<(String, Option<String>)>) {
        self.lock().remote.replace(node, members);
    }

    /// The nodes this node knows clients of.
    pub(crate) fn remote_nodes(&self) -> Vec<String> {
        self.lock().remote.nodes()
    }

    /// Tells every local client `text`, as a server notice.
    pub(crate) fn notify_everyone(&self, text: &str) {
        let state = self.lock();
        let notice = Delivery::new(ServerMessage::Notice {
            time: crate::service::chat::now_ms(),
            room: None,
            text: text.to_owned(),
        });
        for client in state.clients.values() {
            client.outbox.push(notice.clone());
        }
    }

    /// Tells the local client holding the nick skeleton `key` a notice.
    pub(crate) fn notify_holder(&self, key: &str, text: &str) {
        let state = self.lock();
        if let Some(id) = state.nicks.get(key) {
            crate::service::chat::replies::notify(&state, *id, None, text.to_owned());
        }
    }

    /// The skeletons of the nicks local clients hold.
    pub(crate) fn local_nick_keys(&self) -> Vec<String> {
        self.lock().nicks.keys().cloned().collect()
    }

    /// Whether a local client holds a nick with this skeleton.
    pub(crate) fn holds_locally(&self, key: &str) -> bool {
        self.lock().nicks.contains_key(key)
    }

    /// Queues every local client's nick and room for the other nodes, in order with the
    /// node's other events (or marks it to do once the queue has room).
    pub(crate) fn publish_presence(&self) {
        let Some(link) = self.link() else {
            return;
        };
        let state = self.lock();
        let members = state
            .clients
            .values()
            .map(|c| (c.nick.clone(), c.room.clone()))
            .collect();
        link.publish(Event::Presence { members });
    }
}

fn left(state: &mut State, nick: &str, room: &str, reason: &str) {
    let text = match reason {
        "" => format!("{nick} left {}", RoomName(room)),
        reason => format!("{nick} left {} ({reason})", RoomName(room)),
    };
    broadcast(state, room, room_notice(room, text), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_follows_joins_renames_and_dead_nodes() {
        let mut remote = Remote::default();
        remote.set("n1", "Alice", Some("lobby".into()));
        remote.set("n2", "bob", Some("lobby".into()));
        remote.set("n2", "carol", None);
        assert_eq!(
            remote.holder(&skeleton("a1ice")).map(|m| m.nick.as_str()),
            Some("Alice")
        );
        let mut in_lobby: Vec<&str> = remote.in_room("lobby").collect();
        in_lobby.sort_unstable();
        assert_eq!(in_lobby, ["Alice", "bob"]);
        assert_eq!(remote.rooms().get("lobby"), Some(&2));
        remote.remove("n2", "bob");
        remote.set("n2", "robert", Some("dev".into()));
        assert_eq!(remote.rooms().get("dev"), Some(&1));
        assert_eq!(remote.drop_node("n2").len(), 2);
        assert!(remote.holder("robert").is_none());
        remote.replace("n1", vec![("dave".into(), None)]);
        assert!(remote.holder(&skeleton("alice")).is_none());
        assert!(remote.holder("dave").is_some());
    }
}
