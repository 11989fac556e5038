//! `sockit serve`: runs a set of services from a TOML file or the embedded loopback-only
//! default, prints one line per service, and shuts them all down together.
//! `config` owns the file and its checks, `handlers` builds each kind's handler, and this
//! module binds the set (all or nothing) and runs it.

mod config;
mod handlers;

use std::io;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use config::{check_fields, engine_config};
pub use config::{ServeConfig, ServeError, ServiceConfig, ServiceKind, DEFAULT_CONFIG};
use handlers::{bind_line, chat_servers, exec_server, files_server};

use crate::net::{Addr, BindOptions, Datagram, Listener};
use crate::server::{serve, serve_datagram, Config};
use crate::service::chat::{ChatServer, LineServer};
use crate::service::echo::{Echo, EchoDatagram, DEFAULT_UDP_RATE_PER_SOURCE};
use crate::service::exec::ExecServer;
use crate::service::files::{FilesServer, DEFAULT_MAX_FILES_CONNS};

/// A service bound and ready to run.
enum Bound {
    Stream(Listener, Echo, Config),
    Datagram(Datagram, EchoDatagram, Config),
    Exec(Listener, Box<ExecServer>, Config),
    Files(Listener, Box<FilesServer>, Config),
    Chat(Listener, Box<ChatServer>, Config),
    ChatLine(Listener, LineServer, Config),
}

/// One entry of the banner: what runs where, and what a client needs to know.
#[derive(Debug, Clone)]
pub struct Running {
    /// Service name.
    pub service: &'static str,
    /// `tcp`, `udp`, `unix`, `unixgram` or `tls`.
    pub transport: &'static str,
    /// The bound address.
    pub addr: Addr,
    /// Lines for the operator: a generated token, a TLS fingerprint.
    pub notes: Vec<String>,
}

impl std::fmt::Display for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<8} {:<8} {}", self.service, self.transport, self.addr)?;
        for note in &self.notes {
            write!(f, "\n         {note}")?;
        }
        Ok(())
    }
}

/// Binds every service in `config` (all or nothing), then returns the banner lines and a
/// future that serves them all until `shutdown` fires.
///
/// # Errors
/// `Config` for invalid entries, `Bind` for the first address that cannot be bound.
pub async fn bind_all(
    config: &ServeConfig,
    shutdown: CancellationToken,
) -> Result<
    (
        Vec<Running>,
        impl std::future::Future<Output = Result<(), ServeError>>,
    ),
    ServeError,
> {
    let mut bound = Vec::new();
    let mut banner = Vec::new();
    for svc in &config.services {
        let engine = engine_config(svc, config.drain_timeout_secs)?;
        let addr: Addr = svc
            .listen
            .parse()
            .map_err(|e: crate::net::AddrParseError| ServeError::Config(e.to_string()))?;
        if !addr.is_local() {
            warn!(%addr, "service listens beyond loopback");
        }
        check_fields(svc)?;
        let bind_err = |source| ServeError::Bind {
            kind: svc.kind,
            source,
        };
        let opts = BindOptions::default();
        let mut notes = Vec::new();
        let unix = matches!(addr, Addr::Unix(_));
        let (service, transport, b) = match (svc.kind, svc.udp) {
            (ServiceKind::Echo, true) => {
                let socket = Datagram::bind(&addr, &opts).await.map_err(bind_err)?;
                let handler = EchoDatagram::new(svc.upper, DEFAULT_UDP_RATE_PER_SOURCE, false);
                let t = if unix { "unixgram" } else { "udp" };
                ("echo", t, Bound::Datagram(socket, handler, engine))
            }
            (ServiceKind::Echo, false) => {
                let listener = Listener::bind(&addr, &opts).await.map_err(bind_err)?;
                let t = if unix { "unix" } else { "tcp" };
                let handler = Echo { upper: svc.upper };
                ("echo", t, Bound::Stream(listener, handler, engine))
            }
            (ServiceKind::Exec, true) => {
                return Err(ServeError::Config(
                    "exec needs a stream socket, not udp".into(),
                ))
            }
            (ServiceKind::Exec, false) => {
                let listener = Listener::bind(&addr, &opts).await.map_err(bind_err)?;
                let bound_addr = listener.local_addr().map_err(bind_err)?;
                let handler = exec_server(svc, &bound_addr, &mut notes)?;
                let t = match (svc.tls, unix) {
                    (true, _) => "tls",
                    (false, true) => "unix",
                    (false, false) => "tcp",
                };
                let engine = Config {
                    // Commands may be quiet for hours; exec bounds them with timeout_secs.
                    idle_timeout: svc
                        .idle_timeout_secs
                        .and_then(|secs| (secs > 0).then(|| Duration::from_secs(secs))),
                    ..engine
                };
                ("exec", t, Bound::Exec(listener, Box::new(handler), engine))
            }
            (ServiceKind::Files, true) => {
                return Err(ServeError::Config(
                    "files needs a stream socket, not udp".into(),
                ))
            }
            (ServiceKind::Files, false) => {
                let listener = Listener::bind(&addr, &opts).await.map_err(bind_err)?;
                let bound_addr = listener.local_addr().map_err(bind_err)?;
                let handler = files_server(svc, &bound_addr, &mut notes)?;
                let t = match (svc.tls, unix) {
                    (true, _) => "tls",
                    (false, true) => "unix",
                    (false, false) => "tcp",
                };
                let engine = Config {
                    max_conns: svc.max_conns.unwrap_or(DEFAULT_MAX_FILES_CONNS),
                    ..engine
                };
                (
                    "files",
                    t,
                    Bound::Files(listener, Box::new(handler), engine),
                )
            }
            (ServiceKind::Chat, true) => {
                return Err(ServeError::Config(
                    "chat needs a stream socket, not udp".into(),
                ))
            }
            (ServiceKind::Chat, false) => {
                let opts = crate::service::chat::bind_options();
                let listener = Listener::bind(&addr, &opts).await.map_err(bind_err)?;
                let bound_addr = listener.local_addr().map_err(bind_err)?;
                let line_listener = match &svc.line_listen {
                    Some(line_addr) => {
                        let l = bind_line(line_addr, &opts).await?;
                        let line_bound = l.local_addr().map_err(bind_err)?;
                        Some((l, line_bound))
                    }
                    None => None,
                };
                let line_bound = line_listener.as_ref().map(|(_, a)| a.clone());
                let (framed, line) =
                    chat_servers(svc, &bound_addr, line_bound.as_ref(), &mut notes)?;
                let engine = Config {
                    // Lurkers are normal in a chat: a quiet connection is not a dead one.
                    idle_timeout: None,
                    ..engine
                };
                if let Some((line_listener, line_bound)) = line_listener {
                    let line_engine = Config {
                        service: "chat-line".into(),
                        ..engine.clone()
                    };
                    bound.push(Bound::ChatLine(line_listener, line, line_engine));
                    banner.push(Running {
                        service: "chat",
                        transport: "line",
                        addr: line_bound,
                        notes: vec!["plain text: nc, telnet (no auth)".into()],
                    });
                }
                let t = match (svc.tls, unix) {
                    (true, _) => "tls",
                    (false, true) => "unix",
                    (false, false) => "tcp",
                };
                ("chat", t, Bound::Chat(listener, Box::new(framed), engine))
            }
        };
        let addr = match &b {
            Bound::Stream(l, ..)
            | Bound::Exec(l, ..)
            | Bound::Files(l, ..)
            | Bound::Chat(l, ..)
            | Bound::ChatLine(l, ..) => l.local_addr(),
            Bound::Datagram(s, ..) => s.local_addr(),
        }
        .map_err(bind_err)?;
        banner.push(Running {
            service,
            transport,
            addr,
            notes,
        });
        bound.push(b);
    }
    let run = async move {
        let mut tasks = JoinSet::new();
        for b in bound {
            let token = shutdown.clone();
            match b {
                Bound::Stream(l, h, c) => tasks.spawn(serve(l, h, c, token)),
                Bound::Datagram(s, h, c) => tasks.spawn(serve_datagram(s, h, c, token)),
                Bound::Exec(l, h, c) => tasks.spawn(serve(l, *h, c, token)),
                Bound::Files(l, h, c) => tasks.spawn(serve(l, *h, c, token)),
                Bound::Chat(l, h, c) => tasks.spawn(serve(l, *h, c, token)),
                Bound::ChatLine(l, h, c) => tasks.spawn(serve(l, h, c, token)),
            };
        }
        let mut first_error = None;
        while let Some(res) = tasks.join_next().await {
            let res = res.map_err(io::Error::other).and_then(|r| r);
            if let Err(e) = res {
                // One service failing takes the set down together, as the banner promised.
                shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(ServeError::Service(e)))
    };
    Ok((banner, run))
}
