//! sockit: a socket toolkit. A tokio server engine modelled on Python's `socketserver`, a framed
//! wire protocol, and the classic socket-programming services done properly.
//!
//! # Layout
//!
//! ```text
//!  cli            clap types, one per command; each server command's args bind its service
//!                 (`launch::Bound`), run alone or in a `sockit serve` set (`serve`); `main.rs`
//!                 only parses, sets up tracing and calls in here
//!  service        one module per service (echo, exec, files, chat, framed_echo, netcat, bench)
//!  session        the way in for every framed service: the server's `Gate` (pending caps,
//!                 TLS, hello, auth) and the client's `open`; tokens, limits, error frames
//!  wire           the frame format, sans-IO: codec state machine + Connection wrapper
//!  server         the engine: serve(listener, handler, config, shutdown); modes, limits, drain
//!  net            bind/connect: TCP, UDP, Unix stream/datagram, socket options, ACL, TLS wrap, splice
//!  stdio          local stdout/stderr writers for streaming clients
//!  terminal       raw mode for the local terminal, pseudo-terminals for remote commands
//!  text           escaping peer text before it reaches a terminal or a log
//! ```
//!
//! Each layer knows only the one below: a service never touches socket options, the engine
//! never parses frames, the codec never does I/O.
#![warn(missing_docs)]

pub mod cli;
pub mod net;
pub mod server;
pub mod service;
pub mod session;
pub mod stdio;
pub mod terminal;
pub mod text;
pub mod wire;
