//! Reading small files ahead of the connection: one blocking thread opens, reads and hashes
//! the small files of a `put` in sending order while the async side sends the ones already
//! read, so a tree of many small files costs neither a thread hop per file nor a wait on the
//! disk between two files.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use tokio::sync::mpsc;

use super::super::hash::{HashAlg, Hasher};
use super::super::local::{local_meta, LocalMeta};
use super::walk::Item;

/// Files up to this size (as the walk saw them) are read whole ahead of sending; larger
/// ones stream in chunks and, from `RESUME_PROBE_MIN_BYTES`, probe for a partial copy.
pub(super) const READ_AHEAD_FILE_MAX_BYTES: u64 = 256 * 1024;

/// Most small files read and waiting to be sent (so at most this many times
/// [`READ_AHEAD_FILE_MAX_BYTES`] held in memory).
const READ_AHEAD_FILES: usize = 64;

/// A small file read whole.
#[derive(Debug)]
pub(super) struct SmallFile {
    pub meta: LocalMeta,
    pub data: Vec<u8>,
    /// The digest of `data`, hex.
    pub digest: String,
}

/// What reading ahead made of one small file.
#[derive(Debug)]
pub(super) enum Prepared {
    /// Read whole.
    Read(SmallFile),
    /// It grew past [`READ_AHEAD_FILE_MAX_BYTES`] since the walk: send it the streaming way.
    Grown,
    /// It could not be opened or read.
    Failed(io::Error),
}

/// The small files of a `put`, read ahead in order on a blocking thread.
#[derive(Debug)]
pub(super) struct ReadAhead {
    files: mpsc::Receiver<(usize, Prepared)>,
}

/// Whether `item` is sent from what [`ReadAhead`] read.
pub(super) fn is_small(item: &Item) -> bool {
    matches!(item, Item::File { size, .. } if *size <= READ_AHEAD_FILE_MAX_BYTES)
}

impl ReadAhead {
    /// Starts reading the small files among `items`, hashing with `alg`. The thread stops
    /// when they are all read or when this is dropped.
    pub(super) fn start(items: &[Item], alg: HashAlg) -> ReadAhead {
        let small: Vec<(usize, PathBuf)> = items
            .iter()
            .enumerate()
            .filter(|(_, item)| is_small(item))
            .filter_map(|(index, item)| match item {
                Item::File { local, .. } => Some((index, local.clone())),
                _ => None,
            })
            .collect();
        let (tx, files) = mpsc::channel(READ_AHEAD_FILES);
        tokio::task::spawn_blocking(move || {
            for (index, path) in small {
                let prepared = match read_small(&path, alg) {
                    Ok(Some(file)) => Prepared::Read(file),
                    Ok(None) => Prepared::Grown,
                    Err(e) => Prepared::Failed(e),
                };
                if tx.blocking_send((index, prepared)).is_err() {
                    return; // the sender stopped
                }
            }
        });
        ReadAhead { files }
    }

    /// Entry `index`'s file: waits for it if it is not read yet.
    pub(super) async fn take(&mut self, index: usize) -> Prepared {
        match self.files.recv().await {
            Some((read, prepared)) if read == index => prepared,
            _ => Prepared::Failed(io::Error::other("the read-ahead thread lost this file")),
        }
    }

    /// Whether the next small file is read already (sending it need not wait).
    pub(super) fn next_ready(&self) -> bool {
        !self.files.is_empty()
    }
}

/// Opens, reads and hashes the file at `path`; `None` if it is now too large to read whole.
fn read_small(path: &PathBuf, alg: HashAlg) -> io::Result<Option<SmallFile>> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let meta = local_meta(&meta);
    if meta.size > READ_AHEAD_FILE_MAX_BYTES {
        return Ok(None);
    }
    let size = usize::try_from(meta.size).map_err(io::Error::other)?;
    let mut data = Vec::with_capacity(size);
    // At most the size just seen: a file growing meanwhile is sent as it was at its stat.
    (&file).take(meta.size).read_to_end(&mut data)?;
    if data.len() != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file shrank while it was being read",
        ));
    }
    let mut hasher = Hasher::new(alg);
    hasher.update(&data);
    Ok(Some(SmallFile {
        meta,
        data,
        digest: hasher.hex(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_item(local: PathBuf, size: u64) -> Item {
        Item::File {
            local,
            remote: "x".into(),
            size,
        }
    }

    #[tokio::test]
    async fn small_files_arrive_in_order_and_large_ones_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"alpha").unwrap();
        std::fs::write(&b, b"bravo!").unwrap();
        let items = vec![
            file_item(a, 5),
            file_item(dir.path().join("big"), READ_AHEAD_FILE_MAX_BYTES + 1),
            file_item(b, 6),
        ];
        assert!(!is_small(&items[1]));
        let mut ahead = ReadAhead::start(&items, HashAlg::default());
        let Prepared::Read(first) = ahead.take(0).await else {
            panic!("a was not read")
        };
        assert_eq!(first.data, b"alpha");
        let mut hasher = Hasher::new(HashAlg::default());
        hasher.update(b"alpha");
        assert_eq!(first.digest, hasher.hex());
        let Prepared::Read(second) = ahead.take(2).await else {
            panic!("b was not read")
        };
        assert_eq!(second.data, b"bravo!");
        assert_eq!(second.meta.size, 6);
    }

    #[tokio::test]
    async fn a_file_that_grew_or_vanished_is_said_so() {
        let dir = tempfile::tempdir().unwrap();
        let grown = dir.path().join("grown");
        std::fs::write(&grown, vec![7u8; (READ_AHEAD_FILE_MAX_BYTES + 1) as usize]).unwrap();
        let items = vec![file_item(grown, 10), file_item(dir.path().join("gone"), 10)];
        let mut ahead = ReadAhead::start(&items, HashAlg::default());
        assert!(matches!(ahead.take(0).await, Prepared::Grown));
        assert!(matches!(ahead.take(1).await, Prepared::Failed(_)));
    }
}
