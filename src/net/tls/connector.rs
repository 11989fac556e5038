//! The client side of TLS: [`TlsConnector`] trusts a pinned fingerprint or a CA file
//! ([`ServerTrust`]), and tells a pin mismatch or a plaintext server from other failures.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::net::tls::pem::load_roots;
use crate::net::tls::{
    looks_like_tls, provider, ClientTlsStream, Fingerprint, Sniffer, TlsError,
    TLS_HANDSHAKE_TIMEOUT,
};
use crate::net::Addr;

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
    /// The name the server's certificate must be valid for, when the user typed one (see
    /// [`TlsConnector::for_host`]); otherwise the connected address is checked.
    server_name: Option<ServerName<'static>>,
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
            server_name: None,
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        })
    }

    /// Checks the server as `host` (and sends it as SNI) rather than as the address
    /// connected to: for a peer typed as a name (`files.example.org:7010`), a CA-issued
    /// certificate is valid for that name, not for whichever address the resolver gave, as
    /// curl and ssh check what the user typed.
    ///
    /// # Errors
    /// [`TlsError::Config`]-like [`TlsError::Handshake`] if `host` is not a valid DNS name
    /// or IP address.
    pub fn for_host(mut self, host: &str) -> Result<TlsConnector, TlsError> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| TlsError::Handshake(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// Runs the client handshake on `stream`, checking the server as the host name given to
    /// [`TlsConnector::for_host`], or else as the name in `addr` (its IP; `localhost` for a
    /// Unix socket). Never falls back to plaintext.
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
        let name = match (&self.server_name, addr.ip()) {
            (Some(name), _) => name.clone(),
            (None, Some(ip)) => ServerName::IpAddress(ip.into()),
            (None, None) => ServerName::try_from("localhost")
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
