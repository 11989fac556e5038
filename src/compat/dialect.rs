//! The lessons' "simulated ssh" dialects: their names, what each sends, and a description of
//! bytes that came in another one, for the client's error messages.
//!
//! ```text
//! raw              cmd -> stdout, stderr                       (no boundary at all)
//! length-text-ack  cmd -> "N" ; ack <- ; N bytes               (ack: "recv_ready" or anything)
//! length-text      cmd -> "N" N bytes                          (glued: 002 §1.5)
//! length           cmd -> i32 N (native) ; N bytes
//! struct-json      cmd -> i32 H ; {"filename","total_size":N,"hash"} (H bytes) ; N bytes
//! ```

use std::fmt;
use std::str::FromStr;

use crate::text::escape_one_line;

/// One of the lessons' command protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// No framing (000 §4): stdout then stderr as they are; the reply ends when the server
    /// goes quiet or closes.
    Raw,
    /// The length as decimal text, an acknowledgement from the client, then the output
    /// (000 §6.1, 002 §1.7): stdout, or stderr when stdout is empty.
    LengthTextAck,
    /// The length as decimal text glued to the output, no acknowledgement (002 §1.5).
    LengthText,
    /// A bare `struct.pack("i", len)`, then stdout and stderr (001 §3).
    Length,
    /// `struct.pack("i", len(header))`, a JSON header, then stdout and stderr (000 §6.2):
    /// [`crate::compat::framing`].
    StructJson,
}

/// The acknowledgement the 000 §6.1 server waits for (002 §1.7's accepts anything).
pub const ACK: &[u8] = b"recv_ready";

/// Longest decimal length a text-length dialect accepts (a `u64`).
pub(crate) const MAX_LENGTH_DIGITS: usize = 20;

impl Dialect {
    /// Every dialect, in the order of the lessons.
    pub const ALL: [Dialect; 5] = [
        Dialect::Raw,
        Dialect::LengthTextAck,
        Dialect::LengthText,
        Dialect::Length,
        Dialect::StructJson,
    ];

    /// The name used by `--compat`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Raw => "raw",
            Dialect::LengthTextAck => "length-text-ack",
            Dialect::LengthText => "length-text",
            Dialect::Length => "length",
            Dialect::StructJson => "struct-json",
        }
    }

    /// What a reply in this dialect looks like, for error messages.
    pub fn shape(self) -> &'static str {
        match self {
            Dialect::Raw => "the output as it is",
            Dialect::LengthTextAck => "a length in decimal digits, then after our ack the output",
            Dialect::LengthText => "a length in decimal digits and the output",
            Dialect::Length => "a 4-byte struct.pack(\"i\") length, then the output",
            Dialect::StructJson => "a 4-byte struct.pack(\"i\") length, a JSON header, the output",
        }
    }

    /// The service name in logs.
    pub(crate) fn service(self) -> &'static str {
        match self {
            Dialect::Raw => "exec-compat-raw",
            Dialect::LengthTextAck => "exec-compat-length-text-ack",
            Dialect::LengthText => "exec-compat-length-text",
            Dialect::Length => "exec-compat-length",
            Dialect::StructJson => "exec-compat-struct-json",
        }
    }

    /// The reply body as the lesson's server builds it from a command's output.
    pub(crate) fn body(self, stdout: Vec<u8>, mut stderr: Vec<u8>) -> Vec<u8> {
        match self {
            Dialect::LengthTextAck | Dialect::LengthText if !stdout.is_empty() => stdout,
            Dialect::LengthTextAck | Dialect::LengthText => stderr,
            Dialect::Raw | Dialect::Length | Dialect::StructJson => {
                let mut body = stdout;
                body.append(&mut stderr);
                body
            }
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a dialect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dialect {0:?} (raw, length-text-ack, length-text, length, struct-json, tutorial)")]
pub struct UnknownDialect(String);

impl FromStr for Dialect {
    type Err = UnknownDialect;

    /// A `--compat` name; `tutorial` is `struct-json`, the name the first compat mode had.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name == "tutorial" {
            return Ok(Dialect::StructJson);
        }
        Dialect::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| UnknownDialect(name.to_owned()))
    }
}

/// Longest quoted peer text in a description.
const QUOTED_CHARS: usize = 120;

/// Largest `struct.pack("i")` length that [`describe`] takes for one (1 GiB).
const PLAUSIBLE_BINARY_LENGTH: i32 = 1 << 30;

/// A native-endian `i32` length at the start of `buf` that a lesson could have sent.
fn small_binary_length(buf: &[u8]) -> Option<i32> {
    let prefix: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let len = i32::from_ne_bytes(prefix);
    (0..=PLAUSIBLE_BINARY_LENGTH).contains(&len).then_some(len)
}

/// What `buf`, the start of a reply, looks like, naming the dialect that sends such bytes:
/// "nothing", "decimal digits \"12\" (length-text-ack or length-text)", and so on.
pub(crate) fn describe(buf: &[u8]) -> String {
    if buf.is_empty() {
        return "nothing".to_owned();
    }
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    let quoted = |bytes: &[u8]| escape_one_line(&String::from_utf8_lossy(bytes), QUOTED_CHARS);
    if digits == buf.len() {
        return format!(
            "only decimal digits \"{}\" (a length-text-ack server waiting for its ack?)",
            quoted(buf)
        );
    }
    if digits > 0 && digits <= MAX_LENGTH_DIGITS {
        return format!(
            "decimal digits and then \"{}\" (a length-text server?)",
            quoted(&buf[digits..])
        );
    }
    if buf.len() >= 5 && buf[4] == b'{' {
        if u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) < 1 << 16 && buf[3] != 0 {
            return "a sockit frame (a sockit exec server without --compat?)".to_owned();
        }
        if small_binary_length(buf).is_some() {
            return "a 4-byte length and a JSON header (a struct-json server?)".to_owned();
        }
    }
    if let Some(len) = small_binary_length(buf) {
        return format!("a 4-byte length ({len}) (a length server?)");
    }
    format!("text \"{}\"", quoted(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_tutorial_is_struct_json() {
        for d in Dialect::ALL {
            assert_eq!(d.name().parse::<Dialect>(), Ok(d));
        }
        assert_eq!("tutorial".parse::<Dialect>(), Ok(Dialect::StructJson));
        assert!("json".parse::<Dialect>().is_err());
    }

    #[test]
    fn text_length_dialects_send_stdout_or_else_stderr() {
        let (out, err) = (b"out".to_vec(), b"err".to_vec());
        assert_eq!(
            Dialect::LengthTextAck.body(out.clone(), err.clone()),
            b"out"
        );
        assert_eq!(Dialect::LengthText.body(Vec::new(), err.clone()), b"err");
        assert_eq!(Dialect::Length.body(out, err), b"outerr");
    }

    #[test]
    fn a_description_names_the_dialect_that_sends_such_bytes() {
        assert!(describe(b"12").contains("length-text-ack"));
        assert!(describe(b"5hello").contains("length-text server"));
        let mut sj = 30i32.to_ne_bytes().to_vec();
        sj.extend_from_slice(br#"{"total_size": 1}"#);
        assert!(describe(&sj).contains("struct-json"), "{}", describe(&sj));
        let mut framed = 30u32.to_be_bytes().to_vec();
        framed.extend_from_slice(br#"{"type":"hello"}"#);
        assert!(describe(&framed).contains("sockit frame"));
        let mut len = 3i32.to_ne_bytes().to_vec();
        len.extend_from_slice(b"abc");
        assert!(describe(&len).contains("length server"));
        assert!(describe(b"hello\x1b[2J").contains("text"));
        assert!(!describe(b"hello\x1b[2J").contains('\x1b'));
    }
}
