//! Sending one file: a blocking thread reads and hashes the file while the async side writes
//! its chunks to the connection.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::{DataFrames, ABORTED_HASH, CHANNEL_CHUNKS, CHUNK_BYTES};
use crate::service::files::chunks::{chunk_pool, ChunkPool};
use crate::service::files::hash::Hasher;
use crate::service::files::progress::Progress;
use crate::wire::{Connection, WireError};

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
