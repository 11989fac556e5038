//! TLS for any stream service (rustls with the `ring` provider): server identities (PEM files
//! or a generated self-signed certificate), an acceptor whose handshake runs under a deadline,
//! and a connector that trusts either a pinned SHA-256 fingerprint or a CA file, never nothing.
//! A handshake that meets plaintext says so ([`looks_like_tls`], [`Sniffer`]).

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Addr;

mod sniff;

pub use sniff::{looks_like_client_hello, looks_like_tls, Sniffer, SNIFF_BYTES};

/// A server-side TLS stream over `S` (seen through a [`Sniffer`]).
pub type ServerTlsStream<S> = tokio_rustls::server::TlsStream<Sniffer<S>>;

/// A client-side TLS stream over `S` (seen through a [`Sniffer`]).
pub type ClientTlsStream<S> = tokio_rustls::client::TlsStream<Sniffer<S>>;

// TLS must see every byte it encrypts: never spliced.
impl<S> super::splice::SpliceWrite for ServerTlsStream<S> {}
// Nor decrypted ones: never spliced out either.
impl<S> super::splice::SpliceRead for ClientTlsStream<S> {}

/// Default deadline for a TLS handshake, on either side.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest certificate, key or CA file read; real ones are a few KiB.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Everything that can go wrong setting up or running TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file was read but holds no usable PEM item.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The self-signed certificate could not be made.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("invalid TLS configuration: {0}")]
    Config(rustls::Error),
    /// The server's certificate is not the pinned one.
    #[error("the server's certificate is {got}, not the pinned {expected}: refusing to connect")]
    PinMismatch {
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// The fingerprint of the certificate the server presented.
        got: Fingerprint,
    },
    /// The handshake failed: not TLS on the other side, a certificate not trusted, ….
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The handshake did not finish within its deadline.
    #[error("TLS handshake not completed within {0:?}")]
    Timeout(Duration),
    /// The client sent something other than a TLS ClientHello: a plaintext client.
    #[error("the client did not start TLS: it sent plaintext (a client without --tls?)")]
    ClientNotTls,
    /// The server answered the ClientHello with something other than TLS, or closed without
    /// a word: a plaintext server.
    #[error("the server at {addr} does not speak TLS (is it started with --tls?)")]
    ServerNotTls {
        /// The server's address.
        addr: String,
    },
}

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
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
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

/// The server side: wraps accepted streams in TLS, under a handshake deadline.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    fingerprint: Fingerprint,
    /// Deadline for one handshake (default [`TLS_HANDSHAKE_TIMEOUT`]); a client that sends
    /// nothing, or a byte a second, is dropped when it passes.
    pub handshake_timeout: Duration,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("fingerprint", &self.fingerprint)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor presenting `identity` (TLS 1.2 and 1.3, no client certificates).
    ///
    /// # Errors
    /// [`TlsError::Config`] if the key does not fit the certificate.
    pub fn new(identity: ServerIdentity) -> Result<TlsAcceptor, TlsError> {
        let fingerprint = identity.fingerprint();
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .map_err(TlsError::Config)?;
        Ok(TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            fingerprint,
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        })
    }

    /// The fingerprint of the certificate this acceptor presents.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Runs the server handshake on `stream`. Call it in the connection's task, never in an
    /// accept loop: it waits on the peer.
    ///
    /// # Errors
    /// [`TlsError::ClientNotTls`] when the client's first bytes are not TLS (a plaintext
    /// client), else [`TlsError::Handshake`] or [`TlsError::Timeout`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled handshake leaves `stream` unusable.
    pub async fn accept<S>(&self, stream: S) -> Result<ServerTlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let accepting = self.inner.accept(Sniffer::new(stream)).into_fallible();
        match tokio::time::timeout(self.handshake_timeout, accepting).await {
            Err(_) => Err(TlsError::Timeout(self.handshake_timeout)),
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err((err, sniffer))) if sniffer.first_bytes().len() == SNIFF_BYTES => {
                if looks_like_client_hello(sniffer.first_bytes()) {
                    Err(TlsError::Handshake(err))
                } else {
                    Err(TlsError::ClientNotTls)
                }
            }
            Ok(Err((err, _))) => Err(TlsError::Handshake(err)),
        }
    }
}

/// Which server certificates a client accepts. There is no "accept anything".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// Exactly the certificate with this fingerprint (signatures still verified).
    Pin(Fingerprint),
    /// Certificates issued by a CA in this PEM file, for the server's name or IP.
    CaFile(PathBuf),
}

/// The client side: wraps connected streams in TLS, trusting only what [`ServerTrust`] says.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
    /// Deadline for one handshake (default [`TLS_HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Duration,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector that trusts `trust`.
    ///
    /// # Errors
    /// [`TlsError::File`] / [`TlsError::Pem`] for a bad CA file, [`TlsError::Config`].
    pub fn new(trust: &ServerTrust) -> Result<TlsConnector, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let config = match trust {
            ServerTrust::Pin(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCert {
                    pin: *pin,
                    provider,
                }))
                .with_no_client_auth(),
            ServerTrust::CaFile(path) => builder
                .with_root_certificates(load_roots(path)?)
                .with_no_client_auth(),
        };
        Ok(TlsConnector {
            inner: tokio_rustls::TlsConnector::from(Arc::new(config)),
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        })
    }

    /// Runs the client handshake on `stream`, checking the server as the name in `addr`
    /// (its IP; `localhost` for a Unix socket). Never falls back to plaintext.
    ///
    /// # Errors
    /// [`TlsError::PinMismatch`], [`TlsError::ServerNotTls`] when the server answers in
    /// anything but TLS or closes without answering (a plaintext server),
    /// [`TlsError::Handshake`] (an untrusted certificate, …) or [`TlsError::Timeout`].
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled handshake leaves `stream` unusable.
    pub async fn connect<S>(&self, addr: &Addr, stream: S) -> Result<ClientTlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = match addr.ip() {
            Some(ip) => ServerName::IpAddress(ip.into()),
            None => ServerName::try_from("localhost")
                .map_err(|e| TlsError::Handshake(io::Error::new(io::ErrorKind::InvalidInput, e)))?,
        };
        let connecting = self
            .inner
            .connect(name, Sniffer::new(stream))
            .into_fallible();
        match tokio::time::timeout(self.handshake_timeout, connecting).await {
            Err(_) => Err(TlsError::Timeout(self.handshake_timeout)),
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err((err, sniffer))) => match client_error(err) {
                TlsError::Handshake(_) if !looks_like_tls(sniffer.first_bytes()) => {
                    Err(TlsError::ServerNotTls {
                        addr: addr.to_string(),
                    })
                }
                other => Err(other),
            },
        }
    }
}

/// A failed client handshake, with a pin mismatch brought out of rustls' error.
fn client_error(err: io::Error) -> TlsError {
    let mismatch = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                other.0.downcast_ref::<PinMismatch>()
            }
            _ => None,
        });
    match mismatch {
        Some(m) => TlsError::PinMismatch {
            expected: m.expected,
            got: m.got,
        },
        None => TlsError::Handshake(err),
    }
}

/// The crypto provider: `ring`, which builds with only a C compiler (aws-lc-rs needs cmake).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly one certificate, by its SHA-256 fingerprint, and still checks that the
/// server signed the handshake with that certificate's key.
#[derive(Debug)]
struct PinnedCert {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

/// The server presented another certificate than the pinned one; carried through rustls and
/// turned into [`TlsError::PinMismatch`] by [`client_error`].
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate is {got}, not the pinned {expected}")]
struct PinMismatch {
    expected: Fingerprint,
    got: Fingerprint,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity);
        if got.matches(&self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = PinMismatch {
                expected: self.pin,
                got,
            };
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(mismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
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
fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
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

fn pem_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests;
