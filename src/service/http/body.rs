//! A file's body: chunks read at an offset as hyper asks for them, one chunk held at a time.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// A body is read in chunks of this size, one chunk in memory per response; the first in
/// the blocking call that opened the file, so a body up to this size costs one such call.
pub const CHUNK_BYTES: u64 = 256 * 1024;

/// Reads `len` bytes at `offset`; a file that shrank meanwhile is an error.
pub(crate) fn read_chunk(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

/// A file's bytes from an offset, a chunk at a time, each read when hyper asks for it (so a
/// slow client holds one chunk, not the file).
#[derive(Debug)]
pub(crate) struct FileBody {
    file: File,
    /// The next chunk, read already.
    held: Option<Bytes>,
    /// Where the chunk after it starts.
    next: u64,
    /// Bytes still to send, the held chunk included.
    remaining: u64,
}

impl FileBody {
    pub(crate) fn new(file: File, first: Bytes, start: u64, len: u64) -> FileBody {
        FileBody {
            file,
            next: start + first.len() as u64,
            held: Some(first),
            remaining: len,
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    /// Reads on the runtime's thread, as the first chunk was (see `read.rs` for why).
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let chunk = match this.held.take() {
            Some(chunk) => chunk,
            None => {
                let len = this.remaining.min(CHUNK_BYTES);
                match read_chunk(&this.file, this.next, len) {
                    Ok(chunk) => {
                        this.next += len;
                        chunk
                    }
                    Err(e) => {
                        this.remaining = 0;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
        };
        this.remaining -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
