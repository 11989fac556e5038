//! The pipe a [`ThreadWriter`](super::ThreadWriter) can drain into its output: bytes spliced
//! into it from a socket reach a file, a pipe or `/dev/null` without a copy through user space.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use tokio::net::unix::pipe;

/// Capacity asked for the pipe (the default of 64 KiB would cut each splice to 16 pages).
pub(crate) const SPLICE_PIPE_BYTES: usize = 1024 * 1024;

/// Reads of the pipe when the output cannot take a splice (a file opened for appending).
const FALLBACK_READ_BYTES: usize = 64 * 1024;

/// A new pipe: its write end registered with the runtime (non-blocking), for the async side;
/// its read end blocking, for the writer thread, with `out` (a duplicate of the output's
/// descriptor) to splice into.
///
/// # Errors
///
/// Creating or registering the pipe, or duplicating `out`.
pub(super) fn splice_pipe(out: BorrowedFd<'_>) -> io::Result<(pipe::Sender, Drain)> {
    let (read, write) = nix::unistd::pipe()?;
    // Not inherited by anything this process starts.
    for end in [&read, &write] {
        nix::fcntl::fcntl(
            end,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
    }
    // Best effort: past the system's pipe-max-size the default stays, and splices are smaller.
    #[cfg(target_os = "linux")]
    let _ = nix::fcntl::fcntl(
        &write,
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(i32::try_from(SPLICE_PIPE_BYTES).unwrap_or(i32::MAX)),
    );
    let drain = Drain {
        pipe: read,
        out: out.try_clone_to_owned()?,
        // splice(2) is Linux's; elsewhere the pipe is read and written.
        splice: cfg!(target_os = "linux"),
        scratch: Vec::new(),
    };
    Ok((pipe::Sender::from_owned_fd(write)?, drain))
}

/// The writer thread's end of the pipe.
#[derive(Debug)]
pub(super) struct Drain {
    /// The pipe's read end (blocking).
    pipe: OwnedFd,
    /// The output's descriptor.
    out: OwnedFd,
    /// Whether the output takes splices; cleared at its first refusal.
    splice: bool,
    /// The buffer of read-and-write moves, made at the first.
    scratch: Vec<u8>,
}

impl Drain {
    /// Moves `n` bytes from the pipe to the output, behind whatever `out` wrote before (it is
    /// flushed first). An output that refuses splices (EINVAL: a file opened for appending)
    /// gets the bytes read and written instead, from then on.
    ///
    /// # Errors
    ///
    /// The output's write errors (EPIPE for a closed pipe); `UnexpectedEof` if the pipe held
    /// fewer than `n` bytes.
    pub(super) fn move_to<W: Write>(&mut self, out: &mut W, mut n: usize) -> io::Result<()> {
        out.flush()?;
        #[cfg(target_os = "linux")]
        while n > 0 && self.splice {
            use nix::fcntl::{splice, SpliceFFlags};
            match splice(
                &self.pipe,
                None,
                &self.out,
                None,
                n,
                SpliceFFlags::SPLICE_F_MOVE,
            ) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(moved) => n -= moved,
                Err(Errno::EINTR) => {}
                // An output left non-blocking by whoever shares it: wait until it has room.
                Err(Errno::EAGAIN) => wait_writable(self.out.as_fd())?,
                Err(Errno::EINVAL) => self.splice = false,
                Err(e) => return Err(e.into()),
            }
        }
        self.copy(out, n)
    }

    /// Reads `n` bytes from the pipe and writes them to `out`.
    fn copy<W: Write>(&mut self, out: &mut W, mut n: usize) -> io::Result<()> {
        if n > 0 && self.scratch.is_empty() {
            self.scratch = vec![0u8; FALLBACK_READ_BYTES];
        }
        while n > 0 {
            let want = n.min(self.scratch.len());
            let got = match nix::unistd::read(&self.pipe, &mut self.scratch[..want]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(got) => got,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            out.write_all(&self.scratch[..got])?;
            n -= got;
        }
        Ok(())
    }
}

/// Blocks until `fd` can be written to.
#[cfg(target_os = "linux")]
fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
