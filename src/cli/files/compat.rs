//! `recv --compat tutorial` and `send --compat tutorial`: files in the lessons' header format.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::args::{PutArgs, RecvArgs};
use crate::cli::launch::ServiceDefaults;
use crate::cli::output::{eprint_line, say};
use crate::cli::Failure;
use sockit::compat::files::{self as compat, HashCheck, Received};
use sockit::engine::{self, serve, Conn, ConnInfo, Handler, Mode};
use sockit::net::{Listener, Stream};
use sockit::service::files::Store;

/// How long `send --compat` may take to connect.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `sockit recv --compat tutorial`: one sender's files, then exit 0 if every one was stored.
pub(crate) async fn run_recv_compat(args: RecvArgs) -> Result<(), Failure> {
    if !args.listen.is_local() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "recv --compat has no authentication, so it only listens on loopback or a Unix \
             socket, not {}",
            args.listen
        )));
    }
    let store = Store::open(&args.dir, args.common.store_options())
        .with_context(|| format!("cannot use {}", args.dir.display()))
        .map_err(Failure::Usage)?;
    let engine_args = &args.common.engine;
    let listener = Listener::bind(&args.listen, &engine_args.bind_options())
        .await
        .context("recv")?;
    let addr = listener.local_addr().context("recv")?;
    let signals = engine::shutdown_on_signals().context("cannot install signal handlers")?;
    let done = signals.child_token();
    let engine = engine_args.config("recv-compat", Mode::Sequential, ServiceDefaults::default());
    let handler = Arc::new(OneUpload {
        store: Arc::new(store),
        done: done.clone(),
        outcome: Mutex::new(None),
    });
    eprint_line(&format!(
        "recv listening on {addr} (dir {}, the lessons' file format, no auth)",
        args.dir.display()
    ));
    serve(listener, SharedUpload(handler.clone()), engine, done)
        .await
        .context("recv")?;
    let outcome = handler.outcome.lock().ok().and_then(|mut o| o.take());
    match outcome {
        Some(Outcome {
            stored,
            refused: 0,
            error: None,
        }) => {
            eprint_line(&format!("recv: {stored} stored"));
            Ok(())
        }
        Some(Outcome {
            stored,
            refused,
            error,
        }) => Err(Failure::Runtime(anyhow::anyhow!(
            "recv: {stored} stored, {refused} refused{}",
            error
                .map(|e| format!(", connection ended: {e}"))
                .unwrap_or_default()
        ))),
        None => Err(Failure::Runtime(anyhow::anyhow!(
            "recv: interrupted before any sender connected"
        ))),
    }
}

/// The first connection's upload; `done` fires when it ends.
struct OneUpload {
    store: Arc<Store>,
    done: CancellationToken,
    outcome: Mutex<Option<Outcome>>,
}

/// What the upload came to.
struct Outcome {
    stored: usize,
    refused: usize,
    error: Option<String>,
}

/// Lets `run_recv_compat` read the outcome after the engine has consumed the handler.
struct SharedUpload(Arc<OneUpload>);

impl Handler for SharedUpload {
    async fn handle(&self, mut conn: Conn, _info: ConnInfo) -> std::io::Result<()> {
        let this = &self.0;
        if this.done.is_cancelled() {
            return Ok(());
        }
        let (mut stored, mut refused) = (0, 0);
        let result = compat::receive(&mut conn, this.store.clone(), |received| {
            match &received {
                Received::Stored { .. } => stored += 1,
                Received::Refused { .. } => refused += 1,
            }
            eprint_line(&report_line(&received));
        })
        .await;
        if let Ok(mut outcome) = this.outcome.lock() {
            outcome.get_or_insert(Outcome {
                stored,
                refused,
                error: result.err().map(|e| e.to_string()),
            });
        }
        this.done.cancel();
        Ok(())
    }
}

fn report_line(received: &Received) -> String {
    match received {
        Received::Stored { name, size, check } => {
            let check = match check {
                HashCheck::Md5 => "md5 verified",
                HashCheck::Sha256 => "sha256 verified",
                HashCheck::Unchecked => "hash not checked (neither MD5 nor SHA-256 hex)",
            };
            format!("recv: stored {name} ({size} bytes); {check}")
        }
        Received::Refused { name, reason } => format!("recv: refused {name}: {reason}"),
    }
}

/// `sockit send --compat tutorial`: each file with its name, size and SHA-256.
pub(crate) async fn run_send_compat(args: PutArgs) -> Result<(), Failure> {
    let addr = args.addr.resolve().await?;
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, Stream::connect(&addr))
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to {addr} within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    let sent = compat::send(&mut stream, &args.paths)
        .await
        .context("send")?;
    for file in &sent {
        say(&format!(
            "send: sent {} ({} bytes, sha256 {})",
            sockit::text::escape_one_line(&file.name, 200),
            file.size,
            file.sha256
        ));
    }
    Ok(())
}
