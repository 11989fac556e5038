//! The receive low-water mark (SO_RCVLOWAT): a reader that knows more bytes are already on
//! their way asks the kernel to wake it once they are all there (or at EOF), instead of once
//! per arriving segment.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::Stream;

/// A handle on one socket's receive low-water mark.
///
/// Only raise the mark to bytes the peer has already committed to sending (the rest of a
/// frame's body): a mark above what will arrive stalls the reader until EOF. Linux still wakes
/// the reader early when the receive window runs short, so a high mark cannot deadlock.
#[derive(Debug)]
pub(crate) struct RecvLowat {
    /// A duplicate of the socket's descriptor: the option belongs to the socket.
    fd: OwnedFd,
    current: usize,
}

impl RecvLowat {
    /// A handle on `stream`'s socket, with the mark at the kernel's default of one byte.
    ///
    /// # Errors
    /// The error of duplicating the descriptor.
    pub fn of(stream: &Stream) -> io::Result<RecvLowat> {
        let fd = match stream {
            Stream::Tcp(s) => s.as_fd().try_clone_to_owned()?,
            Stream::Unix(s) => s.as_fd().try_clone_to_owned()?,
        };
        Ok(RecvLowat { fd, current: 1 })
    }

    /// Sets the mark to `bytes` (at least one); a mark already there costs no system call.
    ///
    /// # Errors
    /// The setsockopt error.
    pub fn set(&mut self, bytes: usize) -> io::Result<()> {
        let bytes = bytes.max(1);
        if bytes == self.current {
            return Ok(());
        }
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: SO_RCVLOWAT reads one c_int from the pointer, which points at `value`, of
        // the length given.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.current = bytes;
        Ok(())
    }

    /// The mark last set.
    #[cfg(test)]
    fn get(&self) -> usize {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[tokio::test]
    async fn a_raised_mark_still_delivers_every_byte_and_can_come_back_down() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut reader = Stream::Tcp(client.expect("connect"));
        let (mut writer, _) = accepted.expect("accept");
        let mut lowat = RecvLowat::of(&reader).expect("dup");
        lowat.set(100_000).expect("raise");
        assert_eq!(lowat.get(), 100_000);
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
        let data = sent.clone();
        let send = tokio::spawn(async move {
            for piece in data.chunks(7_000) {
                writer.write_all(piece).await.expect("write");
            }
            writer
        });
        let mut got = vec![0u8; sent.len()];
        reader.read_exact(&mut got).await.expect("read");
        assert_eq!(got, sent);
        lowat.set(0).expect("lower");
        assert_eq!(lowat.get(), 1);
        let mut writer = send.await.expect("join");
        writer.write_all(b"x").await.expect("write");
        assert_eq!(reader.read_u8().await.expect("one byte"), b'x');
    }
}
