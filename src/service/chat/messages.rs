//! The chat protocol's typed frames, named by their sender, and their plain-text line form.
//!
//! ```text
//! client                                          server
//!   {"type":"register","nick":"alice","room":"lobby"} ->
//!                                                 <-  {"type":"ready","nick":"alice","room":"lobby"}
//!                                                     (or an error such as nick_taken; retry)
//!   {"type":"say","text":"hi"}                    ->
//!                                                 <-  {"type":"message","time":…,"room":"lobby","nick":"alice","text":"hi"}
//!   {"type":"me"|"msg"|"nick"|"join"|"leave"|"rooms"|"who"|"help"|"quit", …} ->
//!                                                 <-  action, private, notice, error, ready
//! ```
//!
//! No frame has a body: text travels in the header, at most
//! [`MAX_MESSAGE_BYTES`](super::MAX_MESSAGE_BYTES) of it. `time` is Unix milliseconds.
//! Every peer-supplied string a server sends has already been escaped by the server.

use crate::wire::ErrorFrame;
use serde::{Deserialize, Serialize};

use super::nick::RoomName;
use crate::wire::Message;

/// How the server's notices start, in the line protocol and in `sockit chat join`: `*** `,
/// as IRC clients mark server messages; no user text can start a line this way.
pub const NOTICE_PREFIX: &str = "*** ";

/// A frame from a client (and the commands a line client types, parsed by
/// `parse_line`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Take a nick (and join a room, else the server's default): the first message.
    Register {
        /// The nick, `[A-Za-z0-9._-]{1,32}`.
        nick: String,
        /// A room to join instead of the default.
        #[serde(default)]
        room: Option<String>,
    },
    /// Say something in the current room.
    Say {
        /// The text.
        text: String,
    },
    /// An action in the current room (`/me waves`).
    Me {
        /// The action.
        text: String,
    },
    /// A private message.
    Msg {
        /// The recipient's nick.
        to: String,
        /// The text.
        text: String,
    },
    /// Change nick.
    Nick {
        /// The new nick.
        nick: String,
    },
    /// Leave the current room (if any) and join this one.
    Join {
        /// The room, with or without `#`.
        room: String,
    },
    /// Leave the current room.
    Leave,
    /// List the rooms.
    Rooms,
    /// List who is in the current room.
    Who,
    /// List the commands.
    Help,
    /// Say goodbye and close.
    Quit,
}

impl Message for ClientMessage {}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// Who you are and where: after registering, and after each nick or room change.
    Ready {
        /// Your nick.
        nick: String,
        /// Your room, if any.
        room: Option<String>,
    },
    /// Someone said something in a room.
    Message {
        /// Unix milliseconds.
        time: u64,
        /// The room.
        room: String,
        /// The speaker.
        nick: String,
        /// The text, escaped.
        text: String,
    },
    /// Someone did something in a room (`/me`).
    Action {
        /// Unix milliseconds.
        time: u64,
        /// The room.
        room: String,
        /// Who.
        nick: String,
        /// The action, escaped.
        text: String,
    },
    /// A private message (sent to both ends).
    Private {
        /// Unix milliseconds.
        time: u64,
        /// The sender.
        from: String,
        /// The recipient.
        to: String,
        /// The text, escaped.
        text: String,
    },
    /// Server information: joins, leaves, nick changes, command output.
    Notice {
        /// Unix milliseconds.
        time: u64,
        /// The room it concerns, if any.
        room: Option<String>,
        /// One line of text.
        text: String,
    },
    /// A refused command; the connection stays open unless the server says otherwise.
    Error {
        /// Machine-readable snake_case code, e.g. `nick_taken`.
        code: String,
        /// Human-readable sentence.
        message: String,
    },
}

impl Message for ServerMessage {}

impl ServerMessage {
    /// An `error` frame.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The plain-text line a line-protocol client sees, without the newline: `<alice> hi`,
    /// `* alice waves`, `*alice -> bob* psst`, `*** bob joined #lobby`, `! error text`.
    ///
    /// The server's own lines start with [`NOTICE_PREFIX`] or `! `, which no user can
    /// produce: a message starts `<`, an action `* ` and a nick character, a private message
    /// `*` and a nick character, nicks are `[A-Za-z0-9._-]`, and line breaks in text are
    /// escaped. So `* carol joined #lobby` from a `/me` cannot pass for a notice.
    pub(crate) fn to_line(&self) -> String {
        match self {
            ServerMessage::Ready {
                nick,
                room: Some(room),
            } => format!("{NOTICE_PREFIX}you are {nick} in {}", RoomName(room)),
            ServerMessage::Ready { nick, room: None } => {
                format!("{NOTICE_PREFIX}you are {nick}, in no room (/join ROOM)")
            }
            ServerMessage::Message { nick, text, .. } => format!("<{nick}> {text}"),
            ServerMessage::Action { nick, text, .. } => format!("* {nick} {text}"),
            ServerMessage::Private { from, to, text, .. } => format!("*{from} -> {to}* {text}"),
            ServerMessage::Notice { text, .. } => format!("{NOTICE_PREFIX}{text}"),
            ServerMessage::Error { message, .. } => format!("! {message}"),
        }
    }

    /// Bytes of peer text carried, for queue accounting.
    pub(crate) fn text_len(&self) -> usize {
        match self {
            ServerMessage::Ready { nick, room } => {
                nick.len() + room.as_ref().map_or(0, String::len)
            }
            ServerMessage::Message {
                room, nick, text, ..
            }
            | ServerMessage::Action {
                room, nick, text, ..
            } => room.len() + nick.len() + text.len(),
            ServerMessage::Private { from, to, text, .. } => from.len() + to.len() + text.len(),
            ServerMessage::Notice { room, text, .. } => {
                room.as_ref().map_or(0, String::len) + text.len()
            }
            ServerMessage::Error { code, message } => code.len() + message.len(),
        }
    }
}

impl From<&ErrorFrame> for ServerMessage {
    /// A refusal as the `error` message a client receives.
    fn from(refusal: &ErrorFrame) -> Self {
        ServerMessage::error(&refusal.code, refusal.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_serialize_with_their_type_tag() {
        let say = ClientMessage::Say { text: "hi".into() };
        assert_eq!(
            serde_json::to_string(&say).ok().as_deref(),
            Some(r#"{"type":"say","text":"hi"}"#)
        );
        let reg: ClientMessage =
            serde_json::from_str(r#"{"type":"register","nick":"a"}"#).expect("parses");
        assert_eq!(
            reg,
            ClientMessage::Register {
                nick: "a".into(),
                room: None
            }
        );
        assert!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"say","text":"x","y":1}"#).is_err()
        );
    }

    #[test]
    fn lines_read_like_a_chat() {
        let msg = ServerMessage::Message {
            time: 0,
            room: "lobby".into(),
            nick: "alice".into(),
            text: "hi".into(),
        };
        assert_eq!(msg.to_line(), "<alice> hi");
        let private = ServerMessage::Private {
            time: 0,
            from: "a".into(),
            to: "b".into(),
            text: "psst".into(),
        };
        assert_eq!(private.to_line(), "*a -> b* psst");
        assert_eq!(ServerMessage::error("x", "no").to_line(), "! no");
    }
}
