//! The file commands: `files serve`, `put`, `get`, `ls`, `send`, `recv`.
//!
//! `args` holds the clap types and turns them into the library's configs, `serve` runs the
//! servers (`files serve`, `recv`), `client` the clients (`put`, `send`, `get`, `ls`), and
//! `report` is what a transfer prints.

mod args;
mod client;
mod compat;
mod report;
mod serve;

#[cfg(test)]
pub use args::{parse_max_age, MaxAge};
pub use args::{FilesCommand, FilesServeArgs, GetArgs, LsArgs, PutArgs, RecvArgs};
pub(super) use client::{run_get, run_ls, run_put};
pub(super) use serve::{run_files_serve, run_recv};
