//! Small uploads in batches: a `put` whose body is small is read whole into memory and its
//! answer held back, and the files held are stored together (`Store::store_batch`: one hop to
//! a disk thread, one journal commit for their data and one per directory for their names)
//! when the batch is full, when the client has sent nothing more for a moment, or before any
//! other request, so answers still go out in request order and none waits on a client that
//! waits.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::super::messages::{ClientMessage, FileHeader, ServerMessage};
use super::super::store::{BatchFile, FileMeta, StoreError, Stored};
use super::super::transfer::{read_end, sender_failed, ReceiveError, ABORTED_HASH};
use super::super::Rejection;
use super::{FileLog, Session, Stop, Stream};
use crate::wire::WireError;

/// Bodies up to this size are batched; larger files stream through a disk thread of their own.
pub(super) const BATCH_FILE_MAX_BYTES: u64 = 256 * 1024;

/// Most files held in one batch. Every batch costs the disk two journal commits, which a
/// loaded disk makes slow: fewer, larger batches are what makes many small files fast. Each
/// file holds a file descriptor while the batch is stored; a store short of descriptors
/// stores what it holds and goes on (`Store::store_batch`).
pub(super) const BATCH_MAX_FILES: usize = 512;

/// How long a session holding a batch waits for the client's next request before storing
/// the batch and answering (as a group commit delay does): long enough that a client sending
/// a tree of small files back to back fills whole batches, short enough not to matter to one
/// that waits for its answer.
pub(super) const BATCH_LINGER: Duration = Duration::from_millis(5);

/// Most body bytes held in memory by one batch.
pub(super) const BATCH_MAX_BYTES: usize = 8 * 1024 * 1024;

/// A small `put` received whole, its answer held back until the batch is stored.
struct Held {
    header: FileHeader,
    /// `Err`: refused before its body was read; it is only answered in its turn.
    file: Result<BatchFile, Rejection>,
    started: Instant,
}

/// A batch handed to a disk thread, with what its answers need.
pub(super) struct Storing {
    /// Each held `put` in request order, with its refusal if it was refused on arrival.
    order: Vec<(FileHeader, Instant, Option<Rejection>)>,
    /// The store's results for the files not refused, in order.
    task: tokio::task::JoinHandle<Vec<Result<Stored, StoreError>>>,
}

/// The `put`s held back, in request order.
#[derive(Default)]
pub(super) struct Batch {
    held: Vec<Held>,
    bytes: usize,
    /// Paths held, so a second `put` of one waits for the first to be stored.
    paths: HashSet<String>,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn is_full(&self) -> bool {
        self.held.len() >= BATCH_MAX_FILES || self.bytes >= BATCH_MAX_BYTES
    }
}

/// Whether a `put` goes into a batch: a small body sent from its start.
pub(super) fn batchable(header: &FileHeader) -> bool {
    header.offset == 0 && header.size <= BATCH_FILE_MAX_BYTES
}

impl<S: Stream> Session<'_, S> {
    /// Reads a small `put` whole (or skips a refused one's body) and holds it in the batch.
    pub(super) async fn put_small(&mut self, header: FileHeader) -> Result<(), Stop> {
        if self.batch.paths.contains(&header.path) {
            self.flush_batch(true).await?;
        }
        let started = Instant::now();
        let checked = self.check_put(&header);
        let progress = &self.server.config.progress;
        progress.begin_file(&header.path, header.size, 0);
        let data = self.read_small_body(header.size).await?;
        progress.advance(header.size);
        let hash = read_end::<S, ClientMessage>(&mut self.conn)
            .await
            .map_err(|e| match e {
                ReceiveError::Invalid(rejection) => Stop::Fatal(rejection),
                _ => Stop::Broken,
            })?;
        let checked = match checked {
            Ok(_) if hash == ABORTED_HASH => Err(sender_failed()),
            checked => checked,
        };
        let file = checked.map(|(path, _)| BatchFile {
            path,
            meta: FileMeta {
                mode: header.mode,
                mtime: header.mtime,
                mtime_nsec: header.mtime_nsec,
            },
            alg: header.hash,
            data,
            hash,
        });
        self.batch.bytes += usize::try_from(header.size).unwrap_or(usize::MAX);
        self.batch.paths.insert(header.path.clone());
        self.batch.held.push(Held {
            header,
            file,
            started,
        });
        if self.batch.is_full() {
            self.store_in_background().await?;
        }
        Ok(())
    }

    /// The whole body of a batched `put` (at most [`BATCH_FILE_MAX_BYTES`]).
    async fn read_small_body(&mut self, size: u64) -> Result<Vec<u8>, Stop> {
        let mut data = vec![0; usize::try_from(size).unwrap_or(0)];
        let mut filled = 0;
        while filled < data.len() {
            match self.conn.read_body_into(&mut data[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(WireError::Io(_) | WireError::UnexpectedEof) => return Err(Stop::Broken),
                Err(e) => return Err(Stop::Fatal(Rejection::from(&e))),
            }
        }
        data.truncate(filled);
        Ok(data)
    }

    /// The client's next request if it comes within [`BATCH_LINGER`]; if not, the batch is
    /// stored and answered now rather than held while the client may be waiting for its
    /// answers.
    ///
    /// # Cancel safety
    /// Not meant for `select!`; the frame read is cancel safe.
    pub(super) async fn next_if_sent(
        &mut self,
    ) -> Result<Option<Result<Option<ClientMessage>, WireError>>, Stop> {
        if self.batch.is_empty() && self.storing.is_none() {
            return Ok(None);
        }
        let next = tokio::time::timeout(BATCH_LINGER, self.conn.read_frame::<ClientMessage>());
        match next.await {
            Ok(read) => Ok(Some(read)),
            Err(_) => {
                self.flush_batch(true).await?;
                Ok(None)
            }
        }
    }

    /// Stores what is held: first the batch already being stored, then the one held now,
    /// and, with `answer`, sends each `put` its answer in order.
    pub(super) async fn flush_batch(&mut self, answer: bool) -> Result<(), Stop> {
        self.finish_store(answer).await?;
        if !self.batch.is_empty() {
            self.start_store();
            self.finish_store(answer).await?;
        }
        Ok(())
    }

    /// Hands the batch held now to a disk thread and goes on receiving the next one: the
    /// disk's work overlaps the network's. The batch before it is answered first, so at most
    /// one batch is being stored and answers keep request order.
    async fn store_in_background(&mut self) -> Result<(), Stop> {
        self.finish_store(true).await?;
        self.start_store();
        Ok(())
    }

    /// Starts storing the batch held now on a disk thread (none may be being stored).
    fn start_store(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let mut order = Vec::with_capacity(batch.held.len());
        let mut files = Vec::new();
        for held in batch.held {
            let outcome = match held.file {
                Ok(file) => {
                    files.push(file);
                    None
                }
                Err(rejection) => Some(rejection),
            };
            order.push((held.header, held.started, outcome));
        }
        let store = Arc::clone(&self.server.store);
        let task = tokio::task::spawn_blocking(move || store.store_batch(files));
        debug_assert!(self.storing.is_none(), "one batch is stored at a time");
        self.storing = Some(Storing { order, task });
    }

    /// Waits for the batch being stored, if any, logs each file and, with `answer`, sends
    /// their answers in order, in one write.
    async fn finish_store(&mut self, answer: bool) -> Result<(), Stop> {
        let Some(Storing { order, task }) = self.storing.take() else {
            return Ok(());
        };
        let count = order
            .iter()
            .filter(|(_, _, refused)| refused.is_none())
            .count();
        let stored: Vec<Result<Stored, Rejection>> = match task.await {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(Rejection::from))
                .collect(),
            Err(e) => (0..count)
                .map(|_| Err(Rejection::new("internal", format!("disk task failed: {e}"))))
                .collect(),
        };
        let mut stored = stored.into_iter();
        let progress = self.server.config.progress.clone();
        progress.finish_and_clear();
        let mut replies = Vec::with_capacity(order.len());
        for (header, started, refused) in order {
            let result: Result<Stored, Rejection> = match refused {
                Some(rejection) => Err(rejection),
                None => match stored.next() {
                    Some(result) => result,
                    None => Err(Rejection::new("internal", "the disk task lost a file")),
                },
            };
            let log = FileLog {
                op: "put",
                path: &header.path,
                size: header.size,
                started,
            };
            let shown = match &result {
                Ok(_) => "stored",
                Err(rejection) => rejection.code.as_str(),
            };
            self.log_line(&log, shown);
            self.summary.bytes = self.summary.bytes.saturating_add(header.size);
            replies.push(match result {
                Ok(stored) => {
                    self.summary.done += 1;
                    progress.print_stored(&stored, header.size, started.elapsed(), header.hash);
                    ServerMessage::Stored {
                        path: header.path,
                        name: stored.name,
                        size: stored.size,
                        unchanged: stored.unchanged,
                    }
                }
                Err(rejection) => {
                    self.summary.rejected += 1;
                    ServerMessage::Rejected {
                        path: header.path,
                        code: rejection.code,
                        message: rejection.message,
                    }
                }
            });
        }
        if answer && !replies.is_empty() {
            self.conn
                .write_frames(replies.iter().map(|reply| (reply, &[][..])))
                .await
                .map_err(|_| Stop::Broken)?;
        }
        Ok(())
    }
}
