//! The local end of `exec run -t`: the pty request made from this terminal, its size changes
//! as they happen, and the signals that must not kill the client while the terminal is raw.

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use super::messages::{is_valid_term, PtyRequest};
use super::{MAX_PTY_COLS, MAX_PTY_ROWS};
use crate::terminal::{window_size, WindowSize};

/// The size of a pty when the local terminal's is unknown.
pub const DEFAULT_WINDOW_SIZE: WindowSize = WindowSize { rows: 24, cols: 80 };

/// The pty to ask for: this terminal's size (stdin's, else stdout's, else
/// [`DEFAULT_WINDOW_SIZE`]) and `TERM` (left to the server's default if unset or unusable).
pub fn pty_request() -> PtyRequest {
    let size = [window_size(io::stdin()), window_size(io::stdout())]
        .into_iter()
        .flatten()
        .find_map(usable)
        .unwrap_or(DEFAULT_WINDOW_SIZE);
    PtyRequest {
        rows: size.rows,
        cols: size.cols,
        term: std::env::var("TERM").ok().filter(|t| is_valid_term(t)),
    }
}

/// A local size the server accepts: 0x0 means unknown, and a larger one than the limits is
/// clamped to them.
fn usable(size: WindowSize) -> Option<WindowSize> {
    (size.rows > 0 && size.cols > 0).then(|| WindowSize {
        rows: size.rows.min(MAX_PTY_ROWS),
        cols: size.cols.min(MAX_PTY_COLS),
    })
}

/// The size of the terminal on stdin, updated at every SIGWINCH that changes it, for the
/// `resize` frames. The watching task ends once the receiver is dropped and a signal comes.
///
/// # Errors
/// The error of installing the SIGWINCH handler.
pub fn watch_window_size() -> io::Result<watch::Receiver<WindowSize>> {
    let current = || window_size(io::stdin()).ok().and_then(usable);
    let (tx, rx) = watch::channel(current().unwrap_or(DEFAULT_WINDOW_SIZE));
    let mut changes = signal(SignalKind::window_change())?;
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            if let Some(size) = current() {
                // Only a real change makes a `resize` frame.
                tx.send_if_modified(|old| std::mem::replace(old, size) != size);
            }
            if tx.is_closed() {
                break;
            }
        }
    });
    Ok(rx)
}

/// SIGTERM and SIGHUP, caught while the terminal is raw so the run ends through the normal
/// path, which restores the terminal, instead of the process dying with it raw.
#[derive(Debug)]
pub struct Hangups {
    term: Signal,
    hup: Signal,
}

impl Hangups {
    /// Installs the handlers.
    ///
    /// # Errors
    /// The error of installing a handler.
    pub fn install() -> io::Result<Hangups> {
        Ok(Hangups {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The name of the next signal caught; never, without handlers.
    ///
    /// # Cancel safety
    /// Cancel safe, as `Signal::recv` is.
    pub async fn recv(hangups: &mut Option<Hangups>) -> &'static str {
        let Some(h) = hangups else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = h.term.recv() => "SIGTERM",
            _ = h.hup.recv() => "SIGHUP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sizes_are_dropped_and_huge_ones_clamped() {
        assert_eq!(usable(WindowSize { rows: 0, cols: 0 }), None);
        assert_eq!(usable(WindowSize { rows: 24, cols: 0 }), None);
        assert_eq!(
            usable(WindowSize {
                rows: u16::MAX,
                cols: 132
            }),
            Some(WindowSize {
                rows: MAX_PTY_ROWS,
                cols: 132
            })
        );
    }
}
