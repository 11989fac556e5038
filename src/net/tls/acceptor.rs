//! The server side of TLS: [`TlsAcceptor`] presents a [`ServerIdentity`] and tells a plaintext
//! client from a failed handshake.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::net::tls::{
    looks_like_client_hello, provider, Fingerprint, ServerIdentity, ServerTlsStream, Sniffer,
    TlsError, SNIFF_BYTES, TLS_HANDSHAKE_TIMEOUT,
};

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

    /// The same acceptor offering `protocols` by ALPN, preferred first (HTTP offers `h2`
    /// and `http/1.1`); a client offering none of them still connects.
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> TlsAcceptor {
        let mut config = ServerConfig::clone(self.inner.config());
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        self.inner = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        self
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
