//! The Python socket lessons' framing, for compatibility with their clients and servers only.
//!
//! ```text
//! +--------------------------+------------------------------------+------------------------+
//! | header length            | header: JSON object                | body: exactly          |
//! | i32, native-endian       | {"filename": .., "total_size": N,  | `total_size` bytes     |
//! | (`struct.pack("i", n)`)  |  "hash": ..}                       |                        |
//! +--------------------------+------------------------------------+------------------------+
//! ```
//!
//! The decoder shares wire v1's state machine, limits and header checks; only the length
//! prefix and the header type differ.

use bytes::BytesMut;
use serde::{Deserialize, Deserializer, Serialize};

use crate::wire::codec::{Decoded, FrameDecoder, LengthPrefix};
use crate::wire::encode::encode_with_prefix;
use crate::wire::{Limits, Message, WireError};

/// The tutorials' file header. Only `total_size` is required: like the Python clients, missing
/// or `null` `filename` and `hash` read as empty, and unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TutorialHeader {
    /// File name as sent by the peer; untrusted, validate before use.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub filename: String,
    /// Number of body bytes that follow the header.
    pub total_size: u64,
    /// Hex digest of the body as sent by the peer (the lessons use MD5 or SHA-256).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub hash: String,
}

impl Message for TutorialHeader {
    fn body_size(&self) -> u64 {
        self.total_size
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(de).map(Option::unwrap_or_default)
}

/// One decoding step: the header, or the next chunk of its body.
pub(crate) type TutorialDecoded = Decoded<TutorialHeader>;

/// Appends the `struct.pack("i")` length and the JSON header to `dst`; the body follows.
///
/// # Errors
///
/// As [`crate::wire::encode_header`]; `dst` is unchanged on error.
pub(crate) fn encode_header(header: &TutorialHeader, dst: &mut BytesMut) -> Result<(), WireError> {
    encode_with_prefix(header, dst, LengthPrefix::I32Native)
}

/// Incremental decoder for the tutorial framing.
#[derive(Debug, Clone)]
pub(crate) struct TutorialDecoder {
    inner: FrameDecoder,
}

impl Default for TutorialDecoder {
    fn default() -> Self {
        TutorialDecoder::new()
    }
}

impl TutorialDecoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        TutorialDecoder::with_limits(Limits::default())
    }

    /// A decoder with the given limits.
    pub(crate) fn with_limits(limits: Limits) -> Self {
        TutorialDecoder {
            inner: FrameDecoder::with_prefix(limits, LengthPrefix::I32Native),
        }
    }

    /// True at a frame boundary.
    pub fn is_idle(&self) -> bool {
        self.inner.is_idle()
    }

    /// Decodes the next header or body chunk; `Ok(None)` means more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`WireError::InvalidHeader`] for a negative length or a bad header,
    /// [`WireError::HeaderTooLarge`] before any allocation, [`WireError::BodyTooLarge`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<TutorialDecoded>, WireError> {
        self.inner.decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn sample() -> (TutorialHeader, Vec<u8>) {
        let body = b"file contents\n".repeat(100);
        let header = TutorialHeader {
            filename: "notes.txt".into(),
            total_size: body.len() as u64,
            hash: "d41d8cd98f00b204e9800998ecf8427e".into(),
        };
        (header, body)
    }

    fn decode_all(
        chunks: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<Vec<(TutorialHeader, Vec<u8>)>, WireError> {
        let mut decoder = TutorialDecoder::new();
        let mut buf = BytesMut::new();
        let mut out: Vec<(TutorialHeader, Vec<u8>)> = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(&chunk);
            while let Some(step) = decoder.decode(&mut buf)? {
                match step {
                    Decoded::Header(h) => out.push((h, Vec::new())),
                    Decoded::Body(b) => out.last_mut().expect("header first").1.extend(&b),
                }
            }
        }
        assert!(decoder.is_idle() && buf.is_empty());
        Ok(out)
    }

    fn python_frame(header_json: &str, body: &[u8]) -> Vec<u8> {
        let mut out = (header_json.len() as i32).to_ne_bytes().to_vec();
        out.extend_from_slice(header_json.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_tutorial_frame_round_trips() {
        let (header, body) = sample();
        let mut buf = BytesMut::new();
        encode_header(&header, &mut buf).expect("encodes");
        buf.extend_from_slice(&body);
        assert_eq!(
            &buf[..4],
            &(buf.len() as i32 - 4 - body.len() as i32).to_ne_bytes()
        );
        let got = decode_all([buf.to_vec()]).expect("decodes");
        assert_eq!(got, vec![(header, body)]);
    }

    #[test]
    fn a_tutorial_frame_split_anywhere_decodes_identically() {
        let (header, body) = sample();
        let mut wire = BytesMut::new();
        encode_header(&header, &mut wire).expect("encodes");
        wire.extend_from_slice(&body);
        let expected = vec![(header, body)];
        for cut in 0..=wire.len() {
            let got = decode_all([wire[..cut].to_vec(), wire[cut..].to_vec()]).expect("decodes");
            assert_eq!(got, expected, "split at {cut}");
        }
        let bytewise = decode_all(wire.iter().map(|b| vec![*b])).expect("decodes");
        assert_eq!(bytewise, expected);
    }

    #[test]
    fn a_python_style_header_is_read_leniently() {
        let wire = python_frame(
            r#"{"filename": null, "total_size": 3, "extra": [1, 2]}"#,
            b"abc",
        );
        let got = decode_all([wire]).expect("decodes");
        assert_eq!(got[0].0.total_size, 3);
        assert_eq!(got[0].0.filename, "");
        assert_eq!(got[0].1, b"abc");
    }

    #[test]
    fn a_negative_length_is_rejected_before_allocation() {
        let mut buf = BytesMut::with_capacity(4);
        buf.put_slice(&(-1i32).to_ne_bytes());
        let capacity = buf.capacity();
        let err = TutorialDecoder::new().decode(&mut buf);
        assert!(matches!(err, Err(WireError::InvalidHeader(m)) if m.contains("negative")));
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn an_over_limit_length_or_size_is_rejected() {
        let mut buf = BytesMut::from(&i32::MAX.to_ne_bytes()[..]);
        let err = TutorialDecoder::new().decode(&mut buf);
        assert!(matches!(err, Err(WireError::HeaderTooLarge { .. })));
        let limits = Limits {
            max_header: 1024,
            max_body: 2,
        };
        let mut buf = BytesMut::from(&python_frame(r#"{"total_size": 3}"#, b"abc")[..]);
        let err = TutorialDecoder::with_limits(limits).decode(&mut buf);
        assert!(matches!(
            err,
            Err(WireError::BodyTooLarge { size: 3, max: 2 })
        ));
    }

    #[test]
    fn a_header_without_total_size_is_rejected() {
        let mut buf = BytesMut::from(&python_frame(r#"{"filename": "a"}"#, b"")[..]);
        let err = TutorialDecoder::new().decode(&mut buf);
        assert!(matches!(err, Err(WireError::InvalidHeader(m)) if m.contains("total_size")));
    }
}
