//! Telling a frame from a line of text by a peer's first bytes, so a framed client at a text
//! port (or `nc` at a framed port) is told about the mix-up instead of an absurd frame length.
//!
//! ```text
//! sockit frame:  header length, u32 big-endian: 0x00 0x00 … for any header under 64 KiB
//! text line:     "* welcome to sockit chat…\n", "alice\n": no control bytes but tab, CR, LF
//! ```

/// The most bytes [`looks_like_text`] looks at: a frame's length prefix.
pub(crate) const TEXT_SNIFF_BYTES: usize = 4;

/// Whether `first` (a peer's first bytes) starts like a line of text rather than a frame.
///
/// Needs [`TEXT_SNIFF_BYTES`] bytes, or fewer ending in a newline (`"hi\n"`); a frame can never
/// match, since every valid length prefix starts with a zero byte. UTF-8 beyond ASCII counts as
/// text; C0 controls other than tab, CR and LF, DEL, and bytes that never occur in UTF-8 do
/// not (a TLS record starts with a control byte; a hostile `0xFFFFFFFF` length is no text).
pub(crate) fn looks_like_text(first: &[u8]) -> bool {
    let head = first.get(..TEXT_SNIFF_BYTES).unwrap_or(first);
    let enough = head.len() == TEXT_SNIFF_BYTES || head.last() == Some(&b'\n');
    enough && head.iter().all(|&b| is_text_byte(b))
}

fn is_text_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\r' | b' '..=b'~' | 0x80..=0xbf | 0xc2..=0xf4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_frame, Hello};

    #[test]
    fn greetings_and_nicks_look_like_text() {
        assert!(looks_like_text(b"* welcome to sockit chat\n"));
        assert!(looks_like_text(b"alice\n"));
        assert!(looks_like_text(b"hi\n"), "a short line, complete");
        assert!(looks_like_text(b"\xc3\xa9lodie\n"), "UTF-8");
        assert!(looks_like_text(b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn frames_tls_and_short_input_do_not_look_like_text() {
        let mut frame = bytes::BytesMut::new();
        let hello = Hello {
            service: "chat".into(),
            version: 1,
        };
        encode_frame(&hello, &[], &mut frame).expect("encode");
        assert!(!looks_like_text(&frame));
        assert!(
            !looks_like_text(&[0x16, 0x03, 0x01, 0x02]),
            "TLS ClientHello"
        );
        assert!(!looks_like_text(b"hi"), "too short to say");
        assert!(!looks_like_text(b""));
        assert!(!looks_like_text(b"ab\x1bc"), "an escape byte");
        assert!(!looks_like_text(&[0xff; 4]), "never in UTF-8");
    }
}
