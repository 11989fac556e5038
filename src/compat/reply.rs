//! Reading one reply in any dialect, sans-IO: the client feeds the bytes it read and says when
//! the server went quiet or closed; the decoder hands back output chunks, when to send the
//! acknowledgement, and the end of the reply.
//!
//! Two dialects have no length to end the reply on its own. `raw` ends where the server closes
//! or goes quiet. `length-text` glues the digits of the length to the output, so an output
//! that starts with a digit leaves the digits' end open: with `k` digits taken as the length
//! `N`, the reply is `k + N` bytes long, and since each further digit multiplies `N` by ten at
//! least, at most one `k` fits the number of bytes that arrived before the server went quiet.
//! The longest run of digits is the usual answer, and is taken as soon as more bytes have
//! arrived than any shorter reading allows.

use bytes::{Bytes, BytesMut};

use super::dialect::{describe, Dialect, MAX_LENGTH_DIGITS};
use super::framing::{TutorialDecoder, TutorialHeader};
use crate::wire::{Decoded, Limits, WireError, MAX_HEADER_BYTES};

/// Most bytes held back while a `length-text` reply's digits are ambiguous; past it the
/// longest run of digits is taken (the shorter readings would need an output of 80 MiB or
/// more that begins with digits).
pub(crate) const MAX_GLUED_HOLD_BYTES: usize = 8 * 1024 * 1024;

/// What the decoder asks of the client next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The next piece of the output.
    Body(Bytes),
    /// Send [`super::dialect::ACK`] now: the server waits for it before the output.
    SendAck,
    /// The reply is complete (with its header, in `struct-json`).
    Done(Option<TutorialHeader>),
}

/// Why no more bytes are coming for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Nothing arrived for a while; the server may be done.
    Quiet,
    /// The server closed its side.
    Eof,
}

/// A reply that cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplyError {
    /// The server closed before the reply was complete.
    #[error("the server closed the connection before the whole reply")]
    Closed,
    /// The bytes are not a reply in this dialect; `got` describes them.
    #[error("got {got}")]
    Mismatch {
        /// What the bytes look like.
        got: String,
    },
    /// The announced output is over the client's cap.
    #[error("the reply announces {size} bytes, over the limit of {max}")]
    TooLarge {
        /// The announced size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// A `struct-json` header that does not parse.
    #[error(transparent)]
    Wire(WireError),
}

#[derive(Debug)]
enum State {
    /// Before the first byte (`struct-json`: before its header).
    Start,
    /// `length-text`: digits seen, their end not known yet.
    Glued,
    /// `left` bytes of output to come.
    Body { left: u64 },
    /// `raw`: everything is output; `seen` once a byte came.
    Raw { seen: bool },
    /// `struct-json` after its header.
    Json(Option<TutorialHeader>),
    /// The reply is complete.
    Finished(Option<TutorialHeader>),
}

/// Decodes one reply; a new one per command.
#[derive(Debug)]
pub(crate) struct ReplyDecoder {
    dialect: Dialect,
    state: State,
    json: TutorialDecoder,
    max_body: u64,
}

impl ReplyDecoder {
    /// A decoder for one reply in `dialect`, whose output may be up to `max_body` bytes.
    pub(crate) fn new(dialect: Dialect, max_body: u64) -> Self {
        let state = match dialect {
            Dialect::Raw => State::Raw { seen: false },
            _ => State::Start,
        };
        ReplyDecoder {
            dialect,
            state,
            json: TutorialDecoder::with_limits(Limits {
                max_header: MAX_HEADER_BYTES,
                max_body,
            }),
            max_body,
        }
    }

    /// Whether the decoder needs to hear of a quiet server ([`Pause::Quiet`]) to finish.
    pub(crate) fn waits_for_quiet(&self) -> bool {
        matches!(self.state, State::Raw { .. } | State::Glued)
    }

    /// Whether the reply has begun, for a timeout's message.
    pub(crate) fn started(&self) -> bool {
        !matches!(self.state, State::Start | State::Raw { seen: false })
    }

    /// The next step from `buf`, consuming what it used; `Ok(None)` means more bytes are
    /// needed (or a pause, see [`Self::waits_for_quiet`]).
    ///
    /// # Errors
    /// [`ReplyError`] for bytes that are not this dialect or announce too much.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Step>, ReplyError> {
        match &mut self.state {
            State::Finished(header) => Ok(Some(Step::Done(header.take()))),
            State::Raw { seen } => {
                if buf.is_empty() {
                    return Ok(None);
                }
                *seen = true;
                Ok(Some(Step::Body(buf.split().freeze())))
            }
            State::Body { left } => {
                if *left == 0 {
                    self.state = State::Finished(None);
                    return self.decode(buf);
                }
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::Finished(None);
                }
                Ok(Some(Step::Body(buf.split_to(take).freeze())))
            }
            State::Json(_) | State::Start if self.dialect == Dialect::StructJson => {
                self.decode_json(buf)
            }
            State::Start => self.decode_start(buf),
            State::Glued => self.decode_glued(buf, None),
            State::Json(_) => impossible_state(),
        }
    }

    /// The next step now that no more bytes are coming for a while (`pause`).
    ///
    /// # Errors
    /// [`ReplyError::Closed`] at EOF inside a reply (or before it, but in `raw`).
    pub(crate) fn pause(
        &mut self,
        buf: &mut BytesMut,
        pause: Pause,
    ) -> Result<Option<Step>, ReplyError> {
        match (&self.state, pause) {
            (State::Raw { .. }, Pause::Eof) | (State::Raw { seen: true }, Pause::Quiet) => {
                self.state = State::Finished(None);
                Ok(Some(Step::Done(None)))
            }
            (State::Glued, _) => self.decode_glued(buf, Some(pause)),
            (State::Finished(_), _) => self.decode(buf),
            (_, Pause::Quiet) => Ok(None),
            (_, Pause::Eof) => Err(ReplyError::Closed),
        }
    }

    /// The length at the start of a `length`, `length-text` or `length-text-ack` reply.
    fn decode_start(&mut self, buf: &mut BytesMut) -> Result<Option<Step>, ReplyError> {
        match self.dialect {
            Dialect::Length => {
                let Some(prefix) = buf.get(..4) else {
                    return Ok(None);
                };
                let len = i32::from_ne_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                let Ok(len) = u64::try_from(len) else {
                    return Err(self.mismatch(buf));
                };
                self.start_body(len)?;
                let _ = buf.split_to(4);
                self.decode(buf)
            }
            Dialect::LengthTextAck => {
                // The lesson's client takes one read as the length; the server sends nothing
                // more until it has the ack, so a read holds the whole length.
                let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
                if buf.is_empty() {
                    return Ok(None);
                }
                if digits != buf.len() || digits > MAX_LENGTH_DIGITS {
                    return Err(self.mismatch(buf));
                }
                let len = parse_digits(buf).ok_or_else(|| self.mismatch(buf))?;
                self.start_body(len)?;
                buf.clear();
                Ok(Some(Step::SendAck))
            }
            Dialect::LengthText => {
                match buf.first() {
                    None => return Ok(None),
                    Some(b) if !b.is_ascii_digit() => return Err(self.mismatch(buf)),
                    Some(_) => {}
                }
                self.state = State::Glued;
                self.decode_glued(buf, None)
            }
            Dialect::Raw | Dialect::StructJson => impossible_state(),
        }
    }

    /// Resolves where a `length-text` reply's digits end (the module docs say how).
    fn decode_glued(
        &mut self,
        buf: &mut BytesMut,
        pause: Option<Pause>,
    ) -> Result<Option<Step>, ReplyError> {
        let run = buf.iter().take_while(|b| b.is_ascii_digit()).count();
        let digits = run.min(MAX_LENGTH_DIGITS);
        if run > MAX_LENGTH_DIGITS {
            return Err(self.mismatch(buf));
        }
        // The reading with k digits: its length and where the reply would end.
        let reading = |k: usize| parse_digits(&buf[..k]).map(|n| (n, n.saturating_add(k as u64)));
        // A length never has a leading zero, so "0" is a whole (empty) reply.
        let leading_zero = buf.first() == Some(&b'0');
        let candidates = if leading_zero { 1 } else { digits };
        let received = buf.len() as u64;
        let chosen = if let Some(pause) = pause {
            let fits =
                (1..=candidates).find(|&k| reading(k).is_some_and(|(_, end)| end == received));
            match (fits, pause) {
                (Some(k), _) => Some(k),
                (None, Pause::Quiet) => None,
                (None, Pause::Eof) => return Err(ReplyError::Closed),
            }
        } else {
            let run_is_final = run < buf.len() || leading_zero;
            let shorter_end = match candidates {
                1 => 0,
                k => reading(k - 1).map_or(u64::MAX, |(_, end)| end),
            };
            let longest =
                run_is_final && (received > shorter_end || buf.len() >= MAX_GLUED_HOLD_BYTES);
            longest.then_some(candidates)
        };
        let Some(k) = chosen else {
            return Ok(None);
        };
        let (len, _) = reading(k).ok_or_else(|| self.mismatch(buf))?;
        self.start_body(len)?;
        let _ = buf.split_to(k);
        self.decode(buf)
    }

    /// A `struct-json` reply: [`TutorialDecoder`] steps.
    fn decode_json(&mut self, buf: &mut BytesMut) -> Result<Option<Step>, ReplyError> {
        loop {
            let step = match self.json.decode(buf) {
                Ok(step) => step,
                Err(WireError::HeaderTooLarge { .. } | WireError::InvalidHeader(_))
                    if matches!(self.state, State::Start) =>
                {
                    return Err(self.mismatch(buf));
                }
                Err(WireError::BodyTooLarge { size, max }) => {
                    return Err(ReplyError::TooLarge { size, max })
                }
                Err(e) => return Err(ReplyError::Wire(e)),
            };
            match step {
                Some(Decoded::Header(header)) => self.state = State::Json(Some(header)),
                Some(Decoded::Body(chunk)) => return Ok(Some(Step::Body(chunk))),
                None => {
                    if let (true, State::Json(header)) = (self.json.is_idle(), &mut self.state) {
                        self.state = State::Finished(header.take());
                        return self.decode(buf);
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn start_body(&mut self, len: u64) -> Result<(), ReplyError> {
        if len > self.max_body {
            return Err(ReplyError::TooLarge {
                size: len,
                max: self.max_body,
            });
        }
        self.state = State::Body { left: len };
        Ok(())
    }

    fn mismatch(&self, buf: &[u8]) -> ReplyError {
        ReplyError::Mismatch { got: describe(buf) }
    }
}

/// Decimal digits as a `u64`; `None` when empty or too large.
fn parse_digits(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A state its dialect never enters (`raw` and `struct-json` never reach the length
/// decoders); an error rather than a panic.
fn impossible_state() -> Result<Option<Step>, ReplyError> {
    Err(ReplyError::Mismatch {
        got: "a state this dialect has not".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` then `pause`; returns the output and whether the reply completed.
    fn feed(dialect: Dialect, chunks: &[&[u8]], pause: Pause) -> Result<(Vec<u8>, bool), String> {
        let mut decoder = ReplyDecoder::new(dialect, 1 << 20);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let inputs = chunks.iter().map(|c| Some(*c)).chain([None]);
        for input in inputs {
            if let Some(chunk) = input {
                buf.extend_from_slice(chunk);
            }
            loop {
                let step = match input {
                    Some(_) => decoder.decode(&mut buf),
                    None => decoder.pause(&mut buf, pause),
                };
                match step.map_err(|e| e.to_string())? {
                    Some(Step::Body(b)) => out.extend_from_slice(&b),
                    Some(Step::SendAck) => {}
                    Some(Step::Done(_)) => return Ok((out, true)),
                    None => break,
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn a_glued_reply_whose_output_starts_with_a_letter_ends_without_a_pause() {
        let (out, done) =
            feed(Dialect::LengthText, &[b"12", b"hello world!"], Pause::Quiet).unwrap();
        assert_eq!((out.as_slice(), done), (&b"hello world!"[..], true));
    }

    #[test]
    fn a_glued_reply_whose_output_starts_with_digits_is_told_by_its_length() {
        // "4" + "123\n": reading "4123" would need 4127 bytes.
        let (out, done) = feed(Dialect::LengthText, &[b"4123\n"], Pause::Quiet).unwrap();
        assert_eq!((out.as_slice(), done), (&b"123\n"[..], true));
        // "17" is "1" + "7", whole at a pause.
        let (out, done) = feed(Dialect::LengthText, &[b"1", b"7"], Pause::Eof).unwrap();
        assert_eq!((out.as_slice(), done), (&b"7"[..], true));
        // "0" alone is an empty reply at once.
        let (out, done) = feed(Dialect::LengthText, &[b"0"], Pause::Quiet).unwrap();
        assert_eq!((out.as_slice(), done), (&b""[..], true));
    }

    #[test]
    fn a_glued_reply_still_arriving_waits_and_eof_inside_it_is_an_error() {
        let (_, done) = feed(Dialect::LengthText, &[b"12hel"], Pause::Quiet).unwrap();
        assert!(!done);
        assert!(feed(Dialect::LengthText, &[b"12hel"], Pause::Eof).is_err());
    }

    #[test]
    fn the_ack_dialect_asks_for_the_ack_and_refuses_glued_bytes() {
        let mut decoder = ReplyDecoder::new(Dialect::LengthTextAck, 100);
        let mut buf = BytesMut::from(&b"5"[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Step::SendAck));
        buf.extend_from_slice(b"hello");
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Step::Body(Bytes::from_static(b"hello")))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Step::Done(None)));
        let err = feed(Dialect::LengthTextAck, &[b"5hello"], Pause::Quiet).unwrap_err();
        assert!(err.contains("length-text server"), "{err}");
    }

    #[test]
    fn a_binary_length_reply_split_anywhere_decodes_identically() {
        let mut wire = 5i32.to_ne_bytes().to_vec();
        wire.extend_from_slice(b"hello");
        for cut in 0..=wire.len() {
            let (out, done) =
                feed(Dialect::Length, &[&wire[..cut], &wire[cut..]], Pause::Quiet).unwrap();
            assert_eq!(
                (out.as_slice(), done),
                (&b"hello"[..], true),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_negative_or_oversized_length_is_refused_before_any_output() {
        let err = feed(Dialect::Length, &[&(-1i32).to_ne_bytes()], Pause::Quiet).unwrap_err();
        assert!(err.starts_with("got"), "{err}");
        let err = feed(
            Dialect::Length,
            &[&(2_000_000i32).to_ne_bytes()],
            Pause::Quiet,
        )
        .unwrap_err();
        assert!(err.contains("over the limit"), "{err}");
        let err = feed(
            Dialect::LengthTextAck,
            &[b"99999999999999999999999"],
            Pause::Quiet,
        )
        .unwrap_err();
        assert!(err.starts_with("got"), "{err}");
    }

    #[test]
    fn raw_ends_at_a_pause_after_output_or_at_eof() {
        let (out, done) = feed(Dialect::Raw, &[b"a", b"b"], Pause::Quiet).unwrap();
        assert_eq!((out.as_slice(), done), (&b"ab"[..], true));
        assert_eq!(
            feed(Dialect::Raw, &[], Pause::Quiet).unwrap(),
            (Vec::new(), false)
        );
        assert_eq!(
            feed(Dialect::Raw, &[], Pause::Eof).unwrap(),
            (Vec::new(), true)
        );
    }

    #[test]
    fn struct_json_gives_its_header_at_the_end_and_names_another_dialect() {
        let mut decoder = ReplyDecoder::new(Dialect::StructJson, 100);
        let json = br#"{"filename": "ls", "total_size": 2, "hash": ""}"#;
        let mut buf = BytesMut::from(&(json.len() as i32).to_ne_bytes()[..]);
        buf.extend_from_slice(json);
        buf.extend_from_slice(b"hi");
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Step::Body(Bytes::from_static(b"hi")))
        );
        match decoder.decode(&mut buf).unwrap() {
            Some(Step::Done(Some(h))) => assert_eq!(h.filename, "ls"),
            other => panic!("{other:?}"),
        }
        let err = feed(
            Dialect::StructJson,
            &[b"12hello, this is text\n"],
            Pause::Quiet,
        )
        .unwrap_err();
        assert!(err.contains("length-text"), "{err}");
    }
}
