//! The socket lessons' own protocols, so their Python programs work unchanged against sockit:
//! the dialects of their "simulated ssh" ([`Dialect`], [`exec`]) and their length-prefixed JSON
//! file header ([`framing`], [`files`]). None of them authenticates, so sockit speaks them only
//! on loopback or a Unix socket.

mod dialect;
pub mod exec;
pub mod files;
pub mod framing;
pub(crate) mod reply;

pub use dialect::{Dialect, UnknownDialect, ACK};
