//! Facts about local files both halves need: size, mode and mtime as the protocol carries
//! them, the digest of a file's first bytes (the resume proof), and sizes as people write them.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use super::hash::{HashAlg, Hasher};
use super::transfer::CHUNK_BYTES;

/// Size, permission bits and modification time of a local file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalMeta {
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
pub(crate) fn local_meta(meta: &Metadata) -> LocalMeta {
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
pub(crate) fn prefix_digest(file: &File, len: u64, alg: HashAlg) -> io::Result<Hasher> {
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

/// Parses `4096`, `512K`, `512M`, `10G`, `1T` (binary units; `KiB`, `MB`… spellings too).
///
/// # Errors
/// A message naming the bad input.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 4096, 512M, 10G"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("invalid size unit in {s:?}: use K, M, G or T")),
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

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
