//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz), also called by
//! `tests/fuzz_regressions.rs` to replay their seed corpora and the crashes once found. Each
//! takes arbitrary bytes, must never panic on them, and asserts the property its target checks.
//! Not part of the library's API.

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::compat::framing::TutorialDecoder;
use crate::service::files::RelPath;
use crate::wire::{Decoded, FrameDecoder, Message};

/// Feeds `data` to a decoder in chunks of a size picked from `seed`, the way reads arrive.
fn chunks(seed: u8, data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut step = usize::from(seed % 19) + 1;
    let mut pos = 0;
    std::iter::from_fn(move || {
        (pos < data.len()).then(|| {
            let end = (pos + step).min(data.len());
            let chunk = &data[pos..end];
            pos = end;
            step = (step * 7 + 3) % 37 + 1;
            chunk
        })
    })
}

/// The wire-v1 frame decoder, with exec's request headers: it never panics, never yields
/// more body bytes than a header declared, and stops at the first error.
pub fn frame_decoder(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut body_left = 0u64;
    for chunk in chunks(seed, data) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode::<crate::service::exec::ClientMessage>(&mut buf) {
                Ok(Some(Decoded::Header(header))) => {
                    assert_eq!(body_left, 0, "a header inside a body");
                    body_left = header.body_size();
                }
                Ok(Some(Decoded::Body(bytes))) => {
                    let len = bytes.len() as u64;
                    assert!(
                        len > 0 && len <= body_left,
                        "{len} body bytes, {body_left} left"
                    );
                    body_left -= len;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// The lessons' frame decoder (native-endian `i32` length, JSON header): never panics.
pub fn compat_framing(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let mut decoder = TutorialDecoder::new();
    let mut buf = BytesMut::new();
    for chunk in chunks(seed, data) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// The compat clients' reply decoder, every dialect (the first byte picks it and the chunk
/// sizes), with pauses between chunks: never panics, and never yields more output than
/// bytes came in.
pub fn compat_reply(data: &[u8]) {
    use crate::compat::reply::{Pause, ReplyDecoder, Step};
    use crate::compat::Dialect;
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let dialect = Dialect::ALL[usize::from(seed) % Dialect::ALL.len()];
    let mut decoder = ReplyDecoder::new(dialect, 1 << 20);
    let mut buf = BytesMut::new();
    let (mut fed, mut out) = (0usize, 0usize);
    let chunks = chunks(seed / 5, data).map(Some).chain([None]);
    for (i, chunk) in chunks.enumerate() {
        let pause = match chunk {
            Some(c) => {
                buf.extend_from_slice(c);
                fed += c.len();
                (seed & 0x80 != 0 && i % 3 == 2).then_some(Pause::Quiet)
            }
            None => Some(Pause::Eof),
        };
        for pause in [None, pause] {
            loop {
                let step = match pause {
                    Some(p) => decoder.pause(&mut buf, p),
                    None => decoder.decode(&mut buf),
                };
                match step {
                    Ok(Some(Step::Body(b))) => {
                        out += b.len();
                        assert!(out <= fed, "{out} output bytes from {fed}");
                    }
                    Ok(Some(Step::SendAck)) => {}
                    Ok(Some(Step::Done(_))) | Err(_) => return,
                    Ok(None) => break,
                }
            }
        }
    }
}

/// One header type: what parses serializes and parses back to the same JSON.
fn round_trip<M: DeserializeOwned + Serialize>(data: &[u8]) {
    if let Ok(message) = serde_json::from_slice::<M>(data) {
        // Catch-all variants (`#[serde(other)]`) parse but are never sent.
        let Ok(json) = serde_json::to_vec(&message) else {
            return;
        };
        let again: M = serde_json::from_slice(&json).expect("a serialized header parses");
        let again = serde_json::to_vec(&again).expect("and serializes again");
        assert_eq!(json, again, "a header changed in a round trip");
    }
}

/// Every header type's parser (hello, error, auth, and each service's requests and
/// replies): never panics, and what parses round-trips.
pub fn headers(data: &[u8]) {
    round_trip::<crate::wire::Hello>(data);
    round_trip::<crate::wire::ErrorFrame>(data);
    round_trip::<crate::session::auth::ClientMessage>(data);
    round_trip::<crate::session::auth::ServerMessage>(data);
    round_trip::<crate::service::exec::ClientMessage>(data);
    round_trip::<crate::service::exec::ServerMessage>(data);
    round_trip::<crate::service::files::ClientMessage>(data);
    round_trip::<crate::service::files::ServerMessage>(data);
    round_trip::<crate::service::chat::ClientMessage>(data);
    round_trip::<crate::service::chat::ServerMessage>(data);
    round_trip::<crate::compat::framing::TutorialHeader>(data);
}

/// The chat line parser (a line typed on `nc`): never panics.
pub fn chat_line(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let _ = crate::service::chat::parse_line(&line);
}

/// Whether `c` may reach a terminal from peer text: no control (but newline and tab where
/// `lines` allows them), bidi control or invisible character.
fn shown_safely(c: char, lines: bool) -> bool {
    if c.is_control() {
        return lines && (c == '\n' || c == '\t');
    }
    !crate::text::is_hidden_format(c)
}

/// The text escapers, for a terminal (chunked, as a stream arrives) and for one log line:
/// their output never holds a control, bidi or invisible character.
pub fn escaper(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let mut escaper = crate::text::TerminalEscaper::default();
    let mut shown = String::new();
    for chunk in chunks(seed, data) {
        shown.push_str(&escaper.push(chunk));
    }
    shown.push_str(&escaper.finish());
    assert!(shown.chars().all(|c| shown_safely(c, true)), "{shown:?}");
    let line = crate::text::escape_one_line(&String::from_utf8_lossy(data), 4096);
    assert!(line.chars().all(|c| shown_safely(c, false)), "{line:?}");
}

/// The file store's path validator: an accepted path never has an empty, `.`, `..` or
/// absolute component, nor a NUL or a backslash.
pub fn rel_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = RelPath::parse(text) {
        assert!(!text.starts_with('/'), "{text:?}");
        for part in path.parts() {
            assert!(!part.is_empty() && part != "." && part != "..", "{text:?}");
            assert!(!part.contains(['\0', '\\', '/']), "{text:?}");
        }
    }
}

/// The HTTP service's request path decoder and `Range` reader. The first byte is split: its
/// low bit is `--show-hidden`, the rest picks the file size a range is read against; then the
/// bytes up to the first newline are the path, the rest the `Range` header. An accepted path
/// is only plain names below the root (no `.`, `..`, empty, separator or NUL component, and
/// no hidden one without `--show-hidden`); a range is inside the file.
pub fn http_request(data: &[u8]) {
    use crate::service::http::{fuzz_decode_path, one_range, RangeAsk};

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let show_hidden = first & 1 == 1;
    let (path, range) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    if let Ok(path) = std::str::from_utf8(path) {
        if let Ok(parts) = fuzz_decode_path(path, show_hidden) {
            for part in &parts {
                assert!(
                    !part.is_empty() && part != "." && part != "..",
                    "{path:?} gave the component {part:?}"
                );
                assert!(
                    !part.contains(['/', '\\', '\0']),
                    "{path:?} gave the component {part:?}"
                );
                assert!(
                    show_hidden || !part.starts_with('.'),
                    "{path:?} gave the hidden component {part:?}"
                );
            }
        }
    }
    if let Ok(range) = std::str::from_utf8(range) {
        let size = u64::from(first >> 1) * 4099;
        if let RangeAsk::One(start, end) = one_range(range, size) {
            assert!(
                start <= end && end < size,
                "{range:?} of {size} gave {start}-{end}"
            );
        }
    }
}
