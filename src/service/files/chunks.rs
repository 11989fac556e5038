//! The body buffers of one transfer: a bounded set, reused as they cycle between the
//! connection task and the disk thread, so bulk data is neither allocated nor zeroed per chunk.

use tokio::sync::mpsc;

use super::transfer::{CHANNEL_CHUNKS, CHUNK_BYTES};

/// Hands out buffers: returned ones first, new ones while fewer than [`CHANNEL_CHUNKS`]
/// exist, else waits for one to come back.
#[derive(Debug)]
pub(crate) struct ChunkPool {
    returned: mpsc::Receiver<Vec<u8>>,
    made: usize,
}

/// Gives buffers back to their [`ChunkPool`], from either side of the transfer.
#[derive(Debug)]
pub(crate) struct ChunkReturn(mpsc::Sender<Vec<u8>>);

/// A pool of at most [`CHANNEL_CHUNKS`] buffers of [`CHUNK_BYTES`], and its way back.
pub(crate) fn chunk_pool() -> (ChunkPool, ChunkReturn) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (
        ChunkPool {
            returned: rx,
            made: 0,
        },
        ChunkReturn(tx),
    )
}

impl ChunkPool {
    /// A buffer `CHUNK_BYTES` long (contents unspecified); `None` once every buffer is lost
    /// with a [`ChunkReturn`] that was dropped (the other side stopped).
    ///
    /// # Cancel safety
    /// Cancel safe: a buffer is only taken when the call returns.
    pub async fn take(&mut self) -> Option<Vec<u8>> {
        let buf = match self.spare() {
            Some(buf) => buf,
            None => self.returned.recv().await?,
        };
        Some(full_length(buf))
    }

    /// [`take`](Self::take) for a blocking thread.
    pub fn blocking_take(&mut self) -> Option<Vec<u8>> {
        let buf = match self.spare() {
            Some(buf) => buf,
            None => self.returned.blocking_recv()?,
        };
        Some(full_length(buf))
    }

    /// A returned buffer, or a new one while the pool is not at its bound.
    fn spare(&mut self) -> Option<Vec<u8>> {
        if let Ok(buf) = self.returned.try_recv() {
            return Some(buf);
        }
        (self.made < CHANNEL_CHUNKS).then(|| {
            self.made += 1;
            vec![0; CHUNK_BYTES]
        })
    }
}

impl ChunkReturn {
    /// Puts `buf` back for reuse (dropped if the pool is gone).
    pub fn give(&self, buf: Vec<u8>) {
        // Never full: the channel holds as many buffers as the pool ever makes.
        let _ = self.0.try_send(buf);
    }
}

/// `buf` grown back to [`CHUNK_BYTES`] after a short last chunk; only the regrown tail is
/// written.
fn full_length(mut buf: Vec<u8>) -> Vec<u8> {
    buf.resize(CHUNK_BYTES, 0);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pool_reuses_buffers_and_never_makes_more_than_its_bound() {
        let (mut pool, back) = chunk_pool();
        let mut held = Vec::new();
        for _ in 0..CHANNEL_CHUNKS {
            held.push(pool.take().await.expect("a new buffer"));
        }
        assert!(pool.spare().is_none(), "no buffer past the bound");
        let mut short = held.pop().expect("held");
        short.truncate(10);
        let ptr = short.as_ptr();
        back.give(short);
        let again = pool.take().await.expect("the returned buffer");
        assert_eq!(again.as_ptr(), ptr, "the same allocation");
        assert_eq!(again.len(), CHUNK_BYTES);
    }

    #[tokio::test]
    async fn taking_ends_when_the_other_side_is_gone() {
        let (mut pool, back) = chunk_pool();
        for _ in 0..CHANNEL_CHUNKS {
            drop(pool.take().await);
        }
        drop(back);
        assert!(pool.take().await.is_none());
    }
}
