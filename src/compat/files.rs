//! Files in the lessons' header format (000 §6.2's header, used for files): per file a
//! `struct.pack("i", len(header))`, the JSON header `{"filename", "total_size", "hash"}`, then
//! `total_size` bytes; several files per connection, EOF after the last. [`receive`] stores
//! them through the files [`Store`] (the same checks, atomic rename and name policy as `recv`);
//! [`send`] sends local files so. The format has no replies, so a refused file is skipped and
//! reported locally, and the connection goes on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::framing::{encode_header, TutorialDecoder, TutorialHeader};
use crate::service::files::store::{blocking, FileMeta, Incoming, RelPath, Store, StoreError};
use crate::service::files::HashAlg;
use crate::text::escape_one_line;
use crate::wire::{Decoded, Limits, WireError, MAX_HEADER_BYTES};

/// Bytes read from the socket or a file at a time.
const CHUNK_BYTES: usize = 256 * 1024;

/// Longest file name shown in a report.
const SHOWN_NAME_CHARS: usize = 200;

/// Permission bits of a received file (the format carries none), within the umask.
const RECEIVED_MODE: u32 = 0o644;

/// How a received file's `hash` was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashCheck {
    /// An MD5 hex digest (32 digits) matched.
    Md5,
    /// A SHA-256 hex digest (64 digits) matched.
    Sha256,
    /// Neither: a placeholder like 000 §6.2's, or another digest; not checked.
    Unchecked,
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Stored under `name` (which differs from the sent one under the rename policy).
    Stored {
        /// The stored name.
        name: String,
        /// Its size.
        size: u64,
        /// How its hash was used.
        check: HashCheck,
    },
    /// Not stored; its bytes were read and dropped.
    Refused {
        /// The sent name (escaped).
        name: String,
        /// Why (escaped).
        reason: String,
    },
}

/// What ends a receiving connection early.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// A header that does not parse, or announces a file over the store's size cap.
    #[error("bad file header: {0}")]
    Wire(#[from] WireError),
    /// The sender closed inside a file.
    #[error("the sender closed the connection inside a file")]
    Closed,
    /// The connection broke.
    #[error("connection error: {0}")]
    Io(io::Error),
}

/// The file being received: into the store, or skipped.
enum Current {
    Storing {
        incoming: Box<Incoming>,
        header: TutorialHeader,
        md5: Md5,
    },
    Skipping {
        name: String,
        reason: String,
    },
}

/// Reads lesson-style files from `stream` until EOF and stores each in `store`, calling
/// `report` once per file.
///
/// # Errors
/// [`ReceiveError`]: a bad header or EOF inside a file end the connection (a partial file is
/// removed, never left under its name).
pub async fn receive<S, F>(
    stream: &mut S,
    store: Arc<Store>,
    mut report: F,
) -> Result<(), ReceiveError>
where
    S: AsyncRead + Unpin,
    F: FnMut(Received),
{
    let mut decoder = TutorialDecoder::with_limits(Limits {
        max_header: MAX_HEADER_BYTES,
        max_body: store.options().max_file_size,
    });
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
    let mut current: Option<Current> = None;
    loop {
        while let Some(step) = decoder.decode(&mut buf)? {
            match step {
                Decoded::Header(header) => current = Some(open(&store, header).await),
                Decoded::Body(chunk) => {
                    current = match current.take() {
                        Some(Current::Storing {
                            mut incoming,
                            header,
                            mut md5,
                        }) => {
                            md5.update(&chunk);
                            let written =
                                blocking(move || incoming.write(&chunk).map(|()| incoming)).await;
                            match written {
                                Ok(incoming) => Some(Current::Storing {
                                    incoming,
                                    header,
                                    md5,
                                }),
                                Err(e) => Some(Current::Skipping {
                                    name: shown(&header.filename),
                                    reason: refusal(&e),
                                }),
                            }
                        }
                        skipping => skipping,
                    };
                }
            }
            if decoder.is_idle() {
                if let Some(done) = current.take() {
                    report(finish(done).await);
                }
            }
        }
        buf.reserve(CHUNK_BYTES);
        let n = stream.read_buf(&mut buf).await.map_err(ReceiveError::Io)?;
        if n == 0 {
            if let Some(Current::Storing { incoming, .. }) = current {
                incoming.discard();
            }
            return match decoder.is_idle() && buf.is_empty() {
                true => Ok(()),
                false => Err(ReceiveError::Closed),
            };
        }
    }
}

/// Starts storing the file `header` announces, or skipping it with the store's reason.
async fn open(store: &Arc<Store>, header: TutorialHeader) -> Current {
    let name = shown(&header.filename);
    let path = match RelPath::parse(&header.filename) {
        Ok(path) => path,
        Err(e) => {
            return Current::Skipping {
                name,
                reason: refusal(&e),
            }
        }
    };
    let meta = FileMeta {
        mode: RECEIVED_MODE,
        mtime: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        mtime_nsec: 0,
    };
    let size = header.total_size;
    let store = store.clone();
    match blocking(move || store.create(&path, size, meta, HashAlg::Sha256, None)).await {
        Ok(incoming) => Current::Storing {
            incoming: Box::new(incoming),
            header,
            md5: Md5::new(),
        },
        Err(e) => Current::Skipping {
            name,
            reason: refusal(&e),
        },
    }
}

/// Checks the hash where it is one sockit knows, and commits or discards.
async fn finish(current: Current) -> Received {
    let (incoming, header, md5) = match current {
        Current::Storing {
            incoming,
            header,
            md5,
        } => (incoming, header, md5),
        Current::Skipping { name, reason } => return Received::Refused { name, reason },
    };
    let declared = header.hash.to_ascii_lowercase();
    let is_hex = |len| declared.len() == len && declared.bytes().all(|b| b.is_ascii_hexdigit());
    let check = match () {
        () if is_hex(64) => HashCheck::Sha256,
        () if is_hex(32) => HashCheck::Md5,
        () => HashCheck::Unchecked,
    };
    let name = shown(&header.filename);
    if check == HashCheck::Md5 {
        let actual = hex::encode(md5.finalize());
        if actual != declared {
            incoming.discard();
            return Received::Refused {
                name,
                reason: format!("its MD5 is {actual}, not the header's {declared}"),
            };
        }
    }
    let committed = blocking(move || {
        let expected = match check {
            HashCheck::Sha256 => declared,
            HashCheck::Md5 | HashCheck::Unchecked => incoming.digest_hex(),
        };
        incoming.commit(&expected)
    })
    .await;
    match committed {
        Ok(stored) => Received::Stored {
            name: stored.name,
            size: stored.size,
            check,
        },
        Err(e) => Received::Refused {
            name,
            reason: refusal(&e),
        },
    }
}

fn shown(name: &str) -> String {
    escape_one_line(name, SHOWN_NAME_CHARS)
}

fn refusal(e: &StoreError) -> String {
    escape_one_line(&e.to_string(), SHOWN_NAME_CHARS * 2)
}

/// What [`send`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A local file cannot be sent (not a regular file, unreadable, no name, changed size).
    #[error("{path}: {reason}")]
    Local {
        /// The local path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The connection broke.
    #[error("connection error: {0}")]
    Io(io::Error),
}

/// One file sent: its name in the header, size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The header's `filename`: the file's own name, no directories.
    pub name: String,
    /// Bytes sent.
    pub size: u64,
    /// The header's `hash`: the SHA-256 hex digest.
    pub sha256: String,
}

/// Sends each of `paths` (regular files) to `stream` in the lessons' header format, with the
/// file's name (no directories) and its SHA-256, then closes the sending side.
///
/// # Errors
/// [`SendError`]: a path that is not a readable regular file is refused before anything of
/// it is sent (files before it have been); a file whose size changed while it was sent ends
/// the connection, since the receiver expects the announced size.
pub async fn send<W: AsyncWrite + Unpin>(
    stream: &mut W,
    paths: &[PathBuf],
) -> Result<Vec<Sent>, SendError> {
    let mut sent = Vec::new();
    for path in paths {
        let local = |reason: String| SendError::Local {
            path: path.clone(),
            reason,
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| local("has no UTF-8 file name".into()))?
            .to_owned();
        let (size, sha256) = digest(path).await.map_err(|e| local(e.to_string()))?;
        let header = TutorialHeader {
            filename: name.clone(),
            total_size: size,
            hash: sha256.clone(),
        };
        let mut head = BytesMut::new();
        encode_header(&header, &mut head).map_err(|e| local(e.to_string()))?;
        stream.write_all(&head).await.map_err(SendError::Io)?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| local(e.to_string()))?;
        let copied = tokio::io::copy(&mut file.take(size), stream)
            .await
            .map_err(SendError::Io)?;
        if copied != size {
            return Err(local(format!(
                "shrank from {size} to {copied} bytes while it was sent"
            )));
        }
        sent.push(Sent { name, size, sha256 });
    }
    stream.shutdown().await.map_err(SendError::Io)?;
    Ok(sent)
}

/// A regular file's size and SHA-256, read on a blocking thread.
async fn digest(path: &Path) -> io::Result<(u64, String)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut hasher = Sha256::new();
        let mut chunk = vec![0u8; CHUNK_BYTES];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                return Ok((size, hex::encode(hasher.finalize())));
            }
            hasher.update(&chunk[..n]);
            size += n as u64;
        }
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::files::store::StoreOptions;

    fn frame(name: &str, body: &[u8], hash: &str) -> Vec<u8> {
        let header = TutorialHeader {
            filename: name.into(),
            total_size: body.len() as u64,
            hash: hash.into(),
        };
        let mut out = BytesMut::new();
        encode_header(&header, &mut out).unwrap();
        out.extend_from_slice(body);
        out.to_vec()
    }

    async fn receive_all(wire: Vec<u8>, dir: &Path) -> (Result<(), ReceiveError>, Vec<Received>) {
        let store = Arc::new(Store::open(dir, StoreOptions::default()).unwrap());
        let mut got = Vec::new();
        let result = receive(&mut &wire[..], store, |r| got.push(r)).await;
        (result, got)
    }

    #[tokio::test]
    async fn several_files_land_with_md5_sha256_or_no_check_and_bad_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut wire = frame("a.txt", b"alpha", &hex::encode(Md5::digest(b"alpha")));
        wire.extend(frame(
            "b.txt",
            b"beta",
            &hex::encode(Sha256::digest(b"beta")).to_uppercase(),
        ));
        wire.extend(frame("c.txt", b"gamma", "xasf123213123"));
        wire.extend(frame(
            "d.txt",
            b"delta",
            &hex::encode(Md5::digest(b"other")),
        ));
        wire.extend(frame("../e.txt", b"escape", ""));
        wire.extend(frame("empty", b"", ""));
        let (result, got) = receive_all(wire, dir.path()).await;
        result.unwrap();
        let checks: Vec<_> = got
            .iter()
            .map(|r| match r {
                Received::Stored { check, .. } => format!("{check:?}"),
                Received::Refused { .. } => "refused".into(),
            })
            .collect();
        assert_eq!(
            checks,
            [
                "Md5",
                "Sha256",
                "Unchecked",
                "refused",
                "refused",
                "Unchecked"
            ]
        );
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(dir.path().join("c.txt")).unwrap(), b"gamma");
        assert!(!dir.path().join("d.txt").exists());
        assert!(!dir.path().parent().unwrap().join("e.txt").exists());
        assert_eq!(std::fs::read(dir.path().join("empty")).unwrap(), b"");
    }

    #[tokio::test]
    async fn a_sender_that_stops_inside_a_file_leaves_nothing_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut wire = frame("cut.bin", b"0123456789", "");
        wire.truncate(wire.len() - 3);
        let (result, got) = receive_all(wire, dir.path()).await;
        assert!(matches!(result, Err(ReceiveError::Closed)), "{result:?}");
        assert!(got.is_empty());
        assert!(!dir.path().join("cut.bin").exists());
    }

    #[tokio::test]
    async fn what_send_writes_receive_stores() {
        let src = tempfile::tempdir().unwrap();
        let (one, two) = (src.path().join("one"), src.path().join("two.txt"));
        std::fs::write(&one, b"first").unwrap();
        std::fs::write(&two, vec![7u8; 300_000]).unwrap();
        let mut wire = Vec::new();
        let sent = send(&mut wire, &[one, two]).await.unwrap();
        assert_eq!(sent[1].size, 300_000);
        let dst = tempfile::tempdir().unwrap();
        let (result, got) = receive_all(wire, dst.path()).await;
        result.unwrap();
        assert!(got.iter().all(|r| matches!(
            r,
            Received::Stored {
                check: HashCheck::Sha256,
                ..
            }
        )));
        assert_eq!(
            std::fs::read(dst.path().join("two.txt")).unwrap(),
            vec![7u8; 300_000]
        );
        let err = send(&mut Vec::new(), &[src.path().to_path_buf()])
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not a regular file") || err.to_string().contains("directory"),
            "{err}"
        );
    }
}
