//! The server's way in, the same for every framed service: a place among the pending
//! handshakes, the penalty check at connect, TLS under its deadline, then hello and auth. A
//! framed service only serves the authenticated [`Connection`] it is handed.

use std::future::Future;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::either::Either;
use tracing::{info, warn};

use super::pending::{Pending, PendingLimits};
use super::{accept, AuthLimiter, SessionConfig, SessionError, Token};
use crate::engine::{Conn, ConnInfo, Handler};
use crate::net::splice::SpliceWrite;
use crate::net::tls::{ServerTlsStream, TlsAcceptor};
use crate::wire::{Connection, ErrorFrame};

/// Deadline for telling a penalised source why it is refused.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a framed service lets peers in: who it is, the token it requires, TLS, and the
/// pending-handshake caps.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// The handshake: service name, deadline, post-auth limits, the hint for `nc` users.
    pub session: SessionConfig,
    /// The token clients must prove they hold; `None` admits anyone, and then only on
    /// loopback or a Unix socket (a connection that arrives on any other address is closed).
    pub token: Option<Token>,
    /// Wrap every connection in TLS first; `None` serves plaintext.
    pub tls: Option<TlsAcceptor>,
    /// Caps on handshakes in progress, apart from the engine's `max_conns`.
    pub pending: PendingLimits,
}

impl GateConfig {
    /// A plaintext gate for `session` requiring `token` when given, with default caps.
    pub fn new(session: SessionConfig, token: Option<Token>) -> Self {
        GateConfig {
            session,
            token,
            tls: None,
            pending: PendingLimits::default(),
        }
    }
}

/// The server side of the way in: see the module docs.
#[derive(Debug)]
pub struct Gate {
    config: GateConfig,
    limiter: AuthLimiter,
    pending: Pending,
}

/// What an admitted session runs over: the engine's [`Conn`] (left; it can splice), or TLS
/// around it (right).
pub type ServerStream = Either<Conn, Box<ServerTlsStream<Conn>>>;

impl Gate {
    /// A gate with a fresh auth limiter and pending set.
    pub fn new(config: GateConfig) -> Self {
        Gate {
            pending: Pending::new(config.pending),
            limiter: AuthLimiter::new(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    /// Handshakes in progress now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Lets `conn` in, or refuses it: `None` when it was refused (the peer was told why when
    /// it can read it, and the refusal was logged), evicted from the pending set, or failed
    /// its TLS or session handshake.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled admission leaves the connection unusable.
    pub(crate) async fn admit(
        &self,
        conn: Conn,
        info: &ConnInfo,
    ) -> Option<Connection<ServerStream>> {
        let service = &self.config.session.service;
        if self.config.token.is_none() && !info.local.is_local() {
            warn!(peer = %info.peer, %service, "refused: no token configured and the connection is not on loopback");
            return None;
        }
        let peer_ip = info.peer.ip();
        let slot = self.pending.enter(peer_ip);
        if let Some(owed) = self.limiter.refusal(peer_ip) {
            info!(peer = %info.peer, %service, retry_ms = owed.as_millis() as u64, "refused at connect: recent failed authentication");
            self.refuse_penalised(conn, owed).await;
            return None;
        }
        tokio::select! {
            admitted = self.handshake(conn, info) => admitted,
            () = slot.evicted() => {
                info!(peer = %info.peer, %service, "handshake dropped: too many pending handshakes");
                None
            }
        }
    }

    async fn handshake(&self, conn: Conn, info: &ConnInfo) -> Option<Connection<ServerStream>> {
        let stream = match &self.config.tls {
            None => Either::Left(conn),
            Some(tls) => match tls.accept(conn).await {
                Ok(stream) => Either::Right(Box::new(stream)),
                Err(e) => {
                    let service = &self.config.session.service;
                    warn!(peer = %info.peer, %service, error = %e, "tls handshake failed");
                    return None;
                }
            },
        };
        let mut framed = Connection::new(stream);
        let cfg = &self.config.session;
        let token = self.config.token.as_ref();
        // On failure `accept` has logged the refusal and answered the peer.
        accept(&mut framed, cfg, token, info.peer.ip(), &self.limiter)
            .await
            .ok()?;
        Some(framed)
    }

    /// Tells a source still serving its penalty to come back later (in plaintext only: a TLS
    /// client could not read it), then closes.
    async fn refuse_penalised(&self, conn: Conn, owed: Duration) {
        if self.config.tls.is_some() {
            return;
        }
        let err = SessionError::Penalised(owed);
        let frame = ErrorFrame::new(err.code(), err.to_string());
        let mut framed = Connection::new(conn);
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, framed.write_error(frame)).await;
    }
}

/// A framed service: what runs once the [`Gate`] has admitted a peer.
pub trait FramedService: Send + Sync + 'static {
    /// Serves one authenticated session. An error ends only this connection.
    fn serve(
        &self,
        conn: Connection<ServerStream>,
        info: ConnInfo,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// A framed service behind its gate: the engine's [`Handler`] for it.
#[derive(Debug)]
pub struct Gated<S> {
    gate: Gate,
    service: S,
}

impl<S: FramedService> Gated<S> {
    /// `service` behind a gate built from `config`.
    pub fn new(config: GateConfig, service: S) -> Self {
        Gated {
            gate: Gate::new(config),
            service,
        }
    }

    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }
}

impl<S: FramedService> Handler for Gated<S> {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> io::Result<()> {
        match self.gate.admit(conn, &info).await {
            Some(framed) => self.service.serve(framed, info).await,
            None => Ok(()),
        }
    }
}

impl SpliceWrite for ServerStream {
    fn can_splice(&self) -> bool {
        match self {
            Either::Left(s) => s.can_splice(),
            Either::Right(_) => false,
        }
    }

    fn poll_splice_from(
        &mut self,
        cx: &mut Context<'_>,
        pipe: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        match self {
            Either::Left(s) => s.poll_splice_from(cx, pipe, len),
            Either::Right(_) => Poll::Ready(Err(io::ErrorKind::Unsupported.into())),
        }
    }
}
