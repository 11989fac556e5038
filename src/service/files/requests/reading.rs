//! The reading side of a session: `list`, `get` manifests and `fetch`es.

use std::fs::File;

use tokio::time::Instant;

use super::super::hash::{HashAlg, Hasher};
use super::super::messages::{Entry, FileHeader, ServerMessage};
use super::super::progress::Progress;
use super::super::store::{RelPath, StoreError};
use super::super::transfer::send_file;
use super::super::{local_meta, prefix_digest, Rejection, ENTRIES_FRAME_BYTES};
use super::{FileLog, Session, Stop, Stream};

impl<S: Stream> Session<'_, S> {
    /// `list` (one level) or `get` (the manifest of a file or a tree).
    pub(super) async fn list(&mut self, path: String, manifest: bool) -> Result<(), Stop> {
        let listed = match self.check_access(false, &path) {
            Err(rejection) => Err(rejection),
            Ok(()) => match optional_path(&path) {
                Err(rejection) => Err(rejection),
                Ok(rel) => {
                    self.blocking(move |store| match manifest {
                        true => store.walk(rel.as_ref()),
                        false => store.list(rel.as_ref()),
                    })
                    .await
                }
            },
        };
        match listed {
            Ok(entries) => self.send_entries(entries).await,
            Err(rejection) => self.reject(path, rejection).await,
        }
    }

    async fn send_entries(&mut self, entries: Vec<Entry>) -> Result<(), Stop> {
        let count = entries.len() as u64;
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for entry in entries {
            let bytes = entry_bytes(&entry);
            if batch_bytes + bytes > ENTRIES_FRAME_BYTES && !batch.is_empty() {
                let entries = std::mem::take(&mut batch);
                self.reply(ServerMessage::Entries { entries }).await?;
                batch_bytes = 0;
            }
            batch_bytes += bytes;
            batch.push(entry);
        }
        if !batch.is_empty() {
            self.reply(ServerMessage::Entries { entries: batch })
                .await?;
        }
        self.reply(ServerMessage::Listed { count }).await
    }

    pub(super) async fn fetch(
        &mut self,
        path: String,
        offset: u64,
        prefix: Option<String>,
        alg: HashAlg,
    ) -> Result<(), Stop> {
        let started = Instant::now();
        let opened = match self.check_fetch(&path, alg) {
            Err(rejection) => Err(rejection),
            Ok(rel) => {
                self.blocking(move |store| {
                    let (file, _) = store.open_file(&rel)?;
                    let (header, start, hasher) =
                        fetch_plan(&file, &rel, offset, prefix.as_deref(), alg)?;
                    Ok((file, header, start, hasher))
                })
                .await
            }
        };
        let (file, header, start, hasher) = match opened {
            Ok(opened) => opened,
            Err(rejection) => {
                let log = FileLog {
                    op: "fetch",
                    path: &path,
                    size: 0,
                    started,
                };
                self.log_line(&log, &rejection.code);
                return self.reject(path, rejection).await;
            }
        };
        let (size, len) = (header.size, header.body_len());
        let frame = ServerMessage::File(header);
        let sent = send_file(
            &mut self.conn,
            &frame,
            file,
            start,
            len,
            hasher,
            &Progress::hidden(),
        )
        .await;
        let log = FileLog {
            op: "fetch",
            path: &path,
            size,
            started,
        };
        match sent {
            Ok(sent) => {
                self.summary.bytes += sent.body_bytes;
                let result = match sent.digest {
                    Ok(_) => {
                        self.summary.done += 1;
                        "sent"
                    }
                    Err(_) => {
                        self.summary.rejected += 1;
                        "read_error"
                    }
                };
                self.log_line(&log, result);
                Ok(())
            }
            Err(_) => {
                self.log_line(&log, "interrupted");
                Err(Stop::Broken)
            }
        }
    }

    fn check_fetch(&self, path: &str, alg: HashAlg) -> Result<RelPath, Rejection> {
        self.check_access(false, path)?;
        self.check_hash(alg)?;
        Ok(RelPath::parse(path)?)
    }
}

/// What a `fetch` sends: the header, where the body starts and the digest state there. The
/// client's prefix is honoured only if its digest matches this file's first `offset` bytes.
fn fetch_plan(
    file: &File,
    rel: &RelPath,
    offset: u64,
    prefix: Option<&str>,
    alg: HashAlg,
) -> Result<(FileHeader, u64, Hasher), StoreError> {
    let io_err = |source| StoreError::Io {
        path: rel.to_string(),
        source,
    };
    let meta = local_meta(&file.metadata().map_err(io_err)?);
    let mut start = 0;
    let mut hasher = Hasher::new(alg);
    if let Some(prefix) = prefix.filter(|_| offset > 0 && offset <= meta.size) {
        let mine = prefix_digest(file, offset, alg).map_err(io_err)?;
        if mine.matches(prefix) {
            start = offset;
            hasher = mine;
        }
    }
    let header = FileHeader {
        path: rel.as_wire(),
        size: meta.size,
        offset: start,
        mode: meta.mode,
        mtime: meta.mtime,
        mtime_nsec: meta.mtime_nsec,
        hash: alg,
    };
    Ok((header, start, hasher))
}

/// `""` is the root; anything else must be a valid relative path.
fn optional_path(path: &str) -> Result<Option<RelPath>, Rejection> {
    if path.is_empty() {
        return Ok(None);
    }
    Ok(Some(RelPath::parse(path)?))
}

/// A generous estimate of an entry's JSON size: every byte of the path escaped as `\u00XX`.
fn entry_bytes(entry: &Entry) -> usize {
    entry.path.len() * 6 + 96
}
