//! Receiving one file: the async side reads its chunks from the connection while a blocking
//! thread writes and hashes them, then commits the file at `end` or keeps it for a resume.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use super::{DataFrames, ABORTED_HASH, CHANNEL_CHUNKS, MAX_DISCARD_BYTES};
use crate::service::files::chunks::{chunk_pool, ChunkReturn};
use crate::service::files::progress::Progress;
use crate::service::files::store::{Incoming, StoreError, Stored};
use crate::service::files::Rejection;
use crate::wire::{Connection, WireError};

/// Why receiving a file ended the conversation, not just the file.
#[derive(Debug)]
pub(crate) enum ReceiveError {
    /// The connection broke mid-file; the partial data is kept for a resume.
    Broken(WireError),
    /// The peer sent something else where the file's data or `end` was due; the partial data is
    /// discarded and the connection must be closed.
    Invalid(Rejection),
    /// The file was refused and the rest of its body is more than [`MAX_DISCARD_BYTES`]: the
    /// refusal should still be reported, then the connection closed.
    Unskippable(Rejection),
}

/// One piece of a file for the disk thread.
enum Piece {
    Data(Vec<u8>),
    End(String),
    Abort,
}

/// Receives a file whose header announced `body_len` bytes: `open` runs on the disk thread and
/// must create the [`Incoming`] (checking policy and size) before any body byte is read; the
/// data is written as it arrives and committed with the digest of the `end` frame;
/// `progress` advances per chunk read.
///
/// `Ok(Err(..))` is a refused or failed file after which the connection is still in step.
///
/// # Errors
/// [`ReceiveError`]: the connection cannot go on.
///
/// # Cancel safety
/// Cancel safe in effect: a dropped call leaves the partial data for a resume.
pub(crate) async fn receive_file<S, M, F>(
    conn: &mut Connection<S>,
    body_len: u64,
    open: F,
    progress: &Progress,
) -> Result<Result<Stored, Rejection>, ReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: DataFrames,
    F: FnOnce() -> Result<Incoming, StoreError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (mut pool, back) = chunk_pool(body_len);
    let (opened_tx, opened_rx) = oneshot::channel();
    let writer = tokio::task::spawn_blocking(move || write_chunks(open, opened_tx, rx, back));
    if !opened_rx.await.unwrap_or(false) {
        return skip_file::<S, M>(conn, body_len, joined(writer).await).await;
    }
    let mut left = body_len;
    loop {
        let Some(mut chunk) = pool.take().await else {
            // The disk thread gave up: skip the rest, then report.
            return skip_file::<S, M>(conn, left, joined(writer).await).await;
        };
        let (filled, broken) = fill_chunk(conn, &mut chunk).await;
        chunk.truncate(filled);
        if let Err(e) = broken {
            // Let the disk thread keep what arrived and settle the partial before the session
            // ends, so a resume that follows finds all of it.
            if filled > 0 {
                let _ = tx.send(Piece::Data(chunk)).await;
            }
            drop(tx);
            let _ = writer.await;
            return Err(ReceiveError::Broken(e));
        }
        if filled == 0 {
            break;
        }
        left = left.saturating_sub(filled as u64);
        progress.advance(filled as u64);
        if tx.send(Piece::Data(chunk)).await.is_err() {
            // The disk thread gave up (no space, an I/O error): skip the rest, then report.
            return skip_file::<S, M>(conn, left, joined(writer).await).await;
        }
    }
    match read_end::<S, M>(conn).await {
        Ok(hash) => {
            // A failed send means the disk thread already stopped; its result says why.
            let _ = tx.send(Piece::End(hash)).await;
            drop(tx);
            Ok(joined(writer).await)
        }
        Err(e @ ReceiveError::Invalid(_)) => {
            let _ = tx.send(Piece::Abort).await;
            drop(tx);
            let _ = writer.await;
            Err(e)
        }
        Err(e) => {
            drop(tx);
            let _ = writer.await;
            Err(e)
        }
    }
}

/// Fills `chunk` with body bytes until it is full or the body ends; returns how many, and
/// whether the connection broke (the bytes filled before that are good).
async fn fill_chunk<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    chunk: &mut [u8],
) -> (usize, Result<(), WireError>) {
    let mut filled = 0;
    while let Some(rest) = chunk.get_mut(filled..).filter(|r| !r.is_empty()) {
        match conn.read_body_into(rest).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return (filled, Err(e)),
        }
    }
    (filled, Ok(()))
}

/// Reads and drops `left` body bytes of a refused file and its `end` frame, then reports
/// `rejection`; or, past [`MAX_DISCARD_BYTES`], gives up on the connection.
///
/// # Errors
/// As [`receive_file`].
pub(crate) async fn skip_file<S, M>(
    conn: &mut Connection<S>,
    left: u64,
    rejection: Result<Stored, Rejection>,
) -> Result<Result<Stored, Rejection>, ReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: DataFrames,
{
    let rejection = match rejection {
        Ok(stored) => return Ok(Ok(stored)),
        Err(r) => r,
    };
    if left > MAX_DISCARD_BYTES {
        return Err(ReceiveError::Unskippable(rejection));
    }
    while conn
        .read_body_chunk()
        .await
        .map_err(ReceiveError::Broken)?
        .is_some()
    {}
    read_end::<S, M>(conn).await?;
    Ok(Err(rejection))
}

/// Reads the `end` frame that closes a file's data; returns its digest.
pub(crate) async fn read_end<S, M>(conn: &mut Connection<S>) -> Result<String, ReceiveError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: DataFrames,
{
    match conn.read_frame::<M>().await {
        Ok(Some(frame)) => frame.into_end().ok_or_else(|| {
            ReceiveError::Invalid(Rejection::new(
                "unexpected_message",
                "an end frame must follow a file's data",
            ))
        }),
        Ok(None) => Err(ReceiveError::Broken(WireError::UnexpectedEof)),
        Err(e @ (WireError::Io(_) | WireError::UnexpectedEof)) => Err(ReceiveError::Broken(e)),
        Err(e) => Err(ReceiveError::Invalid(Rejection::from(&e))),
    }
}

/// The disk half of receiving: opens, writes what arrives, commits at `end`. A closed channel
/// without `end` is a broken transfer: dropping the [`Incoming`] keeps its data for a resume.
fn write_chunks<F>(
    open: F,
    opened: oneshot::Sender<bool>,
    mut rx: mpsc::Receiver<Piece>,
    back: ChunkReturn,
) -> Result<Stored, Rejection>
where
    F: FnOnce() -> Result<Incoming, StoreError>,
{
    let mut incoming = match open() {
        Ok(incoming) => incoming,
        Err(e) => {
            let _ = opened.send(false);
            return Err(Rejection::from(e));
        }
    };
    let _ = opened.send(true);
    loop {
        match rx.blocking_recv() {
            Some(Piece::Data(chunk)) => {
                if let Err(e) = incoming.write(&chunk) {
                    incoming.discard();
                    return Err(Rejection::from(e));
                }
                back.give(chunk);
            }
            Some(Piece::End(hash)) if hash == ABORTED_HASH => {
                incoming.discard();
                return Err(sender_failed());
            }
            Some(Piece::End(hash)) => return incoming.commit(&hash).map_err(Rejection::from),
            Some(Piece::Abort) => {
                incoming.discard();
                return Err(Rejection::new(
                    "protocol_error",
                    "the transfer broke off; nothing was kept",
                ));
            }
            None => {
                return Err(Rejection::new(
                    "interrupted",
                    "the connection broke mid-file; the data received is kept for a resume",
                ))
            }
        }
    }
}

/// The answer to a file whose sender said, with [`ABORTED_HASH`], that it could not read it
/// whole.
pub(crate) fn sender_failed() -> Rejection {
    Rejection::new(
        "sender_failed",
        "the sender could not read the whole file; nothing was kept",
    )
}

async fn joined(
    writer: tokio::task::JoinHandle<Result<Stored, Rejection>>,
) -> Result<Stored, Rejection> {
    writer
        .await
        .unwrap_or_else(|e| Err(Rejection::new("internal", format!("disk task failed: {e}"))))
}
