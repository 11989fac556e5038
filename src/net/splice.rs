//! Moving bytes from a pipe straight into a socket with splice(2) (Linux), so bulk output
//! (a command's stdout) reaches the network without a copy through user space.

use std::io;
use std::os::fd::BorrowedFd;
use std::task::{Context, Poll};

use super::Stream;

/// A stream that can take bytes from a pipe without them passing through user space.
///
/// Plain TCP and Unix streams can (on Linux); anything that must see the bytes, such as TLS,
/// keeps the defaults: [`can_splice`](Self::can_splice) is `false` and splicing is refused.
pub trait SpliceWrite {
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
        loop {
            // try_io clears the write readiness when the splice reports EAGAIN, which (the
            // pipe holding `len` bytes) can only come from a full socket buffer.
            let res = match self {
                Stream::Tcp(s) => {
                    std::task::ready!(s.poll_write_ready(cx))?;
                    s.try_io(tokio::io::Interest::WRITABLE, || splice_once(pipe, s, len))
                }
                Stream::Unix(s) => {
                    std::task::ready!(s.poll_write_ready(cx))?;
                    s.try_io(tokio::io::Interest::WRITABLE, || splice_once(pipe, s, len))
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
pub fn pipe_ready_bytes(pipe: BorrowedFd<'_>) -> io::Result<usize> {
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

    use tokio::io::AsyncReadExt;
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
}
