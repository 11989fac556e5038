//! Reading PEM files (certificates, keys, CAs) with a size cap, and errors that name the file.

use std::fmt;
use std::io::Read;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::net::tls::TlsError;

/// Largest certificate, key or CA file read; real ones are a few KiB.
pub(crate) const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// The CA certificates in the PEM file at `path`; a file with none is an error, not a trust
/// store that refuses everything.
pub(super) fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = read_pem_file(path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| pem_error(path, e))?;
        roots
            .add(cert)
            .map_err(|e| pem_error(path, format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE block"));
    }
    Ok(roots)
}

/// Reads a PEM file of at most [`MAX_PEM_FILE_BYTES`].
pub(super) fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let file_err = |source| TlsError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(file_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(file_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(pem_error(
            path,
            format!("larger than {MAX_PEM_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

pub(super) fn pem_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}
