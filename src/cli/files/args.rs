//! The clap types of the file commands, and how they become the library's configs.

use crate::cli::peer::Peer;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::cli::launch::{EngineArgs, Tokens};
use crate::cli::{parse_duration, ClientTlsArgs, Failure, Note, ServerTlsArgs};
use sockit::net::Addr;
pub use sockit::service::files::parse_size;
use sockit::service::files::{
    self, Access, FilesConfig, FilesService, HashAlg, Policy, Progress, Remote, StoreOptions,
};
use sockit::session::{load_token, GateConfig};

/// `sockit files ...`.
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Receive into and serve from a directory: verified, atomic, resumable transfers.
    Serve(FilesServeArgs),
}

/// Client options shared by `put`, `get`, `ls` and `send`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// File holding the token (mode 0600); else SOCKIT_TOKEN; else none (loopback servers).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// --tls, --tls-pin, --tls-ca.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// `sockit files serve`.
#[derive(Debug, Args)]
pub struct FilesServeArgs {
    /// The directory to receive into and serve from (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Address: HOST:PORT, [IPv6]:PORT or unix:/path.
    #[arg(long, default_value = files::DEFAULT_FILES_ADDR)]
    pub listen: Addr,
    /// Serve files but refuse uploads.
    #[arg(long, conflicts_with = "write_only")]
    pub read_only: bool,
    /// Accept uploads but refuse listing and downloads.
    #[arg(long)]
    pub write_only: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: ServerArgs,
}

/// Server options shared by `files serve` and `recv`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// File holding the token (mode 0600); else SOCKIT_TOKEN; else none, which only loopback
    /// allows.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// --tls, --cert, --key.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Largest file accepted (e.g. 512M, 10G).
    #[arg(long, value_parser = parse_size)]
    pub max_file_size: Option<u64>,
    /// Replace existing files (atomically) instead of refusing.
    #[arg(long, conflicts_with_all = ["rename", "refuse"])]
    pub overwrite: bool,
    /// Keep existing files and store new ones as `name (1).ext`.
    #[arg(long, conflicts_with = "refuse")]
    pub rename: bool,
    /// Refuse a file whose name is taken (the default).
    #[arg(long)]
    pub refuse: bool,
    /// Accept hidden (dot) names: `.bashrc`, `.ssh/…`, `.git/hooks/…` (refused by default,
    /// in case the directory is someone's home).
    #[arg(long)]
    pub allow_hidden_names: bool,
    /// Accept names that Windows or a shell trip on: a leading `-` or space, a trailing space
    /// or dot, `CON`/`NUL`/`COM1`-style names, `< > : " | ? *`, invisible characters
    /// (refused by default, in case the directory is shared with Windows).
    #[arg(long)]
    pub allow_unportable_names: bool,
    /// Accept only this digest (repeatable; default: blake3 and sha256).
    #[arg(long, value_parser = parse_hash)]
    pub hash: Vec<HashAlg>,
    /// Remove partial files (kept for a resume) untouched this long (e.g. 12h, 30d), at start
    /// and then at most hourly; `never` keeps them.
    #[arg(long, value_parser = parse_max_age, default_value = "7d")]
    pub partial_max_age: MaxAge,
    /// Most bytes the partial files of cut-off transfers may hold together (e.g. 2G, 100G);
    /// past it the least recently written are dropped (a new upload is never refused for it)
    #[arg(long, value_parser = parse_size, default_value = "16G")]
    pub partial_max_total: u64,
    /// --max-conns defaults to 256 here (each session holds a few MiB of buffers and a disk
    /// thread); `recv` serves one sender whatever it says and tells others it is busy.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How long partial files are kept: `None` is forever (`never` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxAge(pub Option<Duration>);

/// Parses `--partial-max-age`: a duration above zero, or `never`.
pub fn parse_max_age(s: &str) -> Result<MaxAge, String> {
    if s.trim() == "never" {
        return Ok(MaxAge(None));
    }
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!(
            "a max age of {s:?} would remove every partial file; use `never` to keep them"
        )),
        d => Ok(MaxAge(Some(d))),
    }
}

/// `sockit put` and `sockit send`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The file server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Peer,
    /// Files and directories to send (directories recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Remote directory to put them in.
    #[arg(long)]
    pub to: Option<String>,
    /// Send what symbolic links point to (default: skip them with a warning).
    #[arg(long)]
    pub follow: bool,
    /// Digest to verify with: blake3 (default) or sha256.
    #[arg(long, value_parser = parse_hash, default_value = "blake3")]
    pub hash: HashAlg,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
    /// Send in the lessons' header format to a lesson-style receiver: regular files only,
    /// each under its own name with its SHA-256 (no auth, no TLS, no resume).
    #[arg(long, value_enum, conflicts_with_all = ["to", "follow", "token_file", "tls"])]
    pub compat: Option<FileCompat>,
}

/// The lessons' file format: `struct.pack("i", len(header))`, a JSON header
/// `{"filename", "total_size", "hash"}`, the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileCompat {
    /// The lessons' header (also called `struct-json`).
    #[value(alias = "struct-json")]
    Tutorial,
}

/// `sockit get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The file server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Peer,
    /// Remote files and directories to fetch.
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Local directory to fetch into.
    #[arg(short, long, default_value = ".")]
    pub output: PathBuf,
    /// Replace existing local files (atomically) instead of refusing.
    #[arg(long, conflicts_with = "rename")]
    pub overwrite: bool,
    /// Keep existing local files and store new ones as `name (1).ext`.
    #[arg(long)]
    pub rename: bool,
    /// Digest to verify with: blake3 (default) or sha256.
    #[arg(long, value_parser = parse_hash, default_value = "blake3")]
    pub hash: HashAlg,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
}

/// `sockit ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The file server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Peer,
    /// Remote directory (default: the root).
    #[arg(default_value = "", hide_default_value = true)]
    pub dir: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub client: ClientArgs,
}

/// `sockit recv`.
#[derive(Debug, Args)]
pub struct RecvArgs {
    /// Address to wait on: HOST:PORT, [IPv6]:PORT or unix:/path.
    #[arg(long, default_value = files::DEFAULT_FILES_ADDR)]
    pub listen: Addr,
    /// The directory to receive into (created if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: ServerArgs,
    /// Take one lesson-style upload instead (several files, each a `struct.pack("i")` length,
    /// a JSON header and the bytes); no auth, so loopback or a Unix socket only.
    #[arg(long, value_enum, conflicts_with_all = ["token_file", "tls", "hash"])]
    pub compat: Option<FileCompat>,
}

/// Parses a digest name.
///
/// # Errors
/// A message listing the names.
pub fn parse_hash(s: &str) -> Result<HashAlg, String> {
    match s {
        "blake3" => Ok(HashAlg::Blake3),
        "sha256" => Ok(HashAlg::Sha256),
        _ => Err(format!("unknown digest {s:?}: use blake3 or sha256")),
    }
}

impl ServerArgs {
    /// The store's settings from the flags.
    pub(super) fn store_options(&self) -> StoreOptions {
        let mut store = StoreOptions {
            policy: self.policy(),
            allow_hidden_names: self.allow_hidden_names,
            allow_unportable_names: self.allow_unportable_names,
            partial_max_total: self.partial_max_total,
            ..StoreOptions::default()
        };
        if let Some(max) = self.max_file_size {
            store.max_file_size = max;
        }
        store
    }

    fn policy(&self) -> Policy {
        match (self.overwrite, self.rename) {
            (true, _) => Policy::Overwrite,
            (_, true) => Policy::Rename,
            _ => Policy::Refuse,
        }
    }

    /// The server config and token for a listener bound at `addr`.
    pub(super) fn server(
        &self,
        dir: &std::path::Path,
        access: Access,
        addr: &Addr,
        tokens: &Tokens,
        progress: Progress,
        notes: &mut Vec<Note>,
    ) -> Result<(FilesService, GateConfig), Failure> {
        let token = tokens.resolve(self.token_file.as_deref(), addr, notes)?;
        let mut config = FilesConfig::new(dir);
        config.store = self.store_options();
        config.access = access;
        config.progress = progress;
        if !self.hash.is_empty() {
            config.hashes = self.hash.clone();
        }
        let gate = GateConfig {
            tls: self.tls.acceptor(addr, notes)?,
            pending: self.engine.pending(),
            ..files::gate(token)
        };
        config.partial_max_age = self.partial_max_age.0;
        let service = FilesService::new(config)
            .with_context(|| format!("cannot use {}", dir.display()))
            .map_err(Failure::Usage)?;
        Ok((service, gate))
    }
}

impl ClientArgs {
    pub(super) async fn remote(&self, peer: &Peer) -> Result<Remote, Failure> {
        let tls = self.tls.connector(peer)?;
        let token = load_token(self.token_file.as_deref()).map_err(|e| Failure::Usage(e.into()))?;
        Ok(Remote {
            addr: peer.resolve().await?,
            token,
            tls,
        })
    }
}
