//! Making peer text safe for a terminal: control characters, ANSI/OSC escape sequences and
//! bidi overrides are shown as visible escapes instead of being interpreted.

use std::fmt::Write;

/// Escapes `text` for a terminal, keeping newlines and tabs.
///
/// C0/C1 controls (ESC, BEL, CR, …) become `\x1b`-style escapes and bidi controls
/// (U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C) become `\u{202e}`-style escapes, so
/// a peer can neither move the cursor, rewrite the screen, set the clipboard (OSC 52) nor
/// reorder what the reader sees.
#[cfg(test)]
pub(crate) fn escape_for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// Escapes `text` for one line of a log or an error message: like `escape_for_terminal`, but
/// newlines and tabs are escaped too (so a peer cannot forge log lines), and at most
/// `max_chars` characters of the input are kept.
pub fn escape_one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    for c in text.chars().take(max_chars) {
        match c {
            '\n' | '\t' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => push_escaped(&mut out, c),
        }
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' | '\t' => out.push(c),
        c if c.is_control() => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if is_hidden_format(c) => {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// Characters that change how text reads without showing themselves: bidi controls
/// (U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C), zero-width and invisible ones
/// (U+200B, U+2060–U+2064, U+FEFF, U+180E, the soft hyphen U+00AD) and the line and paragraph
/// separators U+2028/U+2029. The joiners U+200C/U+200D are not among them: emoji sequences and
/// several scripts need them.
pub(crate) fn is_hidden_format(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}' | '\u{200e}' | '\u{200f}'
        | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// Escapes a byte stream chunk by chunk for a terminal. Invalid UTF-8 bytes are shown as
/// `\xNN`; a multi-byte character split across chunks is kept whole.
#[derive(Debug, Default)]
pub(crate) struct TerminalEscaper {
    carry: Vec<u8>,
}

impl TerminalEscaper {
    /// Escapes the next chunk; an incomplete trailing character waits for the next call.
    pub fn push(&mut self, chunk: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        let mut out = String::with_capacity(bytes.len());
        let mut rest: &[u8] = &bytes;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    s.chars().for_each(|c| push_escaped(&mut out, c));
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    if let Ok(s) = std::str::from_utf8(valid) {
                        s.chars().for_each(|c| push_escaped(&mut out, c));
                    }
                    match e.error_len() {
                        Some(bad) => {
                            for b in &after[..bad] {
                                let _ = write!(out, "\\x{b:02x}");
                            }
                            rest = &after[bad..];
                        }
                        None => {
                            self.carry = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Flushes an incomplete character left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        for b in std::mem::take(&mut self.carry) {
            let _ = write!(out, "\\x{b:02x}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_shown_but_joiners_are_kept() {
        let shown = escape_one_line("a\u{200b}b\u{feff}c\u{2028}d\u{ad}e\u{2060}", 100);
        assert_eq!(shown, "a\\u{200b}b\\u{feff}c\\u{2028}d\\u{00ad}e\\u{2060}");
        let family = "\u{1f468}\u{200d}\u{1f469}";
        assert_eq!(escape_one_line(family, 100), family);
    }

    #[test]
    fn escape_sequences_and_bidi_overrides_are_made_visible() {
        assert_eq!(
            escape_for_terminal("a\x1b]52;c;aGk=\x07b\x1b[2J\r\n\u{202e}x"),
            "a\\x1b]52;c;aGk=\\x07b\\x1b[2J\\x0d\n\\u{202e}x"
        );
        assert_eq!(escape_for_terminal("héllo\tworld"), "héllo\tworld");
    }

    #[test]
    fn one_line_escaping_escapes_newlines_and_truncates() {
        assert_eq!(escape_one_line("a\nb\u{202e}cdef", 4), "a\\x0ab\\u{202e}");
    }

    #[test]
    fn stream_escaper_keeps_split_characters_and_shows_invalid_bytes() {
        let mut esc = TerminalEscaper::default();
        let e = "é".as_bytes();
        let mut out = esc.push(&[b'a', e[0]]);
        out += &esc.push(&[e[1], 0xff, b'\x1b']);
        out += &esc.finish();
        assert_eq!(out, "aé\\xff\\x1b");
    }
}
