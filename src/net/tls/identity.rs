//! What a TLS server presents ([`ServerIdentity`]: a certificate chain and its key, loaded or
//! generated) and how a client names a certificate to pin ([`Fingerprint`]).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::net::tls::pem::{pem_error, read_pem_file};
use crate::net::tls::TlsError;
use crate::net::Addr;

/// The SHA-256 digest of a DER certificate, written `sha256:AB:CD:…` (as `openssl x509
/// -fingerprint -sha256` prints it, with the algorithm in front).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(cert_der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(cert_der).into())
    }

    /// Compares in constant time, so a probe learns nothing from timing.
    pub fn matches(&self, other: &Fingerprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A fingerprint string that is not 32 hex bytes.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid fingerprint {0:?}: expected sha256: and 64 hex digits (colons optional), as printed by `exec serve --tls`"
)]
pub struct FingerprintParseError(String);

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    /// Accepts `sha256:AB:CD:…`, `SHA256:abcd…` or bare hex, colons optional.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || FingerprintParseError(crate::text::escape_one_line(s, 120));
        let trimmed = s.trim();
        let hex_part = match trimmed.split_once(':') {
            Some((alg, rest)) if alg.eq_ignore_ascii_case("sha256") => rest,
            _ => trimmed,
        };
        let digits: String = hex_part.chars().filter(|c| *c != ':').collect();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes).map_err(|_| err())?;
        Ok(Fingerprint(bytes))
    }
}

/// What a TLS server presents: its certificate chain and private key.
pub struct ServerIdentity {
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint())
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// A fresh self-signed certificate for `localhost` and the address the server listens on.
    ///
    /// # Errors
    /// [`TlsError::Generate`] if key generation or signing fails.
    pub fn self_signed(listen: &Addr) -> Result<ServerIdentity, TlsError> {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        if let Some(ip) = listen.ip().filter(|ip| !ip.is_unspecified()) {
            names.push(ip.to_string());
        }
        names.dedup();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        Ok(ServerIdentity {
            chain: vec![generated.cert.der().clone()],
            key,
        })
    }

    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`TlsError::File`] or [`TlsError::Pem`], naming the file.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerIdentity, TlsError> {
        let cert_pem = read_pem_file(cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert, e))?;
        if chain.is_empty() {
            return Err(pem_error(cert, "no CERTIFICATE block"));
        }
        let key_pem = read_pem_file(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_error(key, e))?;
        Ok(ServerIdentity {
            chain,
            key: key_der,
        })
    }

    /// The fingerprint of the leaf certificate, for clients to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.chain
            .first()
            .map_or(Fingerprint([0; 32]), |leaf| Fingerprint::of(leaf))
    }
}
