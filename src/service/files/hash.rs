//! Streaming file digests: BLAKE3 by default, SHA-256 on request, hex on the wire.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Which digest a transfer uses; both sides must agree (the sender names it in the header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    /// BLAKE3 (default): several GB/s on one core.
    #[default]
    Blake3,
    /// SHA-256, for peers that must use a FIPS-style digest.
    Sha256,
}

impl HashAlg {
    /// The name used on the wire and in messages.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Blake3 => "blake3",
            HashAlg::Sha256 => "sha256",
        }
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An incremental digest of one of the [`HashAlg`]s; `Clone` so a verified prefix's state can
/// be kept and continued.
#[derive(Clone)]
pub enum Hasher {
    /// BLAKE3 state.
    Blake3(Box<blake3::Hasher>),
    /// SHA-256 state.
    Sha256(sha2::Sha256),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hasher({})", self.alg())
    }
}

impl Hasher {
    /// A fresh digest.
    pub fn new(alg: HashAlg) -> Hasher {
        match alg {
            HashAlg::Blake3 => Hasher::Blake3(Box::default()),
            HashAlg::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    /// Which digest this is.
    pub fn alg(&self) -> HashAlg {
        match self {
            Hasher::Blake3(_) => HashAlg::Blake3,
            Hasher::Sha256(_) => HashAlg::Sha256,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far, as 64 lowercase hex digits; the state is kept.
    pub fn hex(&self) -> String {
        match self {
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
            Hasher::Sha256(h) => hex::encode(h.clone().finalize()),
        }
    }

    /// Whether the digest so far equals `hex_digest`, compared in constant time.
    pub fn matches(&self, hex_digest: &str) -> bool {
        use subtle::ConstantTimeEq;
        let mine = self.hex();
        mine.len() == hex_digest.len() && bool::from(mine.as_bytes().ct_eq(hex_digest.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_vectors() {
        let mut b = Hasher::new(HashAlg::Blake3);
        b.update(b"abc");
        assert_eq!(
            b.hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        let mut s = Hasher::new(HashAlg::Sha256);
        s.update(b"ab");
        let prefix = s.clone();
        s.update(b"c");
        assert_eq!(
            s.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(s.matches("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        assert!(!prefix.matches(&s.hex()));
        assert!(!s.matches("ba78"));
    }

    #[test]
    fn algorithms_have_lowercase_wire_names() {
        assert_eq!(
            serde_json::to_string(&HashAlg::Sha256).unwrap(),
            r#""sha256""#
        );
        assert!(serde_json::from_str::<HashAlg>(r#""md5""#).is_err());
    }
}
