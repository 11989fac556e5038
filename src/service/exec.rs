//! `sockit exec`: remote command execution, the tutorials' "simulated ssh" made safe and exact.
//! Authenticated sessions, argv by default, output streamed as frames, ssh's exit codes.
//!
//! One connection runs one command: the session handshake (always with a token), a `run`
//! request, then stdout/stderr frames from the server and stdin/signal frames from the client
//! flowing at once, and finally the server's `exit` (see [`messages`] for the frames).
//!
//! The server is [`ExecService`] behind the session [`Gate`](crate::session::Gate) ([`gate`]),
//! which runs TLS and the handshake in the connection's task; the client opens its session
//! with [`crate::session::open`] ([`client_options`]). [`shell`] is the prompt loop (a connection per line); [`crate::compat::exec`]
//! speaks the lessons' own unauthenticated protocol (`--compat tutorial`), loopback only. With
//! [`RunRequest::pty`] (`exec run -t`) the command runs on a pseudo-terminal
//! (`crate::terminal::Pty`) in a session of its own, its output merged into `stdout`
//! frames and the client's window size following `resize` frames.
//!
//! # Example
//!
//! ```no_run
//! use sockit::service::exec::{client_options, run, LocalIo, RunRequest};
//! use sockit::stdio::Output;
//! use sockit::session::Token;
//!
//! # async fn demo(token: Token) -> Result<(), sockit::service::exec::ExecError> {
//! let addr = "127.0.0.1:7008".parse().unwrap();
//! let request = RunRequest { argv: vec!["uname".into(), "-a".into()], shell: false, pty: None };
//! let (_signals, rx) = tokio::sync::mpsc::channel(1);
//! let io = LocalIo {
//!     stdin: tokio::io::empty(),
//!     stdout: Output::new(tokio::io::stdout()),
//!     stderr: tokio::io::stderr(),
//!     signals: rx,
//!     resizes: None,
//! };
//! let outcome = run(&addr, &client_options(token), &request, io).await?;
//! std::process::exit(i32::from(outcome.exit.exit_code()));
//! # }
//! ```

mod client;
mod escapees;
mod input;
pub mod local;
pub mod messages;
mod plan;
mod pumps;
mod server;
pub mod shell;
mod supervisor;

use std::time::Duration;

use crate::session::{ClientOptions, GateConfig, SessionConfig, Token};
use crate::wire::{Limits, MAX_HEADER_BYTES};

pub use client::{run, ExecError, LocalIo, RunOutcome, RunRequest};
pub use messages::{ClientMessage, PtyRequest, RemoteExit, ServerMessage, SignalName};
pub use server::{ExecConfig, ExecServer, ExecService};

/// The service name sent in the hello.
pub const SERVICE: &str = "exec";

/// Default listen address of `sockit exec serve`: loopback only.
pub const DEFAULT_EXEC_ADDR: &str = "127.0.0.1:7008";

/// Largest command line accepted, in bytes (each argument counts one more for its
/// separator). Kept well under the header cap so an overlong command gets a clear
/// `command_too_long` rather than a bare `header_too_large`.
pub const MAX_COMMAND_BYTES: usize = 32 * 1024;

/// Largest body of one `stdin`, `stdout` or `stderr` frame a peer accepts.
pub(crate) const MAX_DATA_FRAME_BYTES: u64 = 1024 * 1024;

/// Size of the reads from the child's stderr and from local stdin: one frame each at most.
pub(crate) const OUTPUT_CHUNK_BYTES: usize = 32 * 1024;

/// Size of the reads from the child's stdout, where bulk output flows: one frame each at most
/// (under [`MAX_DATA_FRAME_BYTES`]).
pub(crate) const STDOUT_CHUNK_BYTES: usize = 256 * 1024;

/// Stdin a client may have sent that the command has not taken yet: its credit at the start,
/// and the bound on what the server holds for the command (see [`messages`]).
pub const STDIN_WINDOW_BYTES: u64 = 1024 * 1024;

/// Most stdout bytes spliced into one frame where the connection can splice (plain TCP or Unix
/// on Linux): a full [`STDOUT_PIPE_BYTES`] pipe, within [`MAX_DATA_FRAME_BYTES`].
pub(crate) const STDOUT_SPLICE_BYTES: usize = 1024 * 1024;

/// Pipe size asked for the child's stdout (Linux; best effort).
pub(crate) const STDOUT_PIPE_BYTES: usize = 1024 * 1024;

/// Most rows a pty may have.
pub const MAX_PTY_ROWS: u16 = 10_000;

/// Most columns a pty may have.
pub const MAX_PTY_COLS: u16 = 10_000;

/// Longest `TERM` a client may ask for, in bytes.
pub const MAX_TERM_BYTES: usize = 64;

/// The `TERM` of a pty whose request names none.
pub const DEFAULT_TERM: &str = "xterm";

/// Deadline for the `run` request once the handshake is done.
pub(crate) const RUN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time between the timeout's SIGTERM and its SIGKILL ([`ExecConfig::kill_grace`]).
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// The session settings both halves use: service `exec`, data frames capped.
pub fn session_config() -> SessionConfig {
    SessionConfig {
        limits: Limits {
            max_header: MAX_HEADER_BYTES,
            max_body: MAX_DATA_FRAME_BYTES,
        },
        text_client_hint: Some("connect with `sockit exec run` or `sockit exec shell`".into()),
        ..SessionConfig::new(SERVICE)
    }
}

/// The gate of an exec server: every client must prove it holds `token` (exec never runs
/// open); set `tls` and the pending caps on the result as needed.
pub fn gate(token: Token) -> GateConfig {
    GateConfig::new(session_config(), Some(token))
}

/// How an exec client reaches a server holding `token`; set `tls` on the result as needed.
pub fn client_options(token: Token) -> ClientOptions {
    ClientOptions {
        token: Some(token),
        ..ClientOptions::new(session_config())
    }
}
