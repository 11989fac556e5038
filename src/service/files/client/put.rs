//! `put`: walk the local paths, then pipeline `mkdir`s and files over one connection while a
//! reader task collects the answers; large files probe first and resume from a proven prefix.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::super::hash::{HashAlg, Hasher};
use super::super::local::{local_meta, prefix_digest, LocalMeta};
use super::super::messages::{ClientMessage, FileHeader, Kind, ServerMessage};
use super::super::progress::Progress;
use super::super::transfer::send_file;
use super::super::{FilesError, Rejection};
use super::ahead::{self, Prepared, ReadAhead, SmallFile};
use super::walk::{plan, shown_path, Item};
use super::{
    shown, unexpected, ConnStream, FileReport, Remote, RESUME_PROBE_MIN_BYTES, WINDOW_REQUESTS,
};
use crate::wire::{Connection, ReadSide, WriteSide};

/// How to `put`.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Send what symbolic links point to (default: skip them with a warning).
    pub follow: bool,
    /// The digest to verify with.
    pub hash: HashAlg,
    /// Advanced as bytes are sent (default: hidden).
    pub progress: Progress,
}

/// What a `put` did.
#[derive(Debug, Clone)]
pub struct PutReport {
    /// One entry per file and directory, in sending order.
    pub files: Vec<FileReport>,
    /// What was skipped on purpose (symlinks, special files), escaped.
    pub warnings: Vec<String>,
    /// Body bytes actually sent (after resumes, less than the files' total size).
    pub bytes_sent: u64,
    /// The digest used.
    pub hash: HashAlg,
    /// Wall time of the whole command.
    pub elapsed: Duration,
}

impl PutReport {
    /// How many entries failed.
    pub fn failures(&self) -> usize {
        self.files.iter().filter(|f| f.result.is_err()).count()
    }
}

type Reader = Connection<ReadSide<ConnStream>>;
type Writer = Connection<WriteSide<ConnStream>>;

/// An answer the reader task waits for, in request order.
enum Pending {
    /// `stored` or `rejected` for entry `index`.
    Stored(usize),
    /// `partial` or `rejected` for a probe: handed to the writer, which waits for it.
    Probe(oneshot::Sender<Result<ProbeAnswer, Rejection>>),
}

/// A `partial` answer to a probe.
struct ProbeAnswer {
    /// Bytes of a partial copy the server holds, and their digest.
    offset: u64,
    prefix: Option<String>,
    /// The digest of a same-size file already under the name (refuse policy).
    existing: Option<String>,
}

/// Where a file's body starts, as a probe decided.
enum Start {
    /// At `offset` (0, or the end of a proven prefix), with the digest state there.
    At(File, u64, Hasher),
    /// Nowhere: the server already holds these very bytes under the name.
    Unchanged,
}

/// Sends `paths` (files and, recursively, directories) to the server, under `to_dir` if given.
///
/// Every file is verified by the server before it becomes visible; per-file failures are in
/// the report, not errors. `options.progress` totals the files' sizes and advances as their
/// bytes are sent.
///
/// # Errors
/// [`FilesError`]: the connection or the handshake failed, or `to_dir` is invalid.
pub async fn put(
    remote: &Remote,
    paths: &[PathBuf],
    to_dir: Option<&str>,
    options: &PutOptions,
) -> Result<PutReport, FilesError> {
    let started = Instant::now();
    let (paths, to, follow) = (paths.to_vec(), to_dir.map(str::to_owned), options.follow);
    let plan = tokio::task::spawn_blocking(move || plan(&paths, to.as_deref(), follow))
        .await
        .map_err(|e| FilesError::Local(e.to_string()))?
        .map_err(FilesError::Local)?;
    let mut files: Vec<FileReport> = plan.items.iter().map(initial_report).collect();
    let total = plan.items.iter().map(|item| match item {
        Item::File { size, .. } => *size,
        _ => 0,
    });
    options.progress.add_total(total.sum());
    let conn = remote.open().await?;
    let (reader, writer) = conn.split();
    let (pending_tx, pending_rx) = mpsc::channel(WINDOW_REQUESTS);
    let answers = tokio::spawn(collect_answers(reader, pending_rx));
    let mut sender = Sender {
        writer,
        pending: pending_tx,
        hash: options.hash,
        bytes_sent: 0,
        progress: options.progress.clone(),
        queued: Vec::new(),
        queued_bytes: 0,
    };
    let sent = sender.send_all(&plan.items, &mut files).await;
    let sent = match sent {
        Ok(()) => sender.send_queued().await,
        Err(e) => Err(e),
    };
    let _ = tokio::io::AsyncWriteExt::shutdown(sender.writer.get_mut()).await;
    let bytes_sent = sender.bytes_sent;
    drop(sender);
    let answered = answers
        .await
        .map_err(|e| FilesError::Protocol(e.to_string()))?;
    let (results, failure) = match answered {
        Ok(results) => (results, None),
        Err((results, e)) => (results, Some(e)),
    };
    for (index, result) in results {
        if let Some(report) = files.get_mut(index) {
            report.result = result.map(|(name, unchanged)| {
                report.unchanged = unchanged;
                name
            });
        }
    }
    // A broken connection is the command's failure; the reader's reason is the better one.
    if let Some(e) = failure {
        return Err(e);
    }
    sent?;
    Ok(PutReport {
        files,
        warnings: plan.warnings,
        bytes_sent,
        hash: options.hash,
        elapsed: started.elapsed(),
    })
}

fn initial_report(item: &Item) -> FileReport {
    let (local, remote, kind, result) = match item {
        Item::Dir { local, remote, .. } => (local, remote.as_str(), Kind::Dir, not_answered()),
        Item::File { local, remote, .. } => (local, remote.as_str(), Kind::File, not_answered()),
        Item::Failed { local, rejection } => (local, "", Kind::File, Err(rejection.clone())),
    };
    FileReport {
        local: shown_path(local),
        remote: shown(remote),
        kind,
        size: 0,
        transferred: 0,
        result,
        unchanged: false,
    }
}

fn not_answered() -> Result<String, Rejection> {
    Err(Rejection::new(
        "not_answered",
        "the connection ended before the server answered",
    ))
}

/// The writing half of a `put`.
struct Sender {
    writer: Writer,
    pending: mpsc::Sender<Pending>,
    hash: HashAlg,
    bytes_sent: u64,
    progress: Progress,
    /// Frames of small files waiting to go out together, and their bytes.
    queued: Vec<(ClientMessage, Vec<u8>)>,
    queued_bytes: usize,
}

/// Frames of small files are written together once this many bytes are queued (or when the
/// next file is not read yet, or before any other request).
const QUEUED_MAX_BYTES: usize = 256 * 1024;

impl Sender {
    async fn send_all(
        &mut self,
        items: &[Item],
        files: &mut [FileReport],
    ) -> Result<(), FilesError> {
        let mut ahead = ReadAhead::start(items, self.hash);
        for (index, item) in items.iter().enumerate() {
            if ahead::is_small(item) {
                if let (
                    Item::File {
                        local,
                        remote,
                        size,
                    },
                    Some(report),
                ) = (item, files.get_mut(index))
                {
                    self.progress.start_file(remote);
                    match ahead.take(index).await {
                        Prepared::Read(file) => {
                            self.queue_small(index, remote, *size, file, report).await?
                        }
                        Prepared::Grown => {
                            self.send_queued().await?;
                            self.send_file(index, local, remote, *size, report).await?;
                        }
                        Prepared::Failed(e) => {
                            self.progress.remove_total(*size);
                            let message = format!("cannot read {}: {e}", shown_path(local));
                            report.result = Err(Rejection::new("local_io", message));
                        }
                    }
                }
                if !ahead.next_ready() || self.queued_bytes >= QUEUED_MAX_BYTES {
                    self.send_queued().await?;
                }
                continue;
            }
            self.send_queued().await?;
            match item {
                Item::Dir { remote, mode, .. } => {
                    self.expect(Pending::Stored(index)).await?;
                    let mkdir = ClientMessage::Mkdir {
                        path: remote.clone(),
                        mode: *mode,
                    };
                    self.writer.write_frame(&mkdir, &[]).await?;
                }
                Item::File {
                    local,
                    remote,
                    size,
                } => {
                    if let Some(report) = files.get_mut(index) {
                        self.progress.start_file(remote);
                        self.send_file(index, local, remote, *size, report).await?;
                    }
                }
                Item::Failed { .. } => {}
            }
        }
        Ok(())
    }

    /// Queues a small file read whole as its `put` and `end` frames.
    async fn queue_small(
        &mut self,
        index: usize,
        remote: &str,
        planned: u64,
        file: SmallFile,
        report: &mut FileReport,
    ) -> Result<(), FilesError> {
        let SmallFile { meta, data, digest } = file;
        if meta.size != planned {
            self.progress.remove_total(planned);
            self.progress.add_total(meta.size);
        }
        report.size = meta.size;
        report.transferred = meta.size;
        self.progress.file_size(meta.size);
        self.expect(Pending::Stored(index)).await?;
        let header = ClientMessage::Put(FileHeader {
            path: remote.to_owned(),
            size: meta.size,
            offset: 0,
            mode: meta.mode,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
            hash: self.hash,
        });
        self.queued_bytes += data.len() + remote.len() + digest.len();
        self.queued.push((header, data));
        self.queued
            .push((ClientMessage::End { hash: digest }, Vec::new()));
        self.bytes_sent += meta.size;
        self.progress.advance(meta.size);
        Ok(())
    }

    /// Writes the queued frames, in one write.
    async fn send_queued(&mut self) -> Result<(), FilesError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let frames = self.queued.iter().map(|(msg, body)| (msg, body.as_slice()));
        self.writer.write_frames(frames).await?;
        self.queued.clear();
        self.queued_bytes = 0;
        Ok(())
    }

    /// Queues the answer a request will get; fails once the reader has stopped.
    async fn expect(&self, pending: Pending) -> Result<(), FilesError> {
        self.pending
            .send(pending)
            .await
            .map_err(|_| FilesError::Closed)
    }

    async fn send_file(
        &mut self,
        index: usize,
        local: &Path,
        remote: &str,
        planned: u64,
        report: &mut FileReport,
    ) -> Result<(), FilesError> {
        let path = local.to_owned();
        let opened = tokio::task::spawn_blocking(move || open_local(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let (file, meta) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.progress.remove_total(planned);
                let message = format!("cannot read {}: {e}", shown_path(local));
                report.result = Err(Rejection::new("local_io", message));
                return Ok(());
            }
        };
        if meta.size != planned {
            // It changed since the walk; the bar follows what is sent.
            self.progress.remove_total(planned);
            self.progress.add_total(meta.size);
        }
        report.size = meta.size;
        self.progress.file_size(meta.size);
        let (file, start, hasher) = match self.resume_point(file, remote, &meta).await? {
            Ok(Start::At(file, start, hasher)) => (file, start, hasher),
            Ok(Start::Unchanged) => {
                self.progress.skip(meta.size);
                report.result = Ok(shown(remote));
                report.unchanged = true;
                return Ok(());
            }
            Err(rejection) => {
                self.progress.remove_total(meta.size);
                report.result = Err(rejection);
                return Ok(());
            }
        };
        self.progress.skip(start);
        self.expect(Pending::Stored(index)).await?;
        let header = ClientMessage::Put(FileHeader {
            path: remote.to_owned(),
            size: meta.size,
            offset: start,
            mode: meta.mode,
            mtime: meta.mtime,
            mtime_nsec: meta.mtime_nsec,
            hash: self.hash,
        });
        let sent = send_file(
            &mut self.writer,
            &header,
            file,
            start,
            meta.size - start,
            hasher,
            &self.progress,
        )
        .await?;
        report.transferred = sent.body_bytes;
        self.bytes_sent += sent.body_bytes;
        if let Err(e) = sent.digest {
            // The server discards it (the body was padded, the digest left empty); say why.
            let message = format!("{} could not be read while sending: {e}", shown_path(local));
            report.result = Err(Rejection::new("local_io", message));
        }
        Ok(())
    }

    /// Where to start: 0, or, for a large file whose prefix the server proves it holds, the
    /// end of that prefix with the digest state there; nowhere if the server holds the same
    /// bytes already. `Ok(Err(..))`: the probe was refused, or the server holds different
    /// bytes under the name and refuses to replace them.
    async fn resume_point(
        &mut self,
        file: File,
        remote: &str,
        meta: &LocalMeta,
    ) -> Result<Result<Start, Rejection>, FilesError> {
        let fresh = Hasher::new(self.hash);
        if meta.size < RESUME_PROBE_MIN_BYTES {
            return Ok(Ok(Start::At(file, 0, fresh)));
        }
        self.progress.probe_file(remote);
        let (tx, rx) = oneshot::channel();
        self.expect(Pending::Probe(tx)).await?;
        let probe = ClientMessage::Probe {
            path: remote.to_owned(),
            size: meta.size,
            hash: self.hash,
        };
        self.writer.write_frame(&probe, &[]).await?;
        let answer = rx.await.map_err(|_| FilesError::Closed)?;
        self.progress.probed(remote);
        let answer = match answer {
            Ok(answer) => answer,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let alg = self.hash;
        if let Some(theirs) = answer.existing {
            let size = meta.size;
            let mine = tokio::task::spawn_blocking(move || prefix_digest(&file, size, alg))
                .await
                .map_err(|e| FilesError::Local(e.to_string()))?;
            return Ok(match mine {
                Ok(mine) if mine.matches(&theirs) => Ok(Start::Unchanged),
                Ok(_) => Err(Rejection::new(
                    "exists",
                    format!(
                        "{} already exists with other content and was left untouched \
                         (--overwrite or --rename on the receiving side change that)",
                        shown(remote)
                    ),
                )),
                Err(e) => Err(Rejection::new("local_io", format!("cannot read it: {e}"))),
            });
        }
        let (offset, prefix) = (answer.offset, answer.prefix);
        let Some(prefix) = prefix.filter(|_| offset > 0 && offset <= meta.size) else {
            return Ok(Ok(Start::At(file, 0, fresh)));
        };
        let checked = tokio::task::spawn_blocking(move || {
            let mine = prefix_digest(&file, offset, alg);
            (file, mine)
        })
        .await
        .map_err(|e| FilesError::Local(e.to_string()))?;
        match checked {
            (file, Ok(mine)) if mine.matches(&prefix) => Ok(Ok(Start::At(file, offset, mine))),
            (file, _) => Ok(Ok(Start::At(file, 0, fresh))),
        }
    }
}

fn open_local(path: &Path) -> std::io::Result<(File, LocalMeta)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((file, local_meta(&meta)))
}

/// Each entry's stored name and whether it was unchanged, or why it failed.
type Answers = Vec<(usize, Result<(String, bool), Rejection>)>;

/// The reading half: matches each answer to its request, in order, until the writer is done
/// and every request is answered. On failure, the answers so far come back with the error.
async fn collect_answers(
    mut reader: Reader,
    mut pending: mpsc::Receiver<Pending>,
) -> Result<Answers, (Answers, FilesError)> {
    let mut answers = Vec::new();
    while let Some(next) = pending.recv().await {
        let frame = match reader.read_frame::<ServerMessage>().await {
            Ok(frame) => frame,
            Err(e) => return Err((answers, e.into())),
        };
        match (next, frame) {
            (
                Pending::Stored(index),
                Some(ServerMessage::Stored {
                    name, unchanged, ..
                }),
            ) => {
                answers.push((index, Ok((shown(&name), unchanged))));
            }
            (Pending::Stored(index), Some(ServerMessage::Rejected { code, message, .. })) => {
                answers.push((index, Err(Rejection::from_peer(&code, &message))));
            }
            (
                Pending::Probe(reply),
                Some(ServerMessage::Partial {
                    offset,
                    prefix,
                    existing,
                    ..
                }),
            ) => {
                let _ = reply.send(Ok(ProbeAnswer {
                    offset,
                    prefix,
                    existing,
                }));
            }
            (Pending::Probe(reply), Some(ServerMessage::Rejected { code, message, .. })) => {
                let _ = reply.send(Err(Rejection::from_peer(&code, &message)));
            }
            (_, other) => return Err((answers, unexpected(other))),
        }
    }
    Ok(answers)
}
