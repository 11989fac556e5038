//! The file commands: `files serve`, `put`, `get`, `ls`, `send`, `recv`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::ProgressDrawTarget;
use tokio_util::sync::CancellationToken;

use super::launch::{
    bind_failure, run_command, say, stream_transport, Bound, EngineArgs, ServiceDefaults,
};
use super::{parse_duration, Failure, Note};
use sockit::net::{Addr, Listener};
use sockit::server::{self, serve, Mode};
pub use sockit::service::files::parse_size;
use sockit::service::files::{
    self, check_exposure, Access, FileReport, FilesConfig, FilesServer, FilesService, GetOptions,
    HashAlg, OneShot, Policy, Progress, PutOptions, Remote, StoreOptions,
};
use sockit::session::{load_token, GateConfig, Gated};

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
    pub tls: super::ClientTlsArgs,
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
    pub tls: super::ServerTlsArgs,
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
    /// Accept only this digest (repeatable; default: blake3 and sha256).
    #[arg(long, value_parser = parse_hash)]
    pub hash: Vec<HashAlg>,
    /// Remove partial files (kept for a resume) untouched this long (e.g. 12h, 30d), at start
    /// and then at most hourly; `never` keeps them.
    #[arg(long, value_parser = parse_max_age, default_value = "7d")]
    pub partial_max_age: MaxAge,
    /// --max-conns defaults to 256 here (each session holds a few MiB of buffers and a disk
    /// thread); `recv` serves one sender at a time whatever it says.
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
    pub addr: Addr,
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
}

/// `sockit get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The file server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Addr,
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
    pub addr: Addr,
    /// Remote directory (default: the root).
    #[arg(default_value = "")]
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
    fn policy(&self) -> Policy {
        match (self.overwrite, self.rename) {
            (true, _) => Policy::Overwrite,
            (_, true) => Policy::Rename,
            _ => Policy::Refuse,
        }
    }

    /// The server config and token for a listener bound at `addr`.
    fn server(
        &self,
        dir: &std::path::Path,
        access: Access,
        addr: &Addr,
        progress: Progress,
        notes: &mut Vec<Note>,
    ) -> Result<(FilesService, GateConfig), Failure> {
        let token = load_token(self.token_file.as_deref()).map_err(|e| Failure::Usage(e.into()))?;
        check_exposure(addr, token.as_ref()).map_err(|e| Failure::Usage(anyhow::anyhow!(e)))?;
        let mut store = StoreOptions {
            policy: self.policy(),
            ..StoreOptions::default()
        };
        if let Some(max) = self.max_file_size {
            store.max_file_size = max;
        }
        let mut config = FilesConfig::new(dir);
        config.store = store;
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
    fn remote(&self, addr: &Addr) -> Result<Remote, Failure> {
        let tls = self.tls.connector()?;
        let token = load_token(self.token_file.as_deref()).map_err(|e| Failure::Usage(e.into()))?;
        Ok(Remote {
            addr: addr.clone(),
            token,
            tls,
        })
    }
}

/// `sockit files serve`.
pub(super) async fn run_files_serve(args: FilesServeArgs) -> Result<(), Failure> {
    let shutdown = server::shutdown_on_signals().context("cannot install signal handlers")?;
    let bound = args.bind(&shutdown).await?;
    run_command(vec![bound], shutdown).await
}

impl FilesServeArgs {
    /// Binds the file service; it serves until `shutdown` fires.
    ///
    /// # Errors
    /// A usage error for a bad directory, token file or certificate, a public address without
    /// a token, or the bind error.
    pub async fn bind(self, shutdown: &CancellationToken) -> Result<Bound, Failure> {
        let access = match (self.read_only, self.write_only) {
            (true, _) => Access::ReadOnly,
            (_, true) => Access::WriteOnly,
            _ => Access::ReadWrite,
        };
        let engine_args = &self.common.engine;
        let fail = |e| bind_failure("files", e);
        let listener = Listener::bind(&self.listen, &engine_args.bind_options())
            .await
            .map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        let mut notes = Vec::new();
        let (service, gate) =
            self.common
                .server(&self.dir, access, &addr, Progress::hidden(), &mut notes)?;
        let tls = gate.tls.is_some();
        let defaults = ServiceDefaults {
            max_conns: files::DEFAULT_MAX_FILES_CONNS,
            ..ServiceDefaults::default()
        };
        let engine = engine_args.config(files::SERVICE, Mode::Concurrent, defaults);
        notes.push(Note::Text(format!("dir: {}", self.dir.display())));
        let handler = FilesServer::new(gate, service);
        Ok(Bound {
            service: "files",
            transport: stream_transport(&addr, tls),
            label: "files".into(),
            detail: Some(format!("(dir {})", self.dir.display())),
            addr,
            notes,
            run: Box::pin(serve(listener, handler, engine, shutdown.clone())),
        })
    }
}

/// `sockit recv`: one authenticated session, then exit with its status. Each file gets a bar
/// while it arrives (as `put` does) and a line once stored.
pub(super) async fn run_recv(args: RecvArgs, quiet: bool) -> Result<(), Failure> {
    let engine_args = &args.common.engine;
    let listener = Listener::bind(&args.listen, &engine_args.bind_options())
        .await
        .context("recv")?;
    let addr = listener.local_addr().context("recv")?;
    let progress = progress_bar(quiet).with_file_lines("recv");
    let mut notes = Vec::new();
    let (service, gate) =
        args.common
            .server(&args.dir, Access::WriteOnly, &addr, progress, &mut notes)?;
    for note in &notes {
        if let Note::Fingerprint(fp) = note {
            say(&format!("tls fingerprint: {fp}"));
        }
    }
    let signals = server::shutdown_on_signals().context("cannot install signal handlers")?;
    let done: CancellationToken = signals.child_token();
    let engine = engine_args.config("recv", Mode::Sequential, ServiceDefaults::default());
    let one_shot = std::sync::Arc::new(Gated::new(gate, OneShot::new(service, done.clone())));
    eprintln!("recv listening on {addr} (dir {})", args.dir.display());
    serve(listener, SharedOneShot(one_shot.clone()), engine, done)
        .await
        .context("recv")?;
    match one_shot.service().outcome() {
        Some(summary) if summary.success() => {
            eprintln!(
                "recv: {} and {} stored, {} bytes",
                counted(summary.done, "file"),
                counted(summary.dirs, "directory"),
                summary.bytes
            );
            Ok(())
        }
        Some(summary) => Err(Failure::Runtime(anyhow::anyhow!(
            "recv: {} and {} stored, {} refused{}",
            counted(summary.done, "file"),
            counted(summary.dirs, "directory"),
            summary.rejected,
            summary
                .failure
                .map(|code| format!(", session ended: {code}"))
                .unwrap_or_default()
        ))),
        None => Err(Failure::Runtime(anyhow::anyhow!(
            "recv: interrupted before any sender connected"
        ))),
    }
}

/// Lets `run_recv` read the outcome after the engine has consumed the handler.
struct SharedOneShot(std::sync::Arc<Gated<OneShot>>);

impl server::Handler for SharedOneShot {
    async fn handle(&self, conn: server::Conn, info: server::ConnInfo) -> std::io::Result<()> {
        self.0.handle(conn, info).await
    }
}

/// `sockit put` / `sockit send`.
pub(super) async fn run_put(args: PutArgs, verb: &str, quiet: bool) -> Result<(), Failure> {
    let remote = args.client.remote(&args.addr)?;
    let options = PutOptions {
        follow: args.follow,
        hash: args.hash,
        progress: progress_bar(quiet),
    };
    let report = files::put(&remote, &args.paths, args.to.as_deref(), &options).await;
    options.progress.finish_and_clear();
    let report = report.map_err(|e| Failure::Runtime(e.into()))?;
    for warning in &report.warnings {
        eprintln!("sockit: {verb}: warning: {warning}");
    }
    print_failures(verb, &report.files);
    let moved = (report.bytes_sent, report.elapsed, report.hash);
    summary_line(verb, &report.files, moved);
    finish(report.failures())
}

/// `sockit get`.
pub(super) async fn run_get(args: GetArgs, quiet: bool) -> Result<(), Failure> {
    let remote = args.client.remote(&args.addr)?;
    let policy = match (args.overwrite, args.rename) {
        (true, _) => Policy::Overwrite,
        (_, true) => Policy::Rename,
        _ => Policy::Refuse,
    };
    let options = GetOptions {
        policy,
        hash: args.hash,
        progress: progress_bar(quiet),
    };
    let report = files::get(&remote, &args.paths, &args.output, &options).await;
    options.progress.finish_and_clear();
    let report = report.map_err(|e| Failure::Runtime(e.into()))?;
    print_failures("get", &report.files);
    let moved = (report.bytes_received, report.elapsed, report.hash);
    summary_line("get", &report.files, moved);
    finish(report.failures())
}

/// `sockit ls`: one line per entry on stdout, names escaped.
pub(super) async fn run_ls(args: LsArgs) -> Result<(), Failure> {
    let remote = args.client.remote(&args.addr)?;
    let entries = files::list(&remote, &args.dir)
        .await
        .map_err(|e| Failure::Runtime(e.into()))?;
    for entry in entries {
        let (kind, suffix) = match entry.kind {
            files::Kind::Dir => ('d', "/"),
            files::Kind::Symlink => ('l', ""),
            files::Kind::Other => ('?', ""),
            files::Kind::File => ('-', ""),
        };
        let name = sockit::text::escape_one_line(&entry.path, files::store::MAX_PATH_BYTES);
        println!(
            "{kind}{} {:>14} {name}{suffix}",
            mode_string(entry.mode),
            entry.size
        );
    }
    Ok(())
}

/// A bar on stderr when it is a terminal and not `-q`; else none (the summary line says it
/// all). The bar is cleared before anything else is printed.
fn progress_bar(quiet: bool) -> Progress {
    if quiet || !std::io::stderr().is_terminal() {
        return Progress::hidden();
    }
    Progress::new(ProgressDrawTarget::stderr())
}

fn mode_string(mode: u32) -> String {
    (0..9)
        .map(|i| {
            let bit = 1 << (8 - i);
            match (mode & bit != 0, i % 3) {
                (false, _) => '-',
                (true, 0) => 'r',
                (true, 1) => 'w',
                (true, _) => 'x',
            }
        })
        .collect()
}

fn print_failures(verb: &str, files: &[FileReport]) {
    for file in files {
        if let Err(rejection) = &file.result {
            let name = if file.local.is_empty() {
                &file.remote
            } else {
                &file.local
            };
            eprintln!("sockit: {verb}: {name}: {rejection}");
        }
    }
}

/// One line on stderr: what landed, how many bytes crossed the wire, how fast, verified how.
fn summary_line(
    verb: &str,
    files: &[FileReport],
    (moved, elapsed, hash): (u64, Duration, HashAlg),
) {
    let done = |kind| {
        files
            .iter()
            .filter(|f| f.kind == kind && f.result.is_ok())
            .count()
    };
    let (ok_files, ok_dirs) = (done(files::Kind::File), done(files::Kind::Dir));
    // Sizes a server may have declared: summed without overflowing.
    let bytes = files
        .iter()
        .filter(|f| f.result.is_ok())
        .map(|f| f.size)
        .fold(0, u64::saturating_add);
    let verified = if ok_files > 0 {
        format!("; verified {hash}")
    } else {
        String::new()
    };
    eprintln!(
        "{verb}: {} ({bytes} bytes) and {} done; {moved} bytes transferred in {:.2} s ({}){verified}",
        counted(ok_files as u64, "file"),
        counted(ok_dirs as u64, "directory"),
        elapsed.as_secs_f64(),
        files::transfer_rate(moved, elapsed),
    );
}

/// `1 file`, `2 files`, `1 directory`, `0 directories`.
fn counted(n: u64, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {noun}s"),
    }
}

fn finish(failures: usize) -> Result<(), Failure> {
    match failures {
        0 => Ok(()),
        n => Err(Failure::Runtime(anyhow::anyhow!("{n} failed"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_render_like_ls() {
        assert_eq!(mode_string(0o754), "rwxr-xr--");
    }
}
