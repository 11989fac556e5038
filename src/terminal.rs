//! Terminals: the local one an interactive client puts in raw mode ([`RawMode`]), and the
//! pseudo-terminals remote commands run on (`Pty`); both measured in [`WindowSize`].

mod pty;
mod raw;

use std::io;
use std::os::fd::{AsFd, AsRawFd};

pub(crate) use pty::{Pty, PtyMaster};
pub use raw::RawMode;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl WindowSize {
    fn to_winsize(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// The size of the terminal `fd` refers to (TIOCGWINSZ); an unknown size reads as 0.
///
/// # Errors
/// `ENOTTY` when `fd` is not a terminal.
pub(crate) fn window_size(fd: impl AsFd) -> io::Result<WindowSize> {
    let mut ws = WindowSize { rows: 0, cols: 0 }.to_winsize();
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is valid and
    // exclusively borrowed for the call; the descriptor is borrowed, so it stays open.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Sets the size of the terminal `fd` refers to (TIOCSWINSZ); the kernel then sends SIGWINCH
/// to the terminal's foreground process group.
///
/// # Errors
/// `ENOTTY` when `fd` is not a terminal.
pub fn set_window_size(fd: impl AsFd, size: WindowSize) -> io::Result<()> {
    let ws = size.to_winsize();
    // SAFETY: TIOCSWINSZ only reads one `winsize` through the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
