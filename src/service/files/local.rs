//! Facts about local files both halves need: size, mode and mtime as the protocol carries
//! them, and the digest of a file's first bytes (the resume proof).

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use super::hash::{HashAlg, Hasher};
use super::transfer::CHUNK_BYTES;

/// Size, permission bits and modification time of a local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMeta {
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`0o777` at most: setuid, setgid and sticky are never sent).
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds part.
    pub mtime_nsec: u32,
}

/// The protocol's view of `meta`.
pub fn local_meta(meta: &Metadata) -> LocalMeta {
    LocalMeta {
        size: meta.len(),
        mode: meta.mode() & 0o777,
        mtime: meta.mtime(),
        mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
    }
}

/// The digest of the first `len` bytes of `file` (read with positioned reads, so the file's
/// cursor does not move).
///
/// # Errors
/// Read errors; `UnexpectedEof` if the file is shorter than `len`.
pub fn prefix_digest(file: &File, len: u64, alg: HashAlg) -> io::Result<Hasher> {
    let mut hasher = Hasher::new(alg);
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut pos = 0u64;
    while pos < len {
        let want = usize::try_from(len - pos).map_or(buf.len(), |l| l.min(buf.len()));
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn prefix_digest_covers_exactly_the_prefix() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello world").unwrap();
        let mut expected = Hasher::new(HashAlg::Blake3);
        expected.update(b"hello");
        let got = prefix_digest(&file, 5, HashAlg::Blake3).unwrap();
        assert!(got.matches(&expected.hex()));
        assert!(prefix_digest(&file, 12, HashAlg::Blake3).is_err());
    }
}
