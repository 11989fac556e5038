//! sockit: a socket toolkit. A tokio server engine modelled on Python's `socketserver`, a framed
//! wire protocol, and the classic socket-programming services done properly.
//!
//! # The front door
//!
//! What most programs need is re-exported at the root: the engine ([`serve`], [`Handler`],
//! [`Config`], [`Mode`], [`Listener`], [`Addr`], …), the wire ([`Connection`], [`Message`],
//! [`ErrorFrame`]), and the way into a framed service of your own ([`Gated`] with a
//! [`GateConfig`] and your [`FramedService`] on the server, [`open`] with [`ClientOptions`]
//! on the client). `examples/` has one program per Python `socketserver` class and a framed,
//! authenticated service (`framed_auth`). The services themselves (echo, exec, files, chat)
//! are in [`service`], each with its server and client entry points.
//!
//! ```no_run
//! use sockit::{serve, shutdown_on_signals, BindOptions, Config, Conn, ConnInfo, Handler, Listener};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! struct Upper;
//!
//! impl Handler for Upper {
//!     async fn handle(&self, mut conn: Conn, _info: ConnInfo) -> std::io::Result<()> {
//!         let mut buf = [0u8; 1024];
//!         loop {
//!             let n = conn.read(&mut buf).await?;
//!             if n == 0 {
//!                 return Ok(());
//!             }
//!             conn.write_all(&buf[..n].to_ascii_uppercase()).await?;
//!         }
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = Listener::bind(&"127.0.0.1:9000".parse()?, &BindOptions::default()).await?;
//! serve(listener, Upper, Config::default(), shutdown_on_signals()?).await
//! # }
//! ```
//!
//! With `default-features = false` the library builds without the command line's
//! dependencies (clap, rustyline, indicatif, anyhow, tracing-subscriber).
//!
//! # Layout
//!
//! ```text
//!  service        one module per service (echo, exec, files, chat, framed_echo)
//!  compat         the socket lessons' own protocols (their "simulated ssh" dialects, their
//!                 file header), so their programs work unchanged
//!  tools          built on the engine, not run by it: netcat (connect, listen), bench
//!  session        the way in for every framed service: the server's `Gate` (pending caps,
//!                 TLS, hello, auth) and the client's `open`; tokens, limits, error frames
//!  wire           the frame format, sans-IO: codec state machine + Connection wrapper
//!  engine         the engine: serve(listener, handler, config, shutdown); modes, limits, drain
//!  net            bind/connect: TCP, UDP, Unix stream/datagram, socket options, ACL, TLS wrap, splice
//!  stdio          local stdout/stderr writers for streaming clients
//!  terminal       raw mode for the local terminal, pseudo-terminals for remote commands
//!  text           escaping peer text before it reaches a terminal or a log
//! ```
//!
//! Each layer knows only the one below: a service never touches socket options, the engine
//! never parses frames, the codec never does I/O. The `sockit` binary's command line (clap
//! types, one per command, each server command binding its service, `sockit serve` running a
//! set of them) lives in the binary, `src/cli/`; `docs/architecture.md` describes it all.
#![warn(missing_docs)]

pub use engine::{
    serve, serve_datagram, serve_if_child, serve_if_child_blocking, shutdown_on_signals, Config,
    Conn, ConnInfo, DatagramHandler, Handled, Handler, Mode, ProcessCommand,
};
pub use net::{Addr, BindOptions, Datagram, Listener, Stream};
pub use session::{
    open, ClientConnection, ClientError, ClientOptions, FramedService, GateConfig, Gated,
    ServerStream, SessionConfig, Token,
};
pub use wire::{Connection, ErrorFrame, Message, WireError};

pub mod compat;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod net;
pub mod service;
pub mod session;
pub mod stdio;
pub mod terminal;
pub mod text;
pub mod tools;
pub mod wire;
