//! A file's body: chunks read at an offset on a blocking thread, one chunk held at a time.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

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

/// A file's bytes from an offset, a chunk at a time on a blocking thread.
#[derive(Debug)]
pub(crate) struct FileBody {
    state: State,
    /// Bytes still to send, the held chunk included.
    remaining: u64,
}

#[derive(Debug)]
enum State {
    /// The next chunk, read already, then the file and where the chunk after it starts.
    Ready(Option<Bytes>, File, u64),
    Reading(JoinHandle<io::Result<(Bytes, File)>>, u64),
    Done,
}

impl FileBody {
    pub(crate) fn new(file: File, first: Bytes, start: u64, len: u64) -> FileBody {
        let next = start + first.len() as u64;
        FileBody {
            state: State::Ready(Some(first), file, next),
            remaining: len,
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Ready(Some(chunk), file, next) => {
                    this.remaining -= chunk.len() as u64;
                    if this.remaining > 0 {
                        this.state = State::Ready(None, file, next);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                State::Ready(None, file, next) => {
                    let len = this.remaining.min(CHUNK_BYTES);
                    let read = tokio::task::spawn_blocking(move || {
                        read_chunk(&file, next, len).map(|chunk| (chunk, file))
                    });
                    this.state = State::Reading(read, next + len);
                }
                State::Reading(mut read, next) => match Pin::new(&mut read).poll(cx) {
                    Poll::Pending => {
                        this.state = State::Reading(read, next);
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(Ok((chunk, file)))) => {
                        this.state = State::Ready(Some(chunk), file, next);
                    }
                    Poll::Ready(Ok(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(io::Error::other(e)))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
