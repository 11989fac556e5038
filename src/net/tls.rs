//! TLS for any stream service (rustls with the `ring` provider): server identities (PEM files
//! or a generated self-signed certificate), an acceptor whose handshake runs under a deadline,
//! and a connector that trusts either a pinned SHA-256 fingerprint or a CA file, never nothing.
//! A handshake that meets plaintext says so (`looks_like_tls`, [`Sniffer`]).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;

mod acceptor;
mod connector;
mod identity;
mod pem;
mod sniff;

pub use acceptor::TlsAcceptor;
pub use connector::{ServerTrust, TlsConnector};
pub use identity::{Fingerprint, FingerprintParseError, ServerIdentity};
pub use sniff::Sniffer;
pub use sniff::SNIFF_BYTES;
pub(crate) use sniff::{looks_like_client_hello, looks_like_tls};

/// A server-side TLS stream over `S` (seen through a [`Sniffer`]).
pub(crate) type ServerTlsStream<S> = tokio_rustls::server::TlsStream<Sniffer<S>>;

/// A client-side TLS stream over `S` (seen through a [`Sniffer`]).
pub(crate) type ClientTlsStream<S> = tokio_rustls::client::TlsStream<Sniffer<S>>;

// TLS must see every byte it encrypts: never spliced.
impl<S> crate::net::splice::SpliceWrite for ServerTlsStream<S> {}
// Nor decrypted ones: never spliced out either.
impl<S> crate::net::splice::SpliceRead for ClientTlsStream<S> {}

/// Default deadline for a TLS handshake, on either side.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The crypto provider: `ring`, which builds with only a C compiler (aws-lc-rs needs cmake).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
