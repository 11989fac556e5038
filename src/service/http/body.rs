//! A file's body: chunks read at an offset as hyper asks for them, one chunk held at a time;
//! and a response's body as hyper sends it, which writes the request's log line when hyper
//! is done with it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};

use super::conn::HeadDeadline;
use super::BoxError;
use crate::net::PeerAddr;

/// A body is read in chunks of this size, one chunk in memory per response; the first in
/// the blocking call that opened the file, so a body up to this size costs one such call.
pub const CHUNK_BYTES: u64 = 256 * 1024;

/// Reads `len` bytes at `offset`; a file that shrank meanwhile is an error.
///
/// The buffer is not zeroed first: for a 1 MiB file that `memset` was 9% of the server's
/// CPU (profiled), on top of the copy the read itself makes.
pub(crate) fn read_chunk(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset
            .checked_add(buf.len() as u64)
            .and_then(|at| libc::off_t::try_from(at).ok())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let want = len - buf.len();
        // SAFETY: the pointer is to the vector's spare capacity, at least `want` bytes long
        // (capacity `len`, length `len - want`); pread writes at most `want` bytes there.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(buf.len()).cast(),
                want,
                at,
            )
        };
        match usize::try_from(n) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            // SAFETY: pread reported these `n <= want` bytes written, so they are initialised.
            Ok(n) => unsafe { buf.set_len(buf.len() + n.min(want)) },
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
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

/// A response's body as hyper sends it: ours as made, or tower-http's compression of it; once
/// hyper is done with it (sent, or dropped with the connection), the deadline for the
/// connection's next request head starts, and the request's log line is written.
#[derive(Debug)]
pub(crate) struct SentBody {
    body: Sent,
    next_head: Option<HeadDeadline>,
    log: Option<Box<LogLine>>,
}

/// A request's log line, written when its response's body is done with: the bytes are those
/// of the body handed to the connection (none for `HEAD`, fewer than announced for a
/// download the client left), and the time runs to then, as nginx's `$body_bytes_sent` and
/// `$request_time` do.
#[derive(Debug)]
pub(crate) struct LogLine {
    /// When the request's head was read.
    pub started: Instant,
    /// Method and path (escaped), as the line shows them.
    pub request: String,
    pub status: u16,
    pub peer: PeerAddr,
    /// The body's length as the response announced it; none when it sends no body (`HEAD`,
    /// 204, 304) or does not know it (compressed on the fly).
    pub announced: Option<u64>,
    /// Body bytes handed to the connection so far.
    pub sent: u64,
}

impl LogLine {
    /// The bytes shown: those sent, then `/` and the length announced when fewer went.
    fn bytes(&self) -> String {
        match self.announced {
            Some(announced) if self.sent < announced => format!("{}/{announced}", self.sent),
            _ => self.sent.to_string(),
        }
    }
}

#[derive(Debug)]
enum Sent {
    /// Ours, unboxed again: a request without `Accept-Encoding` gets no second box.
    Plain(super::Body),
    Compressed(UnsyncBoxBody<Bytes, BoxError>),
}

impl SentBody {
    /// `body` as made, for the connection with `next_head` (HTTP/1; none for HTTP/2).
    pub(crate) fn plain(body: super::Body, next_head: Option<HeadDeadline>) -> SentBody {
        SentBody {
            body: Sent::Plain(body),
            next_head,
            log: None,
        }
    }

    /// `body` compressed (or left alone) by tower-http.
    pub(crate) fn compressed(
        body: UnsyncBoxBody<Bytes, BoxError>,
        next_head: Option<HeadDeadline>,
    ) -> SentBody {
        SentBody {
            body: Sent::Compressed(body),
            next_head,
            log: None,
        }
    }

    /// Writes `line` once hyper is done with the body.
    pub(crate) fn log_when_done(&mut self, line: LogLine) {
        self.log = Some(Box::new(line));
    }
}

impl Drop for SentBody {
    fn drop(&mut self) {
        if let Some(next_head) = &self.next_head {
            next_head.restart();
        }
        if let Some(line) = self.log.take() {
            // The peer is named in the line too: HTTP/2 streams run in tasks outside the
            // connection's span.
            tracing::info!(
                target: "sockit::service::http",
                peer = %line.peer,
                "{} {} {} {:.1}ms",
                line.request,
                line.status,
                line.bytes(),
                line.started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}

impl Body for SentBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.body {
            Sent::Plain(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(Into::into))),
            Sent::Compressed(body) => Pin::new(body).poll_frame(cx),
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(line)) = (&polled, &mut this.log) {
            if let Some(data) = frame.data_ref() {
                line.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Sent::Plain(body) => body.is_end_stream(),
            Sent::Compressed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Sent::Plain(body) => body.size_hint(),
            Sent::Compressed(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_the_bytes_at_its_offset_and_a_short_file_is_an_error() {
        let mut file = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        assert_eq!(read_chunk(&file, 0, 300_000).unwrap(), bytes);
        assert_eq!(read_chunk(&file, 1000, 5).unwrap(), bytes[1000..1005]);
        assert_eq!(read_chunk(&file, 300_000, 0).unwrap(), b""[..]);
        let short = read_chunk(&file, 299_990, 20).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
    }
}
