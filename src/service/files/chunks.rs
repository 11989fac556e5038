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
    /// The buffers' length: [`CHUNK_BYTES`], or less for a smaller file.
    chunk_len: usize,
}

/// Gives buffers back to their [`ChunkPool`], from either side of the transfer.
#[derive(Debug)]
pub(crate) struct ChunkReturn(mpsc::Sender<Vec<u8>>);

/// A pool of at most [`CHANNEL_CHUNKS`] buffers for a body of `body_len` bytes, each
/// [`CHUNK_BYTES`] long or the body's length if that is less (a small file costs a small
/// buffer), and its way back.
pub(crate) fn chunk_pool(body_len: u64) -> (ChunkPool, ChunkReturn) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let chunk_len = usize::try_from(body_len).map_or(CHUNK_BYTES, |n| n.clamp(1, CHUNK_BYTES));
    (
        ChunkPool {
            returned: rx,
            made: 0,
            chunk_len,
        },
        ChunkReturn(tx),
    )
}

impl ChunkPool {
    /// A buffer of the pool's length (contents unspecified); `None` once every buffer is lost
    /// with a [`ChunkReturn`] that was dropped (the other side stopped).
    ///
    /// # Cancel safety
    /// Cancel safe: a buffer is only taken when the call returns.
    pub async fn take(&mut self) -> Option<Vec<u8>> {
        let buf = match self.spare() {
            Some(buf) => buf,
            None => self.returned.recv().await?,
        };
        Some(self.full_length(buf))
    }

    /// [`take`](Self::take) for a blocking thread.
    pub(crate) fn blocking_take(&mut self) -> Option<Vec<u8>> {
        let buf = match self.spare() {
            Some(buf) => buf,
            None => self.returned.blocking_recv()?,
        };
        Some(self.full_length(buf))
    }

    /// A returned buffer, or a new one while the pool is not at its bound.
    fn spare(&mut self) -> Option<Vec<u8>> {
        if let Ok(buf) = self.returned.try_recv() {
            return Some(buf);
        }
        (self.made < CHANNEL_CHUNKS).then(|| {
            self.made += 1;
            vec![0; self.chunk_len]
        })
    }

    /// `buf` grown back to the pool's length after a short last chunk; only the regrown tail
    /// is written.
    fn full_length(&self, mut buf: Vec<u8>) -> Vec<u8> {
        buf.resize(self.chunk_len, 0);
        buf
    }
}

impl ChunkReturn {
    /// Puts `buf` back for reuse (dropped if the pool is gone).
    pub fn give(&self, buf: Vec<u8>) {
        // Never full: the channel holds as many buffers as the pool ever makes.
        let _ = self.0.try_send(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pool_reuses_buffers_and_never_makes_more_than_its_bound() {
        let (mut pool, back) = chunk_pool(u64::MAX);
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
        let (mut pool, back) = chunk_pool(10 * CHUNK_BYTES as u64);
        for _ in 0..CHANNEL_CHUNKS {
            drop(pool.take().await);
        }
        drop(back);
        assert!(pool.take().await.is_none());
    }

    #[test]
    fn a_small_body_gets_small_buffers() {
        let (mut pool, _back) = chunk_pool(4096);
        assert_eq!(pool.blocking_take().map(|b| b.len()), Some(4096));
        let (mut pool, _back) = chunk_pool(0);
        assert_eq!(pool.blocking_take().map(|b| b.len()), Some(1));
    }
}
