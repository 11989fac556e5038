//! Raw mode for the local terminal, undone when the guard drops: on return, on error and
//! while a panic unwinds.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

/// The local terminal in raw mode: every byte typed (Ctrl-C, Ctrl-D, Ctrl-Z too) reaches the
/// reader unprocessed and unechoed. Dropping it restores the settings found at
/// [`RawMode::enable`].
#[derive(Debug)]
pub struct RawMode {
    /// A duplicate of the terminal's descriptor, so the guard does not borrow the caller's.
    tty: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Saves the settings of the terminal `fd` refers to and switches it to raw mode.
    ///
    /// # Errors
    /// `ENOTTY` when `fd` is not a terminal, or the error of duplicating `fd`.
    pub fn enable(fd: impl AsFd) -> io::Result<RawMode> {
        let tty = fd.as_fd().try_clone_to_owned()?;
        let saved = tcgetattr(&tty)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&tty, SetArg::TCSANOW, &raw)?;
        Ok(RawMode { tty, saved })
    }
}

impl RawMode {
    /// Saves the settings of the terminal `fd` refers to without changing them, to restore
    /// them when the guard drops: for a terminal a line editor switches to raw mode, when
    /// the program may have to leave while the editor still holds it.
    ///
    /// # Errors
    /// `ENOTTY` when `fd` is not a terminal, or the error of duplicating `fd`.
    pub fn restore_on_drop(fd: impl AsFd) -> io::Result<RawMode> {
        let tty = fd.as_fd().try_clone_to_owned()?;
        let saved = tcgetattr(&tty)?;
        Ok(RawMode { tty, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing better to do on failure: the terminal is gone or no longer ours.
        let _ = tcsetattr(&self.tty, SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::pty::openpty;
    use nix::sys::termios::{LocalFlags, OutputFlags};

    fn flags(fd: &OwnedFd) -> (LocalFlags, OutputFlags) {
        let t = tcgetattr(fd).unwrap();
        (t.local_flags, t.output_flags)
    }

    #[test]
    fn raw_mode_is_restored_when_the_guard_drops() {
        let pty = openpty(None, None).unwrap();
        let before = flags(&pty.slave);
        assert!(before
            .0
            .contains(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG));
        let guard = RawMode::enable(&pty.slave).unwrap();
        let (local, output) = flags(&pty.slave);
        assert!(!local.intersects(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG));
        assert!(!output.contains(OutputFlags::OPOST));
        drop(guard);
        assert_eq!(flags(&pty.slave), before);
    }

    #[test]
    fn raw_mode_is_restored_while_a_panic_unwinds() {
        let pty = openpty(None, None).unwrap();
        let before = flags(&pty.slave);
        let slave = &pty.slave;
        let unwound = std::panic::catch_unwind(|| {
            let _guard = RawMode::enable(slave).unwrap();
            panic!("a failure while the terminal is raw");
        });
        assert!(unwound.is_err());
        assert_eq!(flags(&pty.slave), before);
    }

    #[test]
    fn a_descriptor_that_is_not_a_terminal_is_refused() {
        let file = tempfile::tempfile().unwrap();
        let err = RawMode::enable(&file).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }
}
