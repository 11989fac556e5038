//! `sockit chat`: a broker many people can use at once, from `sockit chat join` (framed,
//! authenticated, optionally TLS) or from plain `nc`/`telnet` (the line protocol).
//!
//! ```text
//!  broker   nicks (confusable-aware), rooms, commands; no I/O
//!  cluster  many nodes, one chat: the broker's link to a shared Redis (`--redis`)
//!  history  a room's last messages, bounded in count and bytes, freed when it empties
//!  outbox   each client's bounded queue of shared deliveries, drained one write per wakeup
//!  line     the plain-text protocol: first line the nick, then one message per line
//!  framed   the wire-v1 protocol behind the session handshake (service `chat`)
//!  client   the framed client: join, then a sender and a receiver
//!  terminal `sockit chat join`'s line editor and rendering
//!  paste    terminal input for the editor, pasted escape sequences kept as visible text
//!  web      the browser page at /chat/ and its WebSocket at /chat/ws, on hyper
//!  websocket the WebSocket bridge: JSON messages to and from the same broker
//! ```
//!
//! All three feed one [`Broker`], so line, framed and browser clients share rooms. Text from
//! peers is escaped by the server before anyone receives it (`sanitize`), and again by the
//! client before it reaches a terminal.

mod broker;
mod client;
pub mod cluster;
mod command;
mod framed;
mod history;
mod line;
pub mod messages;
mod nick;
mod outbox;
#[cfg(feature = "cli")]
mod paste;
mod pump;
mod rate;
mod replies;
#[cfg(feature = "cli")]
mod terminal;
mod web;
mod websocket;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::net::{BindOptions, Keepalive};

pub use broker::{Broker, BrokerConfig, Control, Member, DEFAULT_HISTORY, MAX_HISTORY};
pub use cluster::{ClusterConfig, ClusterError, Link, RedisTarget, DEFAULT_NODE_TIMEOUT};
pub use history::{DEFAULT_HISTORY_BYTES, MAX_HISTORY_BYTES};

pub(crate) use broker::MAX_LISTED_NAMES;
pub use client::{join, ChatClient, ChatError, JoinOptions};
pub use client::{ChatReceiver, ChatSender};
pub(crate) use command::parse_line;
pub use framed::{
    gate, session_config, session_config_with_line_port, ChatServer, ChatService, FramedConfig,
};
pub use line::{LineConfig, LineServer};
pub use messages::{ClientMessage, ServerMessage, NOTICE_PREFIX};
#[cfg(feature = "cli")]
use nick::RoomName;
pub use outbox::{
    Closed, Delivery, Outbox, QueueLimits, DELIVERY_OVERHEAD_BYTES, MAX_QUEUED_BYTES,
};
pub use rate::{RateLimit, DEFAULT_BURST, DEFAULT_RATE_PER_SEC};
#[cfg(feature = "cli")]
pub use terminal::{render, run_terminal};
pub(crate) use web::{is_chat_path, upgraded_done, Upgraded};
pub use web::{WebServer, CHAT_PATH, CHAT_WS_PATH};
pub use websocket::{WebConfig, MAX_WS_MESSAGE_BYTES, PING_INTERVAL, SILENCE_TIMEOUT};

/// The service name sent in the hello.
pub const SERVICE: &str = "chat";

/// Default framed listen address of `sockit chat serve`: loopback only.
pub const DEFAULT_CHAT_ADDR: &str = "127.0.0.1:7010";

/// Largest message, in bytes of UTF-8 as received (before escaping).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// How long a closing connection gets to write what is still queued for it.
pub(crate) const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How chat binds its listeners (framed and line): the defaults plus TCP keepalive with
/// [`Keepalive::default`] timings, because lurkers make quiet connections normal and a peer
/// that vanished without a close would otherwise keep its nick forever.
pub fn bind_options() -> BindOptions {
    BindOptions {
        keepalive: Some(Keepalive::default()),
        ..BindOptions::default()
    }
}

/// Peer text made safe for every terminal it will reach: control characters (newlines and
/// tabs included), ANSI/OSC escape sequences and bidi controls become visible escapes.
pub(crate) fn sanitize(text: &str) -> String {
    crate::text::escape_one_line(text, MAX_MESSAGE_BYTES)
}

/// Whether `text` shows nothing: only whitespace and invisible format characters (zero-width
/// space, bidi marks). Such a message is not broadcast.
pub(crate) fn is_blank(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_whitespace() || crate::text::is_hidden_format(c))
}

/// Now, in Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
