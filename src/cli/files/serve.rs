//! The file servers: `files serve`, and `recv`, which serves one sender and exits.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::args::{FilesServeArgs, RecvArgs};
use super::report::{counted, progress_bar};
use crate::cli::launch::{
    bind_failure, run_command, stream_transport, Bound, ServiceDefaults, Tokens,
};
use crate::cli::output::{eprint_line, say};
use crate::cli::{Failure, Note};
use sockit::engine::{self, serve, Mode};
use sockit::net::Listener;
use sockit::service::files::{self, Access, FilesServer, OneShot, Progress};
use sockit::session::Gated;

/// Connections `recv` handles at once by default: the one sender it serves, and others it
/// tells at once that it is busy.
const RECV_MAX_CONNS: usize = 8;

/// Raises the soft limit on open files to the hard one (best effort, as Go programs and
/// nginx's `worker_rlimit_nofile` do): a session storing a batch of small files holds one
/// descriptor per file until they are synced, and fewer descriptors mean smaller batches.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            // An infinite hard limit cannot be the soft one on Linux: then keep what we have.
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// `sockit files serve`.
pub(crate) async fn run_files_serve(args: FilesServeArgs) -> Result<(), Failure> {
    let shutdown = engine::shutdown_on_signals().context("cannot install signal handlers")?;
    let bound = args.bind(&shutdown, &Tokens::single()).await?;
    run_command(vec![bound], shutdown).await
}

impl FilesServeArgs {
    /// Binds the file service; it serves until `shutdown` fires.
    ///
    /// # Errors
    /// A usage error for a bad directory, token file or certificate, a public address without
    /// a token, or the bind error.
    pub async fn bind(
        self,
        shutdown: &CancellationToken,
        tokens: &Tokens,
    ) -> Result<Bound, Failure> {
        raise_open_files_limit();
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
        let (service, gate) = self.common.server(
            &self.dir,
            access,
            &addr,
            tokens,
            Progress::hidden(),
            &mut notes,
        )?;
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
pub(crate) async fn run_recv(args: RecvArgs, quiet: bool) -> Result<(), Failure> {
    if args.compat.is_some() {
        return super::compat::run_recv_compat(args).await;
    }
    raise_open_files_limit();
    let engine_args = &args.common.engine;
    let listener = Listener::bind(&args.listen, &engine_args.bind_options())
        .await
        .context("recv")?;
    let addr = listener.local_addr().context("recv")?;
    let progress = progress_bar(quiet).with_file_lines("recv");
    let mut notes = Vec::new();
    let (service, gate) = args.common.server(
        &args.dir,
        Access::WriteOnly,
        &addr,
        &Tokens::single(),
        progress,
        &mut notes,
    )?;
    for note in &notes {
        if let Note::Fingerprint(fp) = note {
            say(&format!("tls fingerprint: {fp}"));
        }
    }
    let signals = engine::shutdown_on_signals().context("cannot install signal handlers")?;
    let done: CancellationToken = signals.child_token();
    // Concurrent, so a second sender is accepted and told the receiver is busy (OneShot)
    // rather than left in the backlog until it is reset; a few at once is plenty for that.
    let defaults = ServiceDefaults {
        max_conns: RECV_MAX_CONNS,
        ..ServiceDefaults::default()
    };
    let engine = engine_args.config("recv", Mode::Concurrent, defaults);
    let one_shot = std::sync::Arc::new(Gated::new(gate, OneShot::new(service, done.clone())));
    eprint_line(&format!(
        "recv listening on {addr} (dir {})",
        args.dir.display()
    ));
    serve(listener, SharedOneShot(one_shot.clone()), engine, done)
        .await
        .context("recv")?;
    match one_shot.service().outcome() {
        Some(summary) if summary.success() => {
            eprint_line(&format!(
                "recv: {} and {} stored, {} bytes",
                counted(summary.done, "file"),
                counted(summary.dirs, "directory"),
                summary.bytes
            ));
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

impl engine::Handler for SharedOneShot {
    async fn handle(&self, conn: engine::Conn, info: engine::ConnInfo) -> std::io::Result<()> {
        self.0.handle(conn, info).await
    }
}
