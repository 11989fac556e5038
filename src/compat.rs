//! The socket lessons' own protocols, so their Python programs work unchanged against sockit:
//! their length-prefixed JSON framing ([`framing`]) and their "simulated ssh" ([`exec`]).
//! None of them authenticates, so their servers listen only on loopback or a Unix socket.

pub mod exec;
pub mod framing;
