//! Sans-IO frame codec: a length → header → body state machine over a `BytesMut`, and encoders.

use bytes::{Buf, Bytes, BytesMut};
use serde::de::DeserializeOwned;

use super::header::parse_header;
use super::{Limits, Message, WireError};

pub(crate) const LENGTH_BYTES: usize = 4;

/// One step of decoding: a frame's typed header, or the next chunk of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<M> {
    /// A complete header; if its `body_size` is non-zero, `Body` chunks follow.
    Header(M),
    /// The next non-empty slice of the current body, in order.
    Body(Bytes),
}

/// How the header length is written: wire v1, or the Python tutorials' `struct.pack("i")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LengthPrefix {
    U32BigEndian,
    I32Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length,
    Header { len: usize },
    Body { remaining: u64 },
    Failed,
}

/// Incremental frame decoder; holds no I/O and no buffered data, only the position in a frame.
///
/// Any error is final: the connection must be closed (the format has no resynchronisation),
/// and further calls keep failing.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    state: State,
    limits: Limits,
    prefix: LengthPrefix,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        FrameDecoder::with_limits(Limits::default())
    }

    /// A decoder with the given limits.
    pub(crate) fn with_limits(limits: Limits) -> Self {
        FrameDecoder {
            state: State::Length,
            limits,
            prefix: LengthPrefix::U32BigEndian,
        }
    }

    pub(crate) fn with_prefix(limits: Limits, prefix: LengthPrefix) -> Self {
        FrameDecoder {
            prefix,
            ..FrameDecoder::with_limits(limits)
        }
    }

    /// Replaces the limits, e.g. after authentication; they apply from the next header.
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// True while the current frame's body has bytes left to yield.
    pub(crate) fn in_body(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// True at a frame boundary: nothing of a frame has been consumed yet.
    pub fn is_idle(&self) -> bool {
        self.state == State::Length
    }

    /// Body bytes of the current frame not yet yielded.
    pub(crate) fn body_remaining(&self) -> u64 {
        match self.state {
            State::Body { remaining } => remaining,
            _ => 0,
        }
    }

    /// Decodes the next header or body chunk from the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed. Body chunks are split off `buf` as soon as any
    /// body byte is buffered, so a body is never held whole.
    ///
    /// # Errors
    ///
    /// [`WireError::HeaderTooLarge`] (checked before anything is reserved),
    /// [`WireError::InvalidHeader`], or [`WireError::BodyTooLarge`] (checked right after the
    /// header parses).
    pub fn decode<M: DeserializeOwned + Message>(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Decoded<M>>, WireError> {
        let result = self.step(buf);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Yields the next chunk of the current body, or `None` if not in a body or `buf` is empty.
    pub(crate) fn decode_body(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        let State::Body { remaining } = self.state else {
            return None;
        };
        if buf.is_empty() {
            return None;
        }
        let take = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let chunk = buf.split_to(take).freeze();
        let left = remaining.saturating_sub(u64::try_from(take).unwrap_or(u64::MAX));
        self.state = if left == 0 {
            State::Length
        } else {
            State::Body { remaining: left }
        };
        Some(chunk)
    }

    /// Records that `n` bytes of the current body were taken straight from the stream, past
    /// the buffer (see `Connection::read_body_into`); at most the bytes remaining count.
    pub(crate) fn consume_body(&mut self, n: usize) {
        let State::Body { remaining } = self.state else {
            return;
        };
        let left = remaining.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
        self.state = if left == 0 {
            State::Length
        } else {
            State::Body { remaining: left }
        };
    }

    fn step<M: DeserializeOwned + Message>(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Decoded<M>>, WireError> {
        loop {
            match self.state {
                State::Length => {
                    let Some(prefix) = buf.get(..LENGTH_BYTES) else {
                        return Ok(None);
                    };
                    let len = self.header_len(prefix)?;
                    buf.advance(LENGTH_BYTES);
                    buf.reserve(len.saturating_sub(buf.len()));
                    self.state = State::Header { len };
                }
                State::Header { len } => {
                    let Some(raw) = buf.get(..len) else {
                        return Ok(None);
                    };
                    let msg: M = parse_header(raw)?;
                    buf.advance(len);
                    let size = msg.body_size();
                    if size > self.limits.max_body {
                        return Err(WireError::BodyTooLarge {
                            size,
                            max: self.limits.max_body,
                        });
                    }
                    self.state = if size == 0 {
                        State::Length
                    } else {
                        State::Body { remaining: size }
                    };
                    return Ok(Some(Decoded::Header(msg)));
                }
                State::Body { .. } => return Ok(self.decode_body(buf).map(Decoded::Body)),
                State::Failed => {
                    return Err(WireError::InvalidHeader(
                        "decoder used after an earlier error".into(),
                    ))
                }
            }
        }
    }

    fn header_len(&self, prefix: &[u8]) -> Result<usize, WireError> {
        let mut raw = [0u8; LENGTH_BYTES];
        raw.copy_from_slice(prefix);
        let len = match self.prefix {
            LengthPrefix::U32BigEndian => {
                usize::try_from(u32::from_be_bytes(raw)).unwrap_or(usize::MAX)
            }
            LengthPrefix::I32Native => {
                let signed = i32::from_ne_bytes(raw);
                usize::try_from(signed).map_err(|_| {
                    WireError::InvalidHeader(format!("negative header length {signed}"))
                })?
            }
        };
        if len > self.limits.max_header {
            return Err(WireError::HeaderTooLarge {
                len,
                max: self.limits.max_header,
            });
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use proptest::prelude::*;

    use super::*;
    use crate::wire::test_support::{decode_chunks, encode_all, AnyMsg, Frames, TestMsg};
    use crate::wire::MAX_HEADER_BYTES;

    fn sample_frames() -> Frames<TestMsg> {
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        vec![
            (TestMsg::Ping, Vec::new()),
            (
                TestMsg::Exec {
                    argv: vec!["echo".into(), "hé {\"}".into()],
                    size: 5,
                },
                b"hello".to_vec(),
            ),
            (
                TestMsg::Put {
                    name: "big.bin".into(),
                    size: big.len() as u64,
                },
                big,
            ),
            (TestMsg::Ping, Vec::new()),
        ]
    }

    fn raw_frame(header: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(header.len() as u32);
        buf.extend_from_slice(header);
        buf
    }

    fn decode_raw(header: &str, limits: Limits) -> Result<Option<Decoded<TestMsg>>, WireError> {
        FrameDecoder::with_limits(limits).decode(&mut raw_frame(header.as_bytes()))
    }

    #[test]
    fn frames_split_at_every_byte_boundary_decode_identically() {
        let frames = sample_frames();
        let wire = encode_all(&frames);
        for cut in 0..=wire.len() {
            let mut decoder = FrameDecoder::new();
            let chunks = [wire[..cut].to_vec(), wire[cut..].to_vec()];
            let got = decode_chunks::<TestMsg>(&mut decoder, chunks).expect("decodes");
            assert_eq!(got, frames, "split at {cut}");
            assert!(decoder.is_idle());
        }
    }

    #[test]
    fn frames_fed_byte_by_byte_decode_identically() {
        let frames = sample_frames();
        let wire = encode_all(&frames);
        let mut decoder = FrameDecoder::new();
        let got = decode_chunks::<TestMsg>(&mut decoder, wire.iter().map(|b| vec![*b]));
        assert_eq!(got.expect("decodes"), frames);
    }

    #[test]
    fn body_chunks_never_run_past_the_current_frame() {
        let frames = sample_frames();
        let mut buf = BytesMut::from(&encode_all(&frames)[..]);
        let mut decoder = FrameDecoder::new();
        let mut steps = Vec::new();
        while let Some(step) = decoder.decode::<TestMsg>(&mut buf).expect("decodes") {
            steps.push(step);
        }
        assert_eq!(steps.len(), 6);
        assert_eq!(steps[2], Decoded::Body(Bytes::from_static(b"hello")));
        assert!(matches!(&steps[4], Decoded::Body(b) if b.len() == 20_000));
    }

    proptest! {
        #[test]
        fn random_frames_in_random_chunkings_round_trip(
            raw in prop::collection::vec(
                (
                    any::<String>(),
                    prop::collection::btree_map("x_[a-z]{0,6}", any::<String>(), 0..4),
                    prop::collection::vec(any::<u8>(), 0..4096),
                ),
                1..6,
            ),
            cuts in prop::collection::vec(1usize..700, 1..40),
        ) {
            let frames: Frames<AnyMsg> = raw
                .into_iter()
                .map(|(kind, extra, body)| (AnyMsg { kind, size: body.len() as u64, extra }, body))
                .collect();
            let wire = encode_all(&frames);
            let mut chunks = Vec::new();
            let mut rest = &wire[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (head, tail) = rest.split_at((*cut).min(rest.len()));
                chunks.push(head.to_vec());
                rest = tail;
            }
            let mut decoder = FrameDecoder::new();
            let got = decode_chunks::<AnyMsg>(&mut decoder, chunks).expect("decodes");
            prop_assert_eq!(got, frames);
            prop_assert!(decoder.is_idle());
        }
    }

    #[test]
    fn length_of_u32_max_is_rejected_before_allocation() {
        let mut buf = BytesMut::with_capacity(LENGTH_BYTES);
        buf.put_u32(u32::MAX);
        let capacity = buf.capacity();
        let err = FrameDecoder::new().decode::<TestMsg>(&mut buf);
        assert!(matches!(
            err,
            Err(WireError::HeaderTooLarge {
                max: MAX_HEADER_BYTES,
                ..
            })
        ));
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn header_over_the_limit_is_rejected_and_at_the_limit_is_awaited() {
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        buf.put_u32(MAX_HEADER_BYTES as u32 + 1);
        assert!(matches!(
            decoder.decode::<TestMsg>(&mut buf),
            Err(WireError::HeaderTooLarge { len, .. }) if len == MAX_HEADER_BYTES + 1
        ));
        let mut buf = BytesMut::new();
        buf.put_u32(MAX_HEADER_BYTES as u32);
        let got = FrameDecoder::new().decode::<TestMsg>(&mut buf);
        assert!(matches!(got, Ok(None)));
    }

    #[test]
    fn pre_auth_limit_rejects_headers_over_sixteen_kib() {
        let mut decoder = FrameDecoder::with_limits(Limits::pre_auth());
        let mut buf = BytesMut::new();
        buf.put_u32(16 * 1024 + 1);
        assert!(matches!(
            decoder.decode::<TestMsg>(&mut buf),
            Err(WireError::HeaderTooLarge { max: 16384, .. })
        ));
    }

    #[test]
    fn a_decoder_stays_failed_after_an_error() {
        let mut decoder = FrameDecoder::new();
        let mut buf = raw_frame(b"[1]");
        assert!(decoder.decode::<TestMsg>(&mut buf).is_err());
        buf.extend_from_slice(&encode_all(&sample_frames()));
        assert!(decoder.decode::<TestMsg>(&mut buf).is_err());
    }

    #[test]
    fn hostile_header_contents_are_invalid_headers() {
        let deep = format!(
            r#"{{"type":"ping","a":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let cases = [
            "",
            "{nope",
            "[1]",
            "\"x\"",
            "5",
            &deep,
            r#"{"type":"x","type":"y"}"#,
            r#"{"type":"exec","argv":[],"argv":["rm"],"size":0}"#,
            r#"{"type":"put","name":"a","size":-1}"#,
            r#"{"type":"put","name":"a","size":1e30}"#,
            r#"{"type":"put","name":"a","size":"10"}"#,
            r#"{"type":"nope"}"#,
        ];
        for header in cases {
            let got = decode_raw(header, Limits::default());
            assert!(
                matches!(got, Err(WireError::InvalidHeader(_))),
                "{header:.40}: {got:?}"
            );
        }
        let not_utf8 =
            FrameDecoder::new().decode::<TestMsg>(&mut raw_frame(b"{\"type\":\"\xff\"}"));
        assert!(matches!(not_utf8, Err(WireError::InvalidHeader(_))));
    }

    #[test]
    fn body_size_over_the_cap_is_rejected_after_the_header() {
        let small = Limits {
            max_header: 1024,
            max_body: 10,
        };
        let got = decode_raw(r#"{"type":"put","name":"a","size":11}"#, small);
        assert!(matches!(
            got,
            Err(WireError::BodyTooLarge { size: 11, max: 10 })
        ));
        let max = r#"{"type":"put","name":"a","size":18446744073709551615}"#;
        assert!(matches!(
            decode_raw(max, Limits::default()),
            Err(WireError::BodyTooLarge { size: u64::MAX, .. })
        ));
        let ok = decode_raw(r#"{"type":"put","name":"a","size":10}"#, small);
        assert!(matches!(ok, Ok(Some(Decoded::Header(_)))));
    }
}
