//! `sockit serve`: runs a set of services from a TOML file or the embedded loopback-only
//! default, prints one line per service, and shuts them all down together.

use std::io;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::net::{parse_net, Acl, Addr, BindOptions, Datagram, Listener};
use crate::server::{serve, serve_datagram, Config, Mode};
use crate::service::echo::{Echo, EchoDatagram, DEFAULT_UDP_RATE_PER_SOURCE};

/// The default service set: loopback only.
pub const DEFAULT_CONFIG: &str = r#"# sockit serve: the default service set. Everything binds loopback.
# Copy this file, edit it, and pass it with --config.

[[service]]
kind = "echo"            # TCP echo
listen = "127.0.0.1:7007"

[[service]]
kind = "echo"            # UDP echo
listen = "127.0.0.1:7007"
udp = true
"#;

/// A parsed service-set file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Seconds handlers get to finish at shutdown (default 5).
    #[serde(default)]
    pub drain_timeout_secs: Option<u64>,
    /// The services.
    #[serde(rename = "service", default)]
    pub services: Vec<ServiceConfig>,
}

/// Which service a `[[service]]` entry runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// Echo (TCP, Unix, UDP).
    Echo,
}

/// One `[[service]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The service.
    pub kind: ServiceKind,
    /// Address: `HOST:PORT`, `[IPv6]:PORT` or `unix:/path`.
    pub listen: String,
    /// A datagram socket instead of a stream.
    #[serde(default)]
    pub udp: bool,
    /// Echo: upper-case ASCII.
    #[serde(default)]
    pub upper: bool,
    /// `sequential`, `concurrent` or `process` (default: concurrent for streams, sequential
    /// for datagrams).
    #[serde(default)]
    pub mode: Option<String>,
    /// Concurrent connection cap.
    #[serde(default)]
    pub max_conns: Option<usize>,
    /// Idle timeout in seconds (0: none).
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// Networks allowed (CIDR or IP).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Networks denied (CIDR or IP); deny wins.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A configuration that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The file is not valid.
    #[error("invalid service configuration: {0}")]
    Config(String),
    /// A service could not bind its address.
    #[error("{kind:?} service: {source}")]
    Bind {
        /// Which service.
        kind: ServiceKind,
        /// The bind error.
        source: io::Error,
    },
    /// A service stopped with an error.
    #[error("a service failed: {0}")]
    Service(io::Error),
}

impl ServeConfig {
    /// Parses a TOML service set.
    ///
    /// # Errors
    /// `ServeError::Config` naming the problem.
    pub fn parse(text: &str) -> Result<Self, ServeError> {
        let config: ServeConfig =
            toml::from_str(text).map_err(|e| ServeError::Config(e.to_string()))?;
        if config.services.is_empty() {
            return Err(ServeError::Config("no [[service]] entries".into()));
        }
        Ok(config)
    }
}

/// A service bound and ready to run.
enum Bound {
    Stream(Listener, Echo, Config),
    Datagram(Datagram, EchoDatagram, Config),
}

/// One line of the banner: what runs where.
#[derive(Debug, Clone)]
pub struct Running {
    /// Service name.
    pub service: &'static str,
    /// `tcp`, `udp`, `unix` or `unixgram`.
    pub transport: &'static str,
    /// The bound address.
    pub addr: Addr,
}

impl std::fmt::Display for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<8} {:<8} {}", self.service, self.transport, self.addr)
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
        let bind_err = |source| ServeError::Bind {
            kind: svc.kind,
            source,
        };
        let opts = BindOptions::default();
        let (transport, b) = if svc.udp {
            let socket = Datagram::bind(&addr, &opts).await.map_err(bind_err)?;
            let handler = EchoDatagram::new(svc.upper, DEFAULT_UDP_RATE_PER_SOURCE, false);
            let t = if matches!(addr, Addr::Unix(_)) {
                "unixgram"
            } else {
                "udp"
            };
            (t, Bound::Datagram(socket, handler, engine))
        } else {
            let listener = Listener::bind(&addr, &opts).await.map_err(bind_err)?;
            let t = if matches!(addr, Addr::Unix(_)) {
                "unix"
            } else {
                "tcp"
            };
            (
                t,
                Bound::Stream(listener, Echo { upper: svc.upper }, engine),
            )
        };
        let addr = match &b {
            Bound::Stream(l, ..) => l.local_addr(),
            Bound::Datagram(s, ..) => s.local_addr(),
        }
        .map_err(bind_err)?;
        banner.push(Running {
            service: "echo",
            transport,
            addr,
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

fn engine_config(svc: &ServiceConfig, drain_secs: Option<u64>) -> Result<Config, ServeError> {
    let mut config = Config {
        service: format!("{:?}", svc.kind).to_lowercase(),
        ..Config::default()
    };
    config.mode = match &svc.mode {
        Some(mode) => mode.parse::<Mode>().map_err(ServeError::Config)?,
        None => crate::service::echo::default_mode(svc.udp),
    };
    if let Some(n) = svc.max_conns {
        config.max_conns = n;
    }
    if let Some(secs) = svc.idle_timeout_secs {
        config.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
    }
    if let Some(secs) = drain_secs {
        config.drain_timeout = Duration::from_secs(secs);
    }
    let nets = |list: &[String]| -> Result<Vec<_>, ServeError> {
        list.iter()
            .map(|s| parse_net(s).map_err(ServeError::Config))
            .collect()
    };
    config.acl = Acl {
        allow: nets(&svc.allow)?,
        deny: nets(&svc.deny)?,
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses_and_binds_loopback_only() {
        let config = ServeConfig::parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(config.services.len(), 2);
        for svc in &config.services {
            assert!(svc.listen.parse::<Addr>().unwrap().is_local());
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let bad = [
            "[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\nlisen = 1\n",
            "[[service]]\nkind = \"nope\"\nlisten = \"127.0.0.1:0\"\n",
            "",
        ];
        for text in bad {
            assert!(ServeConfig::parse(text).is_err(), "{text:?}");
        }
        let bad_mode = ServeConfig::parse(
            "[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\nmode = \"forking\"\n",
        )
        .unwrap();
        assert!(engine_config(&bad_mode.services[0], None).is_err());
    }
}
