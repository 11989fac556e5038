//! The file protocol's typed frames, named by their sender. See the [module docs](super) for
//! the conversations they make up.

use serde::{Deserialize, Serialize};

use super::hash::HashAlg;
use crate::wire::Message;

/// What a directory entry is. Symlinks are listed but never followed or transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (shown by `ls`, skipped by `get`).
    Symlink,
    /// Anything else: a fifo, socket or device (shown by `ls`, skipped by `get`).
    Other,
}

/// One entry of a listing or of a `get` manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Path relative to the listed directory (`ls`) or to the requested path's parent
    /// (`get`), `/`-separated.
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Permission bits (`0o777` at most).
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

/// The header of one file's data: both directions use it (`put` from the client, `get`'s
/// answer from the server). The body holds bytes `offset..size` of the file; an `end` frame
/// with the whole file's digest follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeader {
    /// Relative `/`-separated path, validated by the receiver.
    pub path: String,
    /// The whole file's size in bytes.
    pub size: u64,
    /// Where the body starts: 0, or a prefix length the receiver proved it holds.
    #[serde(default)]
    pub offset: u64,
    /// Permission bits; the receiver keeps `0o777` of them (never setuid, setgid, sticky).
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    #[serde(default)]
    pub mtime_nsec: u32,
    /// The digest the `end` frame carries.
    #[serde(default)]
    pub hash: HashAlg,
}

impl FileHeader {
    /// Body length: the bytes from `offset` to `size` (0 if the header is inconsistent; the
    /// receiver rejects those before reading).
    pub(crate) fn body_len(&self) -> u64 {
        self.size.saturating_sub(self.offset)
    }
}

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Before a large `put`: does the server hold a partial copy to resume from?
    Probe {
        /// The file's path.
        path: String,
        /// Its size.
        size: u64,
        /// The digest the transfer will use (the prefix proof uses it too).
        #[serde(default)]
        hash: HashAlg,
    },
    /// Upload one file: a [`FileHeader`] with its body, then `end`.
    Put(FileHeader),
    /// Closes a `put`: the whole file's digest, hex.
    End {
        /// 64 lowercase hex digits.
        hash: String,
    },
    /// Create a directory (and its missing parents); existing directories are fine.
    Mkdir {
        /// The directory's path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// List one directory level; `""` is the root.
    List {
        /// The directory's path.
        path: String,
    },
    /// Ask what a `get` of this path would fetch: answered with `entries` then `listed`.
    Get {
        /// A file or directory path; `""` is the root.
        path: String,
    },
    /// Fetch one file named by a `get` manifest, optionally resuming.
    Fetch {
        /// The file's path from the root: the requested path's parent joined with the manifest
        /// entry's path.
        path: String,
        /// Bytes the client already holds (0 for none).
        #[serde(default)]
        offset: u64,
        /// The digest of those bytes, hex; the server sends from 0 if it does not match.
        #[serde(default)]
        prefix: Option<String>,
        /// The digest to use.
        #[serde(default)]
        hash: HashAlg,
    },
}

impl Message for ClientMessage {
    fn body_size(&self) -> u64 {
        match self {
            ClientMessage::Put(header) => header.body_len(),
            _ => 0,
        }
    }
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// Answer to `probe`: the prefix the server holds (offset 0 and no digest for none).
    Partial {
        /// The probed path.
        path: String,
        /// Bytes held.
        offset: u64,
        /// Their digest, hex.
        #[serde(default)]
        prefix: Option<String>,
        /// Under the refuse policy, when a file of the probed size already holds the name: its
        /// digest, hex. The client skips its file if it has the same digest (`unchanged`) and
        /// reports the conflict without sending anything if not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        existing: Option<String>,
    },
    /// A `put` (or `mkdir`) landed: verified, synced and renamed into place.
    Stored {
        /// The path the client sent.
        path: String,
        /// The path it was stored under (differs with the rename policy).
        name: String,
        /// Its size.
        size: u64,
        /// The name already held these very bytes: nothing was written (not a conflict).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unchanged: bool,
    },
    /// One request was refused or failed; the connection carries on.
    Rejected {
        /// The path the request named.
        path: String,
        /// Machine-readable snake_case code, e.g. `exists`, `hash_mismatch`.
        code: String,
        /// Human-readable sentence naming the file.
        message: String,
    },
    /// Some entries of a listing or manifest (batched to keep headers small).
    Entries {
        /// The entries.
        entries: Vec<Entry>,
    },
    /// Ends a listing or manifest.
    Listed {
        /// How many entries were sent in all.
        count: u64,
    },
    /// One file's data in answer to `fetch`: a [`FileHeader`] with its body, then `end`.
    File(FileHeader),
    /// Closes a `file`: the whole file's digest, hex.
    End {
        /// 64 lowercase hex digits.
        hash: String,
    },
    /// A fatal error: the server closes after it.
    Error {
        /// Machine-readable snake_case code.
        code: String,
        /// Human-readable sentence.
        message: String,
    },
}

impl Message for ServerMessage {
    fn body_size(&self) -> u64 {
        match self {
            ServerMessage::File(header) => header.body_len(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FileHeader {
        FileHeader {
            path: "a/b.txt".into(),
            size: 10,
            offset: 4,
            mode: 0o644,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            hash: HashAlg::Blake3,
        }
    }

    #[test]
    fn put_carries_the_file_header_inline() {
        let put = ClientMessage::Put(header());
        let json = serde_json::to_string(&put).unwrap();
        assert_eq!(
            json,
            r#"{"type":"put","path":"a/b.txt","size":10,"offset":4,"mode":420,"mtime":1700000000,"mtime_nsec":5,"hash":"blake3"}"#
        );
        assert_eq!(serde_json::from_str::<ClientMessage>(&json).unwrap(), put);
        assert_eq!(put.body_size(), 6);
    }

    #[test]
    fn unknown_fields_and_bad_sizes_are_rejected() {
        for bad in [
            r#"{"type":"put","path":"x","size":1,"mode":420,"mtime":0,"owner":"root"}"#,
            r#"{"type":"put","path":"x","size":-1,"mode":420,"mtime":0}"#,
            r#"{"type":"put","path":"x","size":1e30,"mode":420,"mtime":0}"#,
            r#"{"type":"put","path":"x","size":"10","mode":420,"mtime":0}"#,
            r#"{"type":"put","path":"x","size":18446744073709551616,"mode":420,"mtime":0}"#,
            r#"{"type":"list"}"#,
        ] {
            assert!(serde_json::from_str::<ClientMessage>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_frames_serialize_with_their_type_tag() {
        let file = ServerMessage::File(header());
        let json = serde_json::to_string(&file).unwrap();
        assert!(
            json.starts_with(r#"{"type":"file","path":"a/b.txt""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ServerMessage>(&json).unwrap(), file);
        let entries = ServerMessage::Entries {
            entries: vec![Entry {
                path: "d".into(),
                kind: Kind::Dir,
                size: 0,
                mode: 0o755,
                mtime: 0,
            }],
        };
        assert_eq!(
            serde_json::to_string(&entries).unwrap(),
            r#"{"type":"entries","entries":[{"path":"d","kind":"dir","size":0,"mode":493,"mtime":0}]}"#
        );
    }
}
