//! Frame encoders: length prefix, JSON header and body appended to a `BytesMut`.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use super::codec::{LengthPrefix, LENGTH_BYTES};
use super::{Message, WireError, MAX_HEADER_BYTES};

/// Appends `msg` as a length-prefixed JSON header to `dst`; the caller appends any body.
///
/// # Errors
///
/// [`WireError::HeaderTooLarge`] if the JSON exceeds [`MAX_HEADER_BYTES`], and
/// [`WireError::InvalidHeader`] if `msg` does not serialize to a JSON object. `dst` is left
/// unchanged on error.
pub(crate) fn encode_header<M: Serialize>(msg: &M, dst: &mut BytesMut) -> Result<(), WireError> {
    encode_with_prefix(msg, dst, LengthPrefix::U32BigEndian)
}

/// Appends a whole frame, header and body, to `dst`.
///
/// # Errors
///
/// [`WireError::BodyLengthMismatch`] unless `body.len() == msg.body_size()`, plus the errors
/// of `encode_header`.
pub fn encode_frame<M: Serialize + Message>(
    msg: &M,
    body: &[u8],
    dst: &mut BytesMut,
) -> Result<(), WireError> {
    check_body_len(msg.body_size(), body.len())?;
    encode_header(msg, dst)?;
    dst.extend_from_slice(body);
    Ok(())
}

pub(crate) fn check_body_len(declared: u64, actual: usize) -> Result<(), WireError> {
    let actual = u64::try_from(actual).unwrap_or(u64::MAX);
    if actual != declared {
        return Err(WireError::BodyLengthMismatch { declared, actual });
    }
    Ok(())
}

pub(crate) fn encode_with_prefix<M: Serialize>(
    msg: &M,
    dst: &mut BytesMut,
    prefix: LengthPrefix,
) -> Result<(), WireError> {
    let start = dst.len();
    dst.put_bytes(0, LENGTH_BYTES);
    let written = serde_json::to_writer((&mut *dst).writer(), msg);
    let json_start = start + LENGTH_BYTES;
    let json_len = dst.len() - json_start;
    let checked = match written {
        Err(e) => Err(WireError::InvalidHeader(format!("cannot serialize: {e}"))),
        Ok(()) if json_len > MAX_HEADER_BYTES => Err(WireError::HeaderTooLarge {
            len: json_len,
            max: MAX_HEADER_BYTES,
        }),
        Ok(()) if dst.get(json_start) != Some(&b'{') => Err(WireError::InvalidHeader(
            "header must serialize to a JSON object".into(),
        )),
        Ok(()) => length_bytes(json_len, prefix),
    };
    match checked {
        Ok(len_bytes) => {
            dst[start..json_start].copy_from_slice(&len_bytes);
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(e)
        }
    }
}

fn length_bytes(len: usize, prefix: LengthPrefix) -> Result<[u8; LENGTH_BYTES], WireError> {
    let too_large = || WireError::HeaderTooLarge {
        len,
        max: MAX_HEADER_BYTES,
    };
    match prefix {
        LengthPrefix::U32BigEndian => {
            Ok(u32::try_from(len).map_err(|_| too_large())?.to_be_bytes())
        }
        LengthPrefix::I32Native => Ok(i32::try_from(len).map_err(|_| too_large())?.to_ne_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_support::TestMsg;

    #[test]
    fn encoding_rejects_a_body_that_does_not_match_its_size() {
        let mut dst = BytesMut::new();
        let msg = TestMsg::Put {
            name: "a".into(),
            size: 3,
        };
        let err = encode_frame(&msg, b"toolong", &mut dst);
        assert!(matches!(
            err,
            Err(WireError::BodyLengthMismatch {
                declared: 3,
                actual: 7
            })
        ));
        assert!(dst.is_empty());
    }

    #[test]
    fn encoding_an_oversized_or_non_object_header_leaves_dst_unchanged() {
        let mut dst = BytesMut::from(&b"keep"[..]);
        let huge = TestMsg::Exec {
            argv: vec!["x".repeat(MAX_HEADER_BYTES)],
            size: 0,
        };
        assert!(matches!(
            encode_header(&huge, &mut dst),
            Err(WireError::HeaderTooLarge { .. })
        ));
        assert!(matches!(
            encode_header(&5u32, &mut dst),
            Err(WireError::InvalidHeader(_))
        ));
        assert_eq!(&dst[..], b"keep");
    }

    #[test]
    fn encoded_header_is_big_endian_length_then_json() {
        let mut dst = BytesMut::new();
        encode_header(&TestMsg::Ping, &mut dst).expect("encodes");
        assert_eq!(&dst[..], b"\0\0\0\x0f{\"type\":\"ping\"}");
    }
}
