//! Addresses (and names to resolve, [`Target`]), binding and connecting: TCP (v4/v6), UDP, Unix stream and datagram sockets, their
//! socket options (through socket2, and the receive low-water mark in `lowat`), the allow/deny
//! address lists, the TLS wrap ([`tls`]) and zero-copy writes from a pipe ([`splice`]).

mod acl;
mod addr;
mod bind;
mod datagram;
mod keepalive;
pub(crate) mod lowat;
pub(crate) mod source;
pub mod splice;
mod stream;
mod target;
pub mod tls;

pub use acl::{parse_net, Acl};
pub use addr::{Addr, AddrParseError, PeerAddr};
pub use bind::{AcceptOptions, BindOptions, UnixSocketFile, DEFAULT_BACKLOG};
pub use datagram::Datagram;
pub use keepalive::{Keepalive, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_RETRIES};
pub(crate) use stream::StdStream;
pub use stream::{Listener, Stream};
pub use target::{BarePort, Target, TargetError, RESOLVE_TIMEOUT};
