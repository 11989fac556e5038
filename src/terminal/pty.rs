//! Pseudo-terminals for commands: open a pair, make the slave a child's controlling terminal,
//! and drive the master from tokio.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, Command};

use super::{set_window_size, WindowSize};

/// A fresh pseudo-terminal pair, before its slave is handed to a command.
#[derive(Debug)]
pub(crate) struct Pty {
    master: nix::pty::PtyMaster,
    slave: OwnedFd,
}

impl Pty {
    /// Opens a pair of the given size. Both ends are close-on-exec from the start, so a
    /// command spawned concurrently for another session cannot inherit them.
    ///
    /// # Errors
    /// The OS error of opening or unlocking the pair (e.g. no pty devices left).
    pub fn open(size: WindowSize) -> io::Result<Pty> {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let path = ptsname_r(&master)?;
        // std opens with O_CLOEXEC.
        let slave: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)?
            .into();
        set_window_size(&slave, size)?;
        Ok(Pty { master, slave })
    }

    /// The master end (a copy of it held open keeps the pair, and so the terminal's number,
    /// from being reused).
    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }

    /// The slave end, as the command will hold it.
    pub fn slave(&self) -> BorrowedFd<'_> {
        self.slave.as_fd()
    }

    /// Spawns `cmd` on the slave: it becomes the command's stdin, stdout and stderr (so the
    /// two outputs merge) and, in a new session the command leads, its controlling terminal.
    /// The session leader's process group id is its pid, so the group can still be signalled
    /// as a whole; do not also ask `cmd` for a process group (a group leader cannot start a
    /// session).
    ///
    /// `cmd` is consumed and this process's copies of the slave are closed before this
    /// returns, so the master reads EOF once the command and all it started are gone.
    ///
    /// # Errors
    /// The spawn error, or the error of making the master non-blocking or registering it with
    /// tokio (which must be running).
    pub fn spawn(self, mut cmd: Command) -> io::Result<(Child, PtyMaster)> {
        let Pty { master, slave } = self;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: the hook runs in the forked child before exec and only makes two
        // async-signal-safe system calls (setsid, ioctl); it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()?;
                // stdin is the slave by now: std sets up the standard streams before hooks run.
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        // The Command holds the slave copies until it is dropped.
        drop(cmd);
        let child = child?;
        let flags = OFlag::from_bits_truncate(fcntl(&master, FcntlArg::F_GETFL)?);
        fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: `master` owns its descriptor, so it stays open and the same for as long as
        // the AsyncFd that owns `master` lives.
        let fd = unsafe { AsyncFd::register(master) }.map_err(|e| e.into_parts().1)?;
        Ok((child, PtyMaster { fd }))
    }
}

/// The master side of a running command's terminal: what the command writes is read here,
/// what is written here is the command's typed input.
#[derive(Debug)]
pub(crate) struct PtyMaster {
    fd: AsyncFd<nix::pty::PtyMaster>,
}

impl PtyMaster {
    /// Reads what the command wrote (stdout and stderr merged); `Ok(0)` once no process holds
    /// the slave any more (Linux reports that as EIO, which is the end here, not an error).
    ///
    /// # Errors
    /// Any other read error.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled read has read nothing.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            let read =
                ready.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from));
            match read {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf` as typed input, waiting while the terminal's input queue is full.
    ///
    /// # Errors
    /// The write error, e.g. EIO once the command is gone.
    ///
    /// # Cancel safety
    /// Not cancel safe: part of `buf` may have been written.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut ready = self.fd.writable().await?;
            let written =
                ready.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from));
            match written {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => buf = buf.get(n..).unwrap_or_default(),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Changes the window size; the command's foreground process group gets SIGWINCH.
    ///
    /// # Errors
    /// The ioctl's error.
    pub fn resize(&self, size: WindowSize) -> io::Result<()> {
        set_window_size(self.fd.get_ref(), size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::window_size;

    #[tokio::test]
    async fn a_command_on_a_pty_has_a_terminal_of_the_given_size() {
        let pty = Pty::open(WindowSize {
            rows: 33,
            cols: 101,
        })
        .unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "stty size; tty; echo err >&2"]);
        let (mut child, master) = pty.spawn(cmd).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = master.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert!(child.wait().await.unwrap().success());
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("33 101\r\n/dev/pts/"), "{out:?}");
        assert!(out.ends_with("err\r\n"), "stderr merged: {out:?}");
        master.resize(WindowSize { rows: 5, cols: 7 }).unwrap();
        assert_eq!(
            window_size(master.fd.get_ref()).unwrap(),
            WindowSize { rows: 5, cols: 7 }
        );
    }
}
