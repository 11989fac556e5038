//! What the broker's commands do to its state, and the primitives that queue replies and
//! broadcasts. Called with the broker's lock held; nothing here waits.

use std::sync::Arc;

use super::broker::State;
use super::history::Keep;
use super::messages::ServerMessage;
use super::nick::{skeleton, suggest, validate_nick, RoomName};
use super::outbox::Delivery;
use super::{is_blank, now_ms, sanitize, MAX_LISTED_NAMES, MAX_MESSAGE_BYTES};
use crate::wire::ErrorFrame;

pub(super) fn gone() -> ErrorFrame {
    ErrorFrame::new("internal", "you are not registered")
}

pub(super) fn check_text(text: &str) -> Result<(), ErrorFrame> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ErrorFrame::new(
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
pub(super) fn taken_check(
    state: &State,
    key: &str,
    nick: &str,
    me: Option<u64>,
) -> Result<(), ErrorFrame> {
    let held = match state.nicks.get(key).filter(|h| Some(**h) != me) {
        Some(holder) => state.clients.get(holder).map_or("", |c| c.nick.as_str()),
        None => match state.remote.holder(key) {
            Some(member) => member.nick.as_str(),
            None => return Ok(()),
        },
    };
    Err(taken(state, nick, held))
}

/// The `nick_taken` refusal for `nick`, which is too close to `held`, with a free suggestion.
pub(super) fn taken(state: &State, nick: &str, held: &str) -> ErrorFrame {
    let is_taken = |s: &str| state.nicks.contains_key(s) || state.remote.holder(s).is_some();
    let hint = match suggest(nick, is_taken) {
        Some(free) => format!("; try {free}"),
        None => String::new(),
    };
    ErrorFrame::new(
        "nick_taken",
        format!("nick {nick} is taken (too close to {held}){hint}"),
    )
}

pub(super) fn change_nick(state: &mut State, id: u64, nick: &str) -> Result<(), ErrorFrame> {
    validate_nick(nick).map_err(|e| ErrorFrame::new("invalid_nick", e.to_string()))?;
    let key = skeleton(nick);
    taken_check(state, &key, nick, Some(id))?;
    let client = state.clients.get_mut(&id).ok_or_else(gone)?;
    if client.nick == nick {
        // Nothing changes, so nobody is told (a change of case is a change, and is told).
        notify(state, id, None, format!("you are already {nick}"));
        return Ok(());
    }
    let old = std::mem::replace(&mut client.nick, nick.to_owned());
    let room = client.room.clone();
    state.nicks.remove(&skeleton(&old));
    state.nicks.insert(key, id);
    send_ready(state, id);
    if let Some(room) = room {
        let text = format!("{old} is now known as {nick}");
        broadcast(state, &room, room_notice(&room, text), None);
    }
    Ok(())
}

pub(super) fn private(state: &State, id: u64, to: &str, text: &str) -> Result<(), ErrorFrame> {
    check_text(text)?;
    if is_blank(text) {
        return Ok(());
    }
    let from = state.clients.get(&id).ok_or_else(gone)?;
    let not_found = || {
        let shown = crate::text::escape_one_line(to, super::nick::MAX_NICK_CHARS);
        ErrorFrame::new("no_such_nick", format!("nobody is called {shown}"))
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

pub(super) fn who(state: &State, id: u64) -> Result<(), ErrorFrame> {
    let room = state.clients.get(&id).and_then(|c| c.room.clone());
    let Some(room) = room else {
        return Err(ErrorFrame::new(
            "not_in_room",
            "you are in no room; /join ROOM first",
        ));
    };
    let members = state.rooms.get(&room).map_or(&[][..], |r| &r.members[..]);
    let mut names: Vec<&str> = members
        .iter()
        .filter_map(|m| state.clients.get(m).map(|c| c.nick.as_str()))
        .collect();
    names.extend(state.remote.in_room(&room));
    let text = format!("in {}: {}", RoomName(&room), listing(&names));
    notify(state, id, Some(&room), text);
    Ok(())
}

pub(super) fn list_rooms(state: &State, id: u64) {
    let mut counts = state.remote.rooms();
    for (name, room) in &state.rooms {
        *counts.entry(name.as_str()).or_default() += room.members.len();
    }
    let names: Vec<String> = counts
        .iter()
        .map(|(name, n)| format!("{} ({n})", RoomName(name)))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    notify(state, id, None, format!("rooms: {}", listing(&names)));
}

/// `a, b, c` for at most [`MAX_LISTED_NAMES`] names, then `… and N more`.
pub(super) fn listing(names: &[&str]) -> String {
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

pub(crate) fn room_notice(room: &str, text: String) -> Arc<Delivery> {
    Delivery::new(ServerMessage::Notice {
        time: now_ms(),
        room: Some(room.to_owned()),
        text,
    })
}

pub(super) fn send_ready(state: &State, id: u64) {
    if let Some(client) = state.clients.get(&id) {
        let ready = ServerMessage::Ready {
            nick: client.nick.clone(),
            room: client.room.clone(),
        };
        client.outbox.push(Delivery::new(ready));
    }
}

pub(crate) fn notify(state: &State, id: u64, room: Option<&str>, text: String) {
    let msg = ServerMessage::Notice {
        time: now_ms(),
        room: room.map(str::to_owned),
        text,
    };
    send(state, id, Delivery::new(msg));
}

/// Queues for one client; an overflow closes its outbox and its connection ends on its own.
pub(super) fn send(state: &State, id: u64, delivery: Arc<Delivery>) {
    if let Some(client) = state.clients.get(&id) {
        client.outbox.push(delivery);
    }
}

/// Queues one shared delivery for every member of `room`, and keeps it in the room's
/// history within `keep`'s limits when given.
pub(crate) fn broadcast(
    state: &mut State,
    room: &str,
    delivery: Arc<Delivery>,
    keep: Option<Keep>,
) {
    let Some(entry) = state.rooms.get_mut(room) else {
        return;
    };
    if let Some(keep) = keep {
        entry
            .history
            .push_from(delivery.clone(), keep.origin, keep.limits);
    }
    for member in &entry.members {
        if let Some(client) = state.clients.get(member) {
            client.outbox.push(delivery.clone());
        }
    }
}
