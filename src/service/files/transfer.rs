//! Moving one file's bytes, the same way in both directions: a blocking thread reads and
//! hashes (sending) or writes and hashes (receiving) while the async side moves the chunks over
//! the connection, so disk and hashing run on one core and the network on the other. The
//! chunks are a bounded set of reused buffers ([`ChunkPool`]): bounded memory, and no
//! allocation or zeroing per chunk.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use super::chunks::{chunk_pool, ChunkPool, ChunkReturn};
use super::hash::Hasher;
use super::messages::{ClientMessage, ServerMessage};
use super::progress::Progress;
use super::store::{Incoming, StoreError, Stored};
use super::Rejection;
use crate::wire::{Connection, Message, WireError};

/// Size of the reads from a file being sent, and of the socket reads on the receiving side.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Buffers of [`CHUNK_BYTES`] per transfer, in flight between the disk thread and the
/// connection: at most a few MiB per transfer whatever the file size.
pub const CHANNEL_CHUNKS: usize = 8;

/// Most body bytes a receiver reads and throws away to keep the connection in step after it
/// refused a file; past this it answers `rejected` and closes instead.
pub const MAX_DISCARD_BYTES: u64 = 64 * 1024 * 1024;

/// The `end` digest a sender sends when it could not read its whole file (the body was padded
/// to its declared size): the receiver discards the data.
pub const ABORTED_HASH: &str = "";

/// The frames that carry file data in one direction: a header with a body, then `end`.
pub(crate) trait DataFrames: Serialize + DeserializeOwned + Message + Send {
    /// The `end` frame closing a file.
    fn end(hash: String) -> Self;
    /// The digest, if this is an `end` frame.
    fn into_end(self) -> Option<String>;
}

impl DataFrames for ClientMessage {
    fn end(hash: String) -> Self {
        ClientMessage::End { hash }
    }

    fn into_end(self) -> Option<String> {
        match self {
            ClientMessage::End { hash } => Some(hash),
            _ => None,
        }
    }
}

impl DataFrames for ServerMessage {
    fn end(hash: String) -> Self {
        ServerMessage::End { hash }
    }

    fn into_end(self) -> Option<String> {
        match self {
            ServerMessage::End { hash } => Some(hash),
            _ => None,
        }
    }
}

/// What sending one file did.
#[derive(Debug)]
pub(crate) struct Sent {
    /// Body bytes written (padding after a read failure included).
    pub body_bytes: u64,
    /// The whole file's digest, or why the file could not be read (the peer was told to
    /// discard it).
    pub digest: io::Result<String>,
}

/// Sends `header`, then bytes `start..start + len` of `file` as its body, then `end` with the
/// digest of the whole file (`hasher` holds the digest of `0..start`); `progress` advances
/// per chunk written.
///
/// A local read failure mid-body pads the body to its declared length and sends
/// [`ABORTED_HASH`], so the connection stays in step and only this file fails.
///
/// # Errors
/// Only connection errors; the connection is then unusable.
///
/// # Cancel safety
/// Not cancel safe: a frame may be half written.
pub(crate) async fn send_file<S, M>(
    conn: &mut Connection<S>,
    header: &M,
    file: File,
    start: u64,
    len: u64,
    hasher: Hasher,
    progress: &Progress,
) -> Result<Sent, WireError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: DataFrames,
{
    let (tx, mut rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (pool, back) = chunk_pool(len);
    let reader =
        tokio::task::spawn_blocking(move || read_chunks(file, start, len, hasher, pool, &tx));
    conn.write_header(header).await?;
    let mut sent = 0u64;
    while let Some(chunk) = rx.recv().await {
        conn.write_body(&chunk).await?;
        sent += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
        back.give(chunk);
    }
    let digest = reader.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    let hash = match &digest {
        Ok(hash) => hash.clone(),
        Err(_) => {
            pad_body(conn, len.saturating_sub(sent)).await?;
            ABORTED_HASH.to_owned()
        }
    };
    conn.write_frame(&M::end(hash), &[]).await?;
    Ok(Sent {
        body_bytes: len,
        digest,
    })
}

/// The disk half of sending: reads, hashes and hands over chunks until `len` bytes are sent.
fn read_chunks(
    mut file: File,
    start: u64,
    len: u64,
    mut hasher: Hasher,
    mut pool: ChunkPool,
    tx: &mpsc::Sender<Vec<u8>>,
) -> io::Result<String> {
    let cancelled = || io::Error::other("the transfer was cancelled");
    file.seek(SeekFrom::Start(start))?;
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(CHUNK_BYTES, |l| l.min(CHUNK_BYTES));
        let mut buf = pool.blocking_take().ok_or_else(cancelled)?;
        buf.truncate(want);
        let mut filled = 0;
        while filled < want {
            match file.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being sent",
                    ))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        hasher.update(&buf);
        tx.blocking_send(buf).map_err(|_| cancelled())?;
        left -= want as u64;
    }
    Ok(hasher.hex())
}

/// Writes `left` zero bytes of body after a local read failure.
async fn pad_body<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    mut left: u64,
) -> Result<(), WireError> {
    let zeros = vec![0u8; CHUNK_BYTES.min(usize::try_from(left).unwrap_or(CHUNK_BYTES))];
    while left > 0 {
        let n = usize::try_from(left).map_or(zeros.len(), |l| l.min(zeros.len()));
        conn.write_body(&zeros[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

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

async fn read_end<S, M>(conn: &mut Connection<S>) -> Result<String, ReceiveError>
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
                return Err(Rejection::new(
                    "sender_failed",
                    "the sender could not read the whole file; nothing was kept",
                ));
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

async fn joined(
    writer: tokio::task::JoinHandle<Result<Stored, Rejection>>,
) -> Result<Stored, Rejection> {
    writer
        .await
        .unwrap_or_else(|e| Err(Rejection::new("internal", format!("disk task failed: {e}"))))
}
