//! Message types and helpers shared by the wire module's unit tests.

use std::collections::BTreeMap;

use bytes::BytesMut;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{duplex, AsyncWriteExt, DuplexStream};

use super::{encode_frame, Connection, Decoded, FrameDecoder, Message, WireError};

/// A service-like message enum: one header-only variant, two with bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum TestMsg {
    Ping,
    Exec { argv: Vec<String>, size: u64 },
    Put { name: String, size: u64 },
}

impl Message for TestMsg {
    fn body_size(&self) -> u64 {
        match self {
            TestMsg::Ping => 0,
            TestMsg::Exec { size, .. } | TestMsg::Put { size, .. } => *size,
        }
    }
}

/// A header with any `type` string and arbitrary extra fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AnyMsg {
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

impl Message for AnyMsg {
    fn body_size(&self) -> u64 {
        self.size
    }
}

pub(crate) type Frames<M> = Vec<(M, Vec<u8>)>;

/// Feeds `chunks` one at a time, decoding everything decodable after each.
pub(crate) fn decode_chunks<M: DeserializeOwned + Message>(
    decoder: &mut FrameDecoder,
    chunks: impl IntoIterator<Item = Vec<u8>>,
) -> Result<Frames<M>, WireError> {
    let mut buf = BytesMut::new();
    let mut frames: Frames<M> = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(&chunk);
        while let Some(step) = decoder.decode::<M>(&mut buf)? {
            match step {
                Decoded::Header(m) => frames.push((m, Vec::new())),
                Decoded::Body(b) => {
                    assert!(!b.is_empty());
                    frames.last_mut().expect("body after header").1.extend(&b);
                }
            }
        }
    }
    assert!(buf.is_empty());
    Ok(frames)
}

pub(crate) fn encode_all<M: Serialize + Message>(frames: &Frames<M>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for (msg, body) in frames {
        encode_frame(msg, body, &mut buf).expect("encodes");
    }
    buf.to_vec()
}

/// A `put` header announcing `size` body bytes.
pub(crate) fn put(size: u64) -> TestMsg {
    TestMsg::Put {
        name: "f".into(),
        size,
    }
}

/// One encoded frame.
pub(crate) fn encoded(msg: &TestMsg, body: &[u8]) -> Vec<u8> {
    encode_all(&vec![(msg.clone(), body.to_vec())])
}

/// A connection that reads `bytes` and then EOF.
pub(crate) async fn reader_of(bytes: Vec<u8>) -> Connection<DuplexStream> {
    let (mut writer, reader) = duplex(64 * 1024);
    writer.write_all(&bytes).await.expect("write");
    drop(writer);
    Connection::new(reader)
}

/// The rest of the current body, concatenated.
pub(crate) async fn read_body(conn: &mut Connection<DuplexStream>) -> Result<Vec<u8>, WireError> {
    let mut body = Vec::new();
    while let Some(chunk) = conn.read_body_chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
