//! Pasted text for `sockit chat join`'s line editor: rustyline drops every escape sequence
//! inside a bracketed paste, so pasted `ESC[31m` would vanish. The terminal's input goes
//! through a pty instead, and inside a paste each control character becomes its visible
//! escape (`\x1b`), which the editor shows and sends as typed text.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;

/// Marks the terminal sends around pasted text when bracketed paste is on.
const PASTE_START: &[u8] = b"\x1b[200~";
const PASTE_END: &[u8] = b"\x1b[201~";

/// Bytes read from the terminal at a time.
const READ_CHUNK_BYTES: usize = 4096;

/// Rewrites terminal input: outside a paste, bytes pass as they are (keys, Ctrl-C, arrows);
/// inside one, control characters other than tab and line ends become `\xNN` text.
#[derive(Debug, Default)]
pub(super) struct PasteFilter {
    in_paste: bool,
    /// A possible paste mark, begun with ESC, not yet complete.
    pending: Vec<u8>,
}

impl PasteFilter {
    /// Feeds `input`, appending what the editor should read to `out`.
    pub(super) fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if !self.pending.is_empty() || b == 0x1b {
                self.pending.push(b);
                self.settle(out);
            } else {
                self.emit(b, out);
            }
        }
    }

    /// Decides about `pending` once it is a whole mark or cannot become one.
    fn settle(&mut self, out: &mut Vec<u8>) {
        let mark = if self.in_paste {
            PASTE_END
        } else {
            PASTE_START
        };
        if self.pending == mark {
            out.extend_from_slice(mark);
            self.in_paste = !self.in_paste;
            self.pending.clear();
        } else if !mark.starts_with(&self.pending) {
            let pending = std::mem::take(&mut self.pending);
            // The ESC is not a mark: emit it, then feed the rest again (it may start one).
            self.emit(pending[0], out);
            self.push(&pending[1..], out);
        }
    }

    fn emit(&self, b: u8, out: &mut Vec<u8>) {
        let control = b < 0x20 || b == 0x7f;
        if self.in_paste && control && !matches!(b, b'\t' | b'\n' | b'\r') {
            let _ = write!(out, "\\x{b:02x}");
        } else {
            out.push(b);
        }
    }
}

/// Every byte typed reaches the pty unprocessed (as `cfmakeraw`), while output processing
/// stays on (`\n` → `\r\n`), as the editor's own raw mode keeps it.
fn raw_input(terminal: impl AsFd) -> io::Result<()> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let mut settings = tcgetattr(&terminal)?;
    let output = settings.output_flags;
    cfmakeraw(&mut settings);
    settings.output_flags = output;
    tcsetattr(&terminal, SetArg::TCSANOW, &settings)?;
    Ok(())
}

/// Puts a pty between the terminal and the line editor: fd 0 becomes the pty's other end and
/// a thread copies the terminal's input into it through a [`PasteFilter`]. The terminal's
/// input is switched to raw mode (the editor sets the pty's own modes); the caller restores
/// the terminal's settings when the session ends.
///
/// # Errors
/// Creating the pty, or moving fd 0.
pub(super) fn filter_stdin() -> io::Result<()> {
    let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    let terminal = io::stdin().as_fd().try_clone_to_owned()?;
    raw_input(&terminal)?;
    nix::unistd::dup2_stdin(&pty.slave).map_err(io::Error::from)?;
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut terminal = std::fs::File::from(terminal);
    std::thread::spawn(move || {
        let mut filter = PasteFilter::default();
        let mut buf = [0u8; READ_CHUNK_BYTES];
        let mut out = Vec::with_capacity(READ_CHUNK_BYTES);
        loop {
            let n = match terminal.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            out.clear();
            filter.push(&buf[..n], &mut out);
            if master.write_all(&out).is_err() {
                return;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(chunks: &[&[u8]]) -> Vec<u8> {
        let mut filter = PasteFilter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            filter.push(chunk, &mut out);
        }
        out
    }

    #[test]
    fn keys_outside_a_paste_pass_unchanged() {
        let keys: &[u8] = b"hi\x1b[D\x03\x1b[A\r";
        assert_eq!(filtered(&[keys]), keys);
    }

    #[test]
    fn escapes_inside_a_paste_become_visible_text_even_split_across_reads() {
        let got = filtered(&[b"\x1b[20", b"0~red \x1b[31mX\x07\x1b", b"[201", b"~\r"]);
        assert_eq!(got, b"\x1b[200~red \\x1b[31mX\\x07\x1b[201~\r".to_vec());
    }

    #[test]
    fn a_paste_end_mark_look_alike_inside_a_paste_is_text() {
        let got = filtered(&[b"\x1b[200~a\x1b[202~b\x1b[201~"]);
        assert_eq!(got, b"\x1b[200~a\\x1b[202~b\x1b[201~".to_vec());
    }
}
