//! Moving bytes between a pipe and a socket with splice(2) (Linux), so bulk output (a
//! command's stdout) crosses the network without a copy through user space on either end.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::task::{Context, Poll};

use super::Stream;

/// A stream that can take bytes from a pipe without them passing through user space.
///
/// Plain TCP and Unix streams can (on Linux); anything that must see the bytes, such as TLS,
/// keeps the defaults: [`can_splice`](Self::can_splice) is `false` and splicing is refused.
pub(crate) trait SpliceWrite {
    /// Whether [`poll_splice_from`](Self::poll_splice_from) works on this stream.
    fn can_splice(&self) -> bool {
        false
    }

    /// Moves up to `len` bytes from `pipe` into the stream, waiting until the stream is
    /// writable; returns how many moved (at least one, unless `len` is zero).
    ///
    /// `pipe` must be a pipe whose only reader is the caller, holding at least `len` bytes
    /// (see [`pipe_ready_bytes`]): the wait is for the stream alone, so an empty pipe would
    /// be mistaken for a full stream.
    ///
    /// # Errors
    ///
    /// `Unsupported` unless [`can_splice`](Self::can_splice); `UnexpectedEof` if the pipe
    /// held fewer bytes than promised; the stream's write errors.
    fn poll_splice_from(
        &mut self,
        _cx: &mut Context<'_>,
        _pipe: BorrowedFd<'_>,
        _len: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    /// Sends up to `len` bytes of `file` from `offset` into the stream with sendfile(2),
    /// waiting until the stream is writable; returns how many were sent.
    ///
    /// `file` must hold at least `offset + len` bytes that do not change meanwhile (a
    /// sealed memory file): the wait is for the stream alone.
    ///
    /// # Errors
    ///
    /// `Unsupported` unless [`can_splice`](Self::can_splice); `UnexpectedEof` if the file
    /// ends before `offset + len`; the stream's write errors.
    fn poll_send_file(
        &mut self,
        _cx: &mut Context<'_>,
        _file: BorrowedFd<'_>,
        _offset: u64,
        _len: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    /// Holds (`true`) or lets go (`false`) partial segments of what is written, as nginx's
    /// `tcp_nopush` corks a response's head and file so that they leave in full segments.
    ///
    /// # Errors
    ///
    /// `Unsupported` unless [`can_splice`](Self::can_splice); the socket option's errors.
    fn set_cork(&mut self, _on: bool) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl SpliceWrite for Stream {
    fn can_splice(&self) -> bool {
        cfg!(target_os = "linux")
    }

    #[cfg(target_os = "linux")]
    fn poll_splice_from(
        &mut self,
        cx: &mut Context<'_>,
        pipe: BorrowedFd<'_>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        // The pipe holds `len` bytes: EAGAIN can only come from a full socket buffer.
        self.poll_write_with(cx, |socket| splice_once(pipe, &socket, len))
    }

    #[cfg(target_os = "linux")]
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        file: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        let offset = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        // The file holds the bytes: EAGAIN can only come from a full socket buffer.
        self.poll_write_with(cx, |socket| {
            let mut at = offset;
            nix::sys::sendfile::sendfile64(socket, file, Some(&mut at), len)
                .map_err(io::Error::from)
        })
    }

    fn set_cork(&mut self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => socket2::SockRef::from(&*s).set_cork(on),
            // No segments on a Unix socket.
            Stream::Unix(_) => Ok(()),
        }
    }
}

impl Stream {
    /// Runs `op` (a splice or sendfile into the socket) once the socket is writable, and
    /// again after EAGAIN (`try_io` then clears the write readiness, so the next wait is a
    /// real one) or EINTR; returns how many bytes it moved. Its source must hold the bytes
    /// asked for: `0` moved is `UnexpectedEof`.
    #[cfg(target_os = "linux")]
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let res = match self {
                Stream::Tcp(s) => {
                    std::task::ready!(s.poll_write_ready(cx))?;
                    s.try_io(tokio::io::Interest::WRITABLE, || op(s.as_fd()))
                }
                Stream::Unix(s) => {
                    std::task::ready!(s.poll_write_ready(cx))?;
                    s.try_io(tokio::io::Interest::WRITABLE, || op(s.as_fd()))
                }
            };
            match res {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A stream whose bytes can be moved into a pipe without passing through user space: the
/// receiving half of [`SpliceWrite`].
pub(crate) trait SpliceRead {
    /// Whether [`poll_splice_to`](Self::poll_splice_to) works on this stream now.
    fn can_splice_read(&self) -> bool {
        false
    }

    /// Moves up to `len` bytes from the stream into `pipe`, waiting until the stream is
    /// readable; returns how many moved, `0` at the stream's end.
    ///
    /// `pipe` must be a non-blocking pipe that nobody else writes to.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when `pipe` is full (the stream's readiness is kept: wait for room, then
    /// call again); `Unsupported` unless [`can_splice_read`](Self::can_splice_read); the
    /// stream's read errors.
    fn poll_splice_to(
        &mut self,
        _cx: &mut Context<'_>,
        _pipe: BorrowedFd<'_>,
        _len: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

impl SpliceRead for Stream {
    fn can_splice_read(&self) -> bool {
        cfg!(target_os = "linux")
    }

    #[cfg(target_os = "linux")]
    fn poll_splice_to(
        &mut self,
        cx: &mut Context<'_>,
        pipe: BorrowedFd<'_>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        loop {
            // Only an empty socket may clear the read readiness (try_io does that on
            // WouldBlock); a full pipe is reported as `PipeFull`, with the readiness kept,
            // since the socket may hold plenty.
            let res = match self {
                Stream::Tcp(s) => {
                    std::task::ready!(s.poll_read_ready(cx))?;
                    s.try_io(tokio::io::Interest::READABLE, || {
                        splice_into_pipe(s, pipe, len)
                    })
                }
                Stream::Unix(s) => {
                    std::task::ready!(s.poll_read_ready(cx))?;
                    s.try_io(tokio::io::Interest::READABLE, || {
                        splice_into_pipe(s, pipe, len)
                    })
                }
            };
            match res {
                Ok(Spliced::Moved(n)) => return Poll::Ready(Ok(n)),
                Ok(Spliced::PipeFull) => return Poll::Ready(Err(io::ErrorKind::WouldBlock.into())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// What one splice from a socket into a pipe did.
#[cfg(target_os = "linux")]
enum Spliced {
    /// Moved this many bytes (`0`: the socket is at its end).
    Moved(usize),
    /// Nothing: the pipe has no room.
    PipeFull,
}

/// One non-blocking splice of up to `len` bytes from `socket` into `pipe`, or
/// [`Spliced::PipeFull`] without trying when `pipe` has no room.
///
/// The room is checked first: only the caller writes to `pipe` and its reader only empties
/// it, so a pipe with room keeps it, and an EAGAIN from the splice then means an empty socket
/// (`WouldBlock`). Checked after an EAGAIN instead, a reader draining the pipe in between
/// would make a full pipe look like an empty socket, and the wait for data that is already
/// there would never end.
#[cfg(target_os = "linux")]
fn splice_into_pipe(
    socket: &impl std::os::fd::AsFd,
    pipe: BorrowedFd<'_>,
    len: usize,
) -> io::Result<Spliced> {
    use nix::fcntl::{splice, SpliceFFlags};
    if !pipe_has_room(pipe)? {
        return Ok(Spliced::PipeFull);
    }
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let moved = splice(socket.as_fd(), None, pipe, None, len, flags)?;
    Ok(Spliced::Moved(moved))
}

/// Whether `pipe` can take at least one more buffer right now.
#[cfg(target_os = "linux")]
fn pipe_has_room(pipe: BorrowedFd<'_>) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(pipe, PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO)?;
    Ok(fds[0]
        .revents()
        .is_some_and(|r| r.intersects(PollFlags::POLLOUT | PollFlags::POLLERR)))
}

/// One non-blocking splice of up to `len` bytes from `pipe` into `socket`.
#[cfg(target_os = "linux")]
fn splice_once(
    pipe: BorrowedFd<'_>,
    socket: &impl std::os::fd::AsFd,
    len: usize,
) -> io::Result<usize> {
    use nix::fcntl::{splice, SpliceFFlags};
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    splice(pipe, None, socket.as_fd(), None, len, flags).map_err(io::Error::from)
}

/// How many bytes `pipe` holds right now (FIONREAD): a reader that is the pipe's only one can
/// splice that many without finding it empty.
///
/// # Errors
///
/// The ioctl's error, e.g. `ENOTTY` when `pipe` is not a pipe.
pub(crate) fn pipe_ready_bytes(pipe: BorrowedFd<'_>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut ready: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `ready`.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut ready) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(ready).unwrap_or(0))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::fs::File;
    use std::future::poll_fn;
    use std::io::Write;
    use std::os::fd::AsFd;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn tcp_pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (
            Stream::Tcp(accepted.expect("accept").0),
            client.expect("connect"),
        )
    }

    #[test]
    fn pipe_ready_bytes_counts_what_a_pipe_holds() {
        let (rx, tx) = nix::unistd::pipe().expect("pipe");
        assert_eq!(pipe_ready_bytes(rx.as_fd()).expect("ioctl"), 0);
        File::from(tx).write_all(b"hello").expect("write");
        assert_eq!(pipe_ready_bytes(rx.as_fd()).expect("ioctl"), 5);
    }

    #[tokio::test]
    async fn spliced_bytes_arrive_exactly_on_the_socket() {
        let (mut server, mut client) = tcp_pair().await;
        assert!(server.can_splice());
        let (rx, tx) = nix::unistd::pipe().expect("pipe");
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        File::from(tx).write_all(&data).expect("write");
        let mut left = pipe_ready_bytes(rx.as_fd()).expect("ioctl");
        assert_eq!(left, data.len());
        while left > 0 {
            let n = poll_fn(|cx| server.poll_splice_from(cx, rx.as_fd(), left))
                .await
                .expect("splice");
            left -= n;
        }
        let mut got = vec![0u8; data.len()];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_pipe_holding_less_than_promised_is_an_error_not_a_hang() {
        let (mut server, _client) = tcp_pair().await;
        let (rx, tx) = nix::unistd::pipe().expect("pipe");
        drop(tx);
        let err = poll_fn(|cx| server.poll_splice_from(cx, rx.as_fd(), 10))
            .await
            .expect_err("empty pipe at EOF");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A pipe whose write end is non-blocking, as [`SpliceRead::poll_splice_to`] wants it.
    fn nonblocking_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let (rx, tx) = nix::unistd::pipe().expect("pipe");
        fcntl(&tx, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("nonblocking");
        (rx, tx)
    }

    /// Reads what `pipe` holds right now.
    fn drain(pipe: BorrowedFd<'_>) -> Vec<u8> {
        let mut held = vec![0u8; pipe_ready_bytes(pipe).expect("ioctl")];
        let mut got = 0;
        while got < held.len() {
            got += nix::unistd::read(pipe, &mut held[got..]).expect("read");
        }
        held
    }

    #[tokio::test]
    async fn bytes_spliced_from_a_socket_into_a_pipe_arrive_exactly() {
        let (mut server, mut client) = tcp_pair().await;
        assert!(server.can_splice_read());
        let (rx, tx) = nonblocking_pipe();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        client.write_all(&data).await.expect("write");
        let mut got = Vec::new();
        while got.len() < data.len() {
            let n = poll_fn(|cx| server.poll_splice_to(cx, tx.as_fd(), data.len() - got.len()))
                .await
                .expect("splice");
            assert!(n > 0);
            got.extend(drain(rx.as_fd()));
        }
        assert_eq!(got, data);
        drop(client);
        let end = poll_fn(|cx| server.poll_splice_to(cx, tx.as_fd(), 10)).await;
        assert_eq!(end.expect("splice at the end"), 0);
    }

    #[tokio::test]
    async fn a_full_pipe_is_would_block_and_the_socket_stays_readable() {
        use nix::fcntl::{fcntl, FcntlArg};
        let (mut server, mut client) = tcp_pair().await;
        let (rx, tx) = nonblocking_pipe();
        // The smallest pipe the kernel allows (one page), filled to the brim.
        let _ = fcntl(&tx, FcntlArg::F_SETPIPE_SZ(4096));
        let filler = vec![7u8; 1 << 20];
        let mut held = 0;
        while let Ok(n) = nix::unistd::write(&tx, &filler) {
            held += n;
        }
        assert!(held > 0);
        client.write_all(b"waiting").await.expect("write");
        let full = poll_fn(|cx| server.poll_splice_to(cx, tx.as_fd(), 100)).await;
        assert_eq!(full.expect_err("no room").kind(), io::ErrorKind::WouldBlock);
        // Room again: the bytes that were waiting move with no new data on the socket, so
        // the full pipe did not cost the socket its readiness.
        assert_eq!(drain(rx.as_fd()).len(), held);
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            poll_fn(|cx| server.poll_splice_to(cx, tx.as_fd(), 100)),
        )
        .await
        .expect("no hang")
        .expect("splice");
        assert_eq!(n, 7);
        assert_eq!(drain(rx.as_fd()), b"waiting");
    }
}

/// In-memory test streams: no splicing, as TLS.
#[cfg(test)]
impl SpliceWrite for tokio::io::DuplexStream {}
