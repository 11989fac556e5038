//! What one node tells the others through the cluster's event stream, and how an event is
//! stored in a stream entry (`node`, `seq`, `ev` fields, the event as JSON).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::super::nick::{normalize_room, validate_nick};
use super::super::MAX_MESSAGE_BYTES;

/// Longest `ev` field read back, in bytes: an escaped message is at most four times its
/// text, plus names; anything longer was not written by a node.
pub(super) const MAX_EVENT_BYTES: usize = 8 * MAX_MESSAGE_BYTES;
/// Most members one `presence` event may carry.
pub(super) const MAX_PRESENCE_MEMBERS: usize = 100_000;
/// Longest `ev` field parsed: a `presence` event of [`MAX_PRESENCE_MEMBERS`] members with the
/// longest nicks and rooms.
const MAX_ENTRY_BYTES: usize = MAX_PRESENCE_MEMBERS * 96;

/// One change on a node that the other nodes act on. Text is already escaped by the node
/// whose client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Event {
    /// A message (or, with `action`, a `/me`) in a room.
    Say {
        time: u64,
        room: String,
        nick: String,
        text: String,
        action: bool,
    },
    /// A private message to a client of another node.
    Private {
        time: u64,
        from: String,
        to: String,
        text: String,
    },
    /// A client entered a room.
    Join { nick: String, room: String },
    /// A client left a room (`reason` is empty for `/leave`).
    Leave {
        nick: String,
        room: String,
        reason: String,
    },
    /// A client changed nick.
    Nick {
        old: String,
        new: String,
        room: Option<String>,
    },
    /// A client disconnected: its nick is free.
    Quit { nick: String },
    /// Every client of the node now (after an outage), replacing what others knew of it.
    Presence {
        members: Vec<(String, Option<String>)>,
    },
    /// The node is stopping: its clients leave, their nicks are already free.
    Stop,
}

/// An event as read back from a stream, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The stream entry's ID.
    pub id: StreamId,
    /// The node that published it.
    pub node: String,
    /// Its place in that node's sequence.
    pub seq: u64,
    /// The event, checked.
    pub event: Event,
}

/// A stream entry ID, `MS-SEQ`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StreamId(pub u64, pub u64);

impl StreamId {
    /// Parses `MS-SEQ` (or `MS`).
    pub(crate) fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(StreamId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

impl Event {
    /// Whether every name is valid and no text carries a control character (a node escapes
    /// them all): an entry that fails this was not written by a node, and is skipped.
    pub(crate) fn is_well_formed(&self) -> bool {
        let nick = |n: &str| validate_nick(n).is_ok();
        let room = |r: &str| normalize_room(r).is_ok_and(|n| n == r);
        let text = |t: &str| t.len() <= MAX_EVENT_BYTES && !t.chars().any(char::is_control);
        match self {
            Event::Say {
                room: r,
                nick: n,
                text: t,
                ..
            } => room(r) && nick(n) && text(t),
            Event::Private {
                from, to, text: t, ..
            } => nick(from) && nick(to) && text(t),
            Event::Join { nick: n, room: r } => nick(n) && room(r),
            Event::Leave {
                nick: n,
                room: r,
                reason,
            } => nick(n) && room(r) && text(reason) && reason.len() <= 64,
            Event::Nick { old, new, room: r } => {
                nick(old) && nick(new) && r.as_deref().is_none_or(room)
            }
            Event::Quit { nick: n } => nick(n),
            Event::Stop => true,
            Event::Presence { members } => {
                members.len() <= MAX_PRESENCE_MEMBERS
                    && members
                        .iter()
                        .all(|(n, r)| nick(n) && r.as_deref().is_none_or(room))
            }
        }
    }

    /// Reads one stream entry's fields; `None` if it is not a well-formed event.
    pub(crate) fn from_fields(id: &str, fields: &HashMap<String, redis::Value>) -> Option<Stored> {
        let text = |name: &str| -> Option<String> {
            redis::from_redis_value_ref::<String>(fields.get(name)?).ok()
        };
        let ev = text("ev")?;
        if ev.len() > MAX_ENTRY_BYTES {
            return None;
        }
        let event: Event = serde_json::from_str(&ev).ok()?;
        event.is_well_formed().then_some(())?;
        Some(Stored {
            id: StreamId::parse(id)?,
            node: text("node")?,
            seq: text("seq")?.parse().ok()?,
            event,
        })
    }

    /// The event as JSON, for the `ev` field.
    pub(crate) fn to_json(&self) -> String {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(node: &str, seq: &str, ev: &str) -> HashMap<String, redis::Value> {
        [("node", node), ("seq", seq), ("ev", ev)]
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    redis::Value::BulkString(v.as_bytes().to_vec()),
                )
            })
            .collect()
    }

    #[test]
    fn an_event_round_trips_through_its_fields() {
        let say = Event::Say {
            time: 5,
            room: "lobby".into(),
            nick: "alice".into(),
            text: "hi \\x1b".into(),
            action: false,
        };
        let stored = Event::from_fields("12-3", &fields("n1", "7", &say.to_json()));
        assert_eq!(
            stored,
            Some(Stored {
                id: StreamId(12, 3),
                node: "n1".into(),
                seq: 7,
                event: say
            })
        );
    }

    #[test]
    fn entries_no_node_wrote_are_skipped() {
        let bad = [
            r#"{"t":"say","time":1,"room":"lobby","nick":"alice","text":"a\u001b[2J","action":false}"#,
            r#"{"t":"say","time":1,"room":"Lobby","nick":"alice","text":"x","action":false}"#,
            r#"{"t":"join","nick":"server","room":"lobby"}"#,
            r#"{"t":"join","nick":"a b","room":"lobby"}"#,
            r#"{"t":"unknown"}"#,
            "not json",
        ];
        for ev in bad {
            assert_eq!(
                Event::from_fields("1-0", &fields("n", "1", ev)),
                None,
                "{ev}"
            );
        }
        let join = r#"{"t":"join","nick":"bob","room":"lobby"}"#;
        assert_eq!(Event::from_fields("1-0", &fields("n", "x", join)), None);
        assert!(Event::from_fields("1-0", &fields("n", "1", join)).is_some());
    }

    #[test]
    fn stream_ids_order_as_redis_orders_them() {
        assert!(StreamId::parse("10-2") < StreamId::parse("10-10"));
        assert!(StreamId::parse("9-99") < StreamId::parse("10-0"));
        assert_eq!(StreamId::parse("5"), Some(StreamId(5, 0)));
        assert_eq!(StreamId::parse("x-1"), None);
        assert_eq!(StreamId(3, 4).to_string(), "3-4");
    }
}
