//! `get`: ask for each path's manifest, create its directories locally, then pipeline the
//! `fetch`es while receiving the files into a local [`Store`], resuming from local partials.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::super::hash::HashAlg;
use super::super::messages::{ClientMessage, Entry, Kind, ServerMessage};
use super::super::progress::Progress;
use super::super::store::{FileMeta, Partial, Policy, RelPath, Store, StoreOptions};
use super::super::transfer::{receive_file, ReceiveError};
use super::super::{FilesError, Rejection};
use super::{read_entries, shown, unexpected, ConnStream, FileReport, Remote, WINDOW_REQUESTS};
use crate::wire::{Connection, ReadSide, WriteSide};

/// How to `get`.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// What to do when a local name is taken (default: refuse, leaving the local file alone).
    pub policy: Policy,
    /// The digest to verify with.
    pub hash: HashAlg,
    /// Advanced as bytes are received (default: hidden).
    pub progress: Progress,
}

/// What a `get` did.
#[derive(Debug, Clone)]
pub struct GetReport {
    /// One entry per requested path that failed whole, and per file and directory fetched.
    pub files: Vec<FileReport>,
    /// Body bytes actually received (after resumes, less than the files' total size).
    pub bytes_received: u64,
    /// The digest used.
    pub hash: HashAlg,
    /// Wall time of the whole command.
    pub elapsed: Duration,
}

impl GetReport {
    /// How many entries failed.
    pub fn failures(&self) -> usize {
        self.files.iter().filter(|f| f.result.is_err()).count()
    }
}

/// One file to fetch: where it is on the server and where it lands here.
struct Wanted {
    index: usize,
    server_path: String,
    local: RelPath,
    /// The size the manifest announced.
    size: u64,
}

/// A fetch sent and not yet answered, with the local prefix it offered.
struct InFlight {
    index: usize,
    local: RelPath,
    partial: Option<Partial>,
    /// The size the manifest announced.
    size: u64,
}

/// Fetches `remote_paths` (files or whole directories; `""` is the root) into `local_dir`,
/// keeping each requested name. Every file is verified before it becomes visible locally.
/// `options.progress` totals the manifests' sizes and advances as the bytes arrive.
///
/// # Errors
/// [`FilesError`]: the local directory cannot be used, or the connection or handshake failed.
/// Per-file failures are in the report.
pub async fn get(
    remote: &Remote,
    remote_paths: &[String],
    local_dir: &Path,
    options: &GetOptions,
) -> Result<GetReport, FilesError> {
    let started = Instant::now();
    let store = open_local_store(local_dir, options.policy).await?;
    let mut conn = remote.open().await?;
    let mut files = Vec::new();
    let mut wanted = Vec::new();
    for requested in remote_paths {
        let requested = requested.trim_matches('/');
        let get = ClientMessage::Get {
            path: requested.to_owned(),
        };
        conn.write_frame(&get, &[]).await?;
        match read_entries(&mut conn).await? {
            Ok(entries) => {
                for entry in entries {
                    plan_entry(&store, requested, entry, &mut files, &mut wanted).await;
                }
            }
            Err(rejection) => {
                files.push(report(String::new(), requested, Kind::File, Err(rejection)))
            }
        }
    }
    options
        .progress
        // Sizes from the server's listing: summed without overflowing.
        .add_total(wanted.iter().map(|w| w.size).fold(0, u64::saturating_add));
    let (reader, writer) = conn.split();
    let (tx, rx) = mpsc::channel(WINDOW_REQUESTS);
    let requester = tokio::spawn(send_fetches(
        writer,
        wanted,
        Arc::clone(&store),
        options.hash,
        tx,
        options.progress.clone(),
    ));
    let mut receiver = Receiver {
        reader,
        store,
        bytes: 0,
        progress: options.progress.clone(),
    };
    let received = receiver.receive_all(rx, &mut files).await;
    // Done or failed: either way nothing more is to be sent.
    requester.abort();
    if let Ok(local_failures) = requester.await {
        for (index, rejection) in local_failures {
            if let Some(report) = files.get_mut(index) {
                report.result = Err(rejection);
            }
        }
    }
    let store = Arc::clone(&receiver.store);
    let _ = tokio::task::spawn_blocking(move || store.tidy_partial_dir()).await;
    received?;
    Ok(GetReport {
        files,
        bytes_received: receiver.bytes,
        hash: options.hash,
        elapsed: started.elapsed(),
    })
}

async fn open_local_store(dir: &Path, policy: Policy) -> Result<Arc<Store>, FilesError> {
    let dir: PathBuf = dir.to_owned();
    // The user named what to fetch, into a directory they chose: the names the server's
    // store refuses by default are theirs to take.
    let options = StoreOptions {
        policy,
        allow_hidden_names: true,
        allow_unportable_names: true,
        ..StoreOptions::default()
    };
    tokio::task::spawn_blocking(move || Store::open(&dir, options))
        .await
        .map_err(|e| FilesError::Local(e.to_string()))?
        .map(Arc::new)
        .map_err(|e| FilesError::Local(e.to_string()))
}

fn report(
    local: String,
    remote: &str,
    kind: Kind,
    result: Result<String, Rejection>,
) -> FileReport {
    FileReport {
        local,
        remote: shown(remote),
        kind,
        size: 0,
        transferred: 0,
        result,
        unchanged: false,
    }
}

/// Files the manifest's entry: a directory is created now (parents come first), a file is
/// queued for fetching. Names from the server are validated like any peer's.
async fn plan_entry(
    store: &Arc<Store>,
    requested: &str,
    entry: Entry,
    files: &mut Vec<FileReport>,
    wanted: &mut Vec<Wanted>,
) {
    let parent = requested.rsplit_once('/').map_or("", |(parent, _)| parent);
    let server_path = match parent {
        "" => entry.path.clone(),
        parent => format!("{parent}/{}", entry.path),
    };
    let local = match RelPath::parse(&entry.path) {
        Ok(local) => local,
        Err(e) => {
            files.push(report(
                String::new(),
                &server_path,
                entry.kind,
                Err(e.into()),
            ));
            return;
        }
    };
    match entry.kind {
        Kind::Dir => {
            let (store, dir, mode) = (Arc::clone(store), local.clone(), entry.mode);
            let made = tokio::task::spawn_blocking(move || store.mkdir(&dir, mode))
                .await
                .unwrap_or_else(|e| {
                    Err(super::super::StoreError::Io {
                        path: String::new(),
                        source: std::io::Error::other(e),
                    })
                });
            let result = made.map(|()| local.to_string()).map_err(Rejection::from);
            files.push(report(local.to_string(), &server_path, Kind::Dir, result));
        }
        Kind::File => {
            let mut file = report(
                local.to_string(),
                &server_path,
                Kind::File,
                Err(Rejection::new(
                    "not_answered",
                    "the connection ended before the file arrived",
                )),
            );
            file.size = entry.size;
            wanted.push(Wanted {
                index: files.len(),
                server_path,
                local,
                size: entry.size,
            });
            files.push(file);
        }
        Kind::Symlink | Kind::Other => {}
    }
}

/// The writing half: a `fetch` per file, offering the local partial as a prefix; returns the
/// files that failed locally before any request (a name taken under the refuse policy, …).
async fn send_fetches(
    mut writer: Connection<WriteSide<ConnStream>>,
    wanted: Vec<Wanted>,
    store: Arc<Store>,
    alg: HashAlg,
    pending: mpsc::Sender<InFlight>,
    progress: Progress,
) -> Vec<(usize, Rejection)> {
    let mut failures = Vec::new();
    for want in wanted {
        let (s, name) = (Arc::clone(&store), want.local.clone());
        let size = Some(want.size);
        let partial = tokio::task::spawn_blocking(move || s.partial_for(&name, alg, size)).await;
        let partial = match partial {
            Ok(Ok(partial)) => partial,
            Ok(Err(e)) => {
                progress.remove_total(want.size);
                failures.push((want.index, Rejection::from(e)));
                continue;
            }
            Err(e) => {
                progress.remove_total(want.size);
                failures.push((want.index, Rejection::new("internal", e.to_string())));
                continue;
            }
        };
        let fetch = ClientMessage::Fetch {
            path: want.server_path,
            offset: partial.as_ref().map_or(0, |p| p.len),
            prefix: partial.as_ref().map(|p| p.hasher.hex()),
            hash: alg,
        };
        let in_flight = InFlight {
            index: want.index,
            local: want.local,
            partial,
            size: want.size,
        };
        if pending.send(in_flight).await.is_err() || writer.write_frame(&fetch, &[]).await.is_err()
        {
            break;
        }
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(writer.get_mut()).await;
    failures
}

/// The reading half of a `get`.
struct Receiver {
    reader: Connection<ReadSide<ConnStream>>,
    store: Arc<Store>,
    bytes: u64,
    progress: Progress,
}

impl Receiver {
    async fn receive_all(
        &mut self,
        mut pending: mpsc::Receiver<InFlight>,
        files: &mut [FileReport],
    ) -> Result<(), FilesError> {
        while let Some(next) = pending.recv().await {
            let index = next.index;
            let (result, transferred) = self.receive_one(next).await?;
            if let Some(report) = files.get_mut(index) {
                report.result = result.map(|(name, unchanged)| {
                    report.unchanged = unchanged;
                    name
                });
                report.transferred = transferred;
            }
        }
        Ok(())
    }

    async fn receive_one(
        &mut self,
        next: InFlight,
    ) -> Result<(Result<(String, bool), Rejection>, u64), FilesError> {
        let header = match self.reader.read_frame::<ServerMessage>().await? {
            Some(ServerMessage::File(header)) => header,
            Some(ServerMessage::Rejected { code, message, .. }) => {
                self.progress.remove_total(next.size);
                return Ok((Err(Rejection::from_peer(&code, &message)), 0));
            }
            other => return Err(unexpected(other)),
        };
        let resume = match (header.offset, next.partial) {
            (0, _) => None,
            (offset, Some(partial)) if partial.len == offset => Some(partial),
            (offset, _) => {
                return Err(FilesError::Protocol(format!(
                    "the server resumed {} from offset {offset}, which was not offered",
                    next.local
                )))
            }
        };
        let body = header.body_len();
        self.progress.start_file(&next.local.as_wire());
        self.progress.file_size(header.size);
        if header.size != next.size {
            // It changed since the listing; the bar follows what is sent.
            self.progress.remove_total(next.size);
            self.progress.add_total(header.size);
        }
        self.progress.skip(header.offset);
        let store = Arc::clone(&self.store);
        let meta = FileMeta {
            mode: header.mode,
            mtime: header.mtime,
            mtime_nsec: header.mtime_nsec,
        };
        let (local, size, alg) = (next.local, header.size, header.hash);
        let open = move || store.create(&local, size, meta, alg, resume);
        let received =
            receive_file::<_, ServerMessage, _>(&mut self.reader, body, open, &self.progress).await;
        self.bytes = self.bytes.saturating_add(body);
        match received {
            Ok(stored) => Ok((stored.map(|s| (shown(&s.name), s.unchanged)), body)),
            Err(ReceiveError::Broken(e)) => Err(e.into()),
            Err(ReceiveError::Invalid(r)) => Err(FilesError::Protocol(r.to_string())),
            Err(ReceiveError::Unskippable(r)) => Err(FilesError::Rejected(r)),
        }
    }
}
