//! `sockit files`, `put`, `get`, `ls`, `send`, `recv`: file transfer with a digest checked
//! before a file becomes visible, resume from a proven prefix, and peer-named paths that never
//! escape the target directory.
//!
//! After the session handshake (service `files`; a token is required off loopback) the
//! client sends requests and the server answers each, in order ([`messages`] has the frames):
//!
//! ```text
//! put (small files are pushed; large ones probe first to resume):
//!   {"type":"probe","path":"big.iso","size":N}            ->
//!                                       <- {"type":"partial","path":"big.iso","offset":K,"prefix":"<hex>"}
//!   {"type":"put","path":"big.iso","size":N,"offset":K,…} + N-K bytes ->
//!   {"type":"end","hash":"<hex of the whole file>"}        ->
//!                                       <- {"type":"stored","path":"big.iso","name":"big.iso","size":N}
//!                                          or {"type":"rejected","path":…,"code":…,"message":…}
//! mkdir:  {"type":"mkdir","path":"d","mode":493}           -> <- stored | rejected
//! ls:     {"type":"list","path":"d"}                       -> <- entries… listed | rejected
//! get:    {"type":"get","path":"d"}                        -> <- entries… listed | rejected
//!         {"type":"fetch","path":"d/a","offset":K,"prefix":"<hex>"} ->
//!                                       <- {"type":"file",…} + bytes, {"type":"end","hash":…}
//!                                          or rejected
//! ```
//!
//! The client pipelines: it keeps sending while a reader task collects the answers, so many
//! small files cost one connection and no round trip each. A `rejected` answer concerns one
//! request; an `error` frame is fatal and the server closes. A refused `put` body is still
//! read and dropped (up to `MAX_DISCARD_BYTES`) so the conversation stays in step.
//!
//! Inside: [`store`] is the file system (validated names, partial files, atomic commit);
//! `transfer` moves one file's bytes between a disk thread and the connection; `server` and
//! `requests` are the server half, `client` the client half ([`put`], [`get`], [`list`]), which
//! advances a [`Progress`] bar as bytes cross the wire.
//!
//! # Example
//!
//! ```no_run
//! use sockit::service::files::{put, PutOptions, Remote};
//!
//! # async fn demo() -> Result<(), sockit::service::files::FilesError> {
//! let remote = Remote::new("127.0.0.1:7009".parse().unwrap());
//! let paths = ["photos".into(), "notes.txt".into()];
//! let report = put(&remote, &paths, Some("inbox"), &PutOptions::default()).await?;
//! for file in &report.files {
//!     if let Err(why) = &file.result {
//!         eprintln!("{}: {why}", file.local);
//!     }
//! }
//! println!("{} bytes sent, verified {}", report.bytes_sent, report.hash);
//! # Ok(())
//! # }
//! ```

mod chunks;
mod client;
mod error;
pub mod hash;
mod local;
pub mod messages;
mod progress;
mod requests;
mod server;
pub mod store;
mod sweep;
mod transfer;

pub use client::{
    get, list, put, FileReport, GetOptions, GetReport, PutOptions, PutReport, Remote,
    RESUME_PROBE_MIN_BYTES,
};

pub use error::{FilesError, Rejection};
pub use hash::{HashAlg, Hasher};
pub use local::parse_size;
pub(crate) use local::{local_meta, prefix_digest};
pub use messages::{ClientMessage, Entry, FileHeader, Kind, ServerMessage};
pub use progress::{transfer_rate, Progress, UnderWay};
pub use server::{
    Access, FilesConfig, FilesServer, FilesService, OneShot, SessionSummary,
    DEFAULT_MAX_FILES_CONNS,
};
pub use store::{
    FileMeta, Partial, Policy, RelPath, Store, StoreError, StoreOptions, Stored,
    DEFAULT_PARTIAL_MAX_AGE, DEFAULT_PARTIAL_MAX_TOTAL_BYTES,
};
pub use transfer::{CHANNEL_CHUNKS, CHUNK_BYTES};

use crate::session::{GateConfig, SessionConfig, Token};
use crate::wire::{Limits, MAX_HEADER_BYTES};

/// The service name sent in the hello.
pub const SERVICE: &str = "files";

/// Default listen address of `sockit files serve`: loopback only.
pub const DEFAULT_FILES_ADDR: &str = "127.0.0.1:7009";

/// Estimated JSON bytes of entries batched into one `entries` frame (well under the header
/// cap).
pub(crate) const ENTRIES_FRAME_BYTES: usize = 32 * 1024;

/// The session settings both halves use: service `files`; bodies are not capped by the wire
/// layer, because the store checks each file's declared size (`--max-file-size`, free space)
/// before reading a byte of it.
pub fn session_config() -> SessionConfig {
    SessionConfig {
        limits: Limits {
            max_header: MAX_HEADER_BYTES,
            max_body: u64::MAX,
        },
        text_client_hint: Some("connect with `sockit put`, `sockit get` or `sockit ls`".into()),
        ..SessionConfig::new(SERVICE)
    }
}

/// The gate of a file server: a client must prove it holds `token` when there is one (a
/// server beyond loopback needs one); set `tls` and the pending caps on the result as needed.
pub fn gate(token: Option<Token>) -> GateConfig {
    GateConfig::new(session_config(), token)
}
