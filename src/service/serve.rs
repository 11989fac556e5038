//! `sockit serve`: runs a set of services from a TOML file or the embedded loopback-only
//! default, prints one line per service, and shuts them all down together.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::net::tls::{ServerIdentity, TlsAcceptor};
use crate::net::{parse_net, Acl, Addr, BindOptions, Datagram, Listener};
use crate::server::{serve, serve_datagram, Config, Mode};
use crate::service::chat::{
    Broker, BrokerConfig, ChatServer, FramedConfig, LineConfig, LineServer, DEFAULT_HISTORY,
    MAX_HISTORY,
};
use crate::service::echo::{Echo, EchoDatagram, DEFAULT_UDP_RATE_PER_SOURCE};
use crate::service::exec::{ExecConfig, ExecServer};
use crate::service::files::{
    check_exposure, parse_size, Access, FilesConfig, FilesServer, Policy, DEFAULT_FILES_DIR,
    DEFAULT_MAX_FILES_CONNS,
};
use crate::session::{load_token, Token};

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

[[service]]
kind = "exec"            # remote commands; token from token_file or SOCKIT_TOKEN, else
listen = "127.0.0.1:7008" # generated and printed once below the banner line

[[service]]
kind = "files"           # put / get / ls; token from token_file or SOCKIT_TOKEN if set
listen = "127.0.0.1:7009" # (required beyond loopback)
dir = "sockit-files"     # created if missing
policy = "refuse"        # or "overwrite", "rename"

[[service]]
kind = "chat"            # chat: `sockit chat join` on listen (token optional on loopback),
listen = "127.0.0.1:7010" # plain text for nc/telnet on line_listen (no auth: loopback)
line_listen = "127.0.0.1:7011"
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
    /// Remote command execution (stream only; token auth always on).
    Exec,
    /// File transfer (stream only; token required beyond loopback).
    Files,
    /// Chat: framed on `listen`, plain text on `line_listen` (stream only).
    Chat,
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
    /// Exec: a 0600 file holding the token (else `SOCKIT_TOKEN`, else one is generated).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Exec: honour shell command lines (`sh -c`).
    #[serde(default)]
    pub shell: bool,
    /// Exec: the only programs that may run (exact `argv[0]`).
    #[serde(default)]
    pub allow_cmd: Vec<String>,
    /// Exec: kill a command's process group after this many seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Exec, files and chat: TLS with a generated self-signed certificate (its fingerprint is
    /// printed).
    #[serde(default)]
    pub tls: bool,
    /// Files: the directory served (default `sockit-files`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Files: `refuse` (default), `overwrite` or `rename` when a name is taken.
    #[serde(default)]
    pub policy: Option<String>,
    /// Files: refuse uploads.
    #[serde(default)]
    pub read_only: bool,
    /// Files: refuse listings and downloads.
    #[serde(default)]
    pub write_only: bool,
    /// Files: largest file accepted (`512M`, `10G`, …).
    #[serde(default)]
    pub max_file_size: Option<String>,
    /// Chat: also serve the unauthenticated line protocol here (loopback or Unix only).
    #[serde(default)]
    pub line_listen: Option<String>,
    /// Chat: messages each room keeps and replays on join (default 50).
    #[serde(default)]
    pub history: Option<usize>,
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
                let (framed, line) = chat_servers(svc, &bound_addr, &mut notes)?;
                let engine = Config {
                    // Lurkers are normal in a chat: a quiet connection is not a dead one.
                    idle_timeout: None,
                    ..engine
                };
                if let Some(line_addr) = &svc.line_listen {
                    let line_listener = bind_line(line_addr, &opts).await?;
                    let line_engine = Config {
                        service: "chat-line".into(),
                        ..engine.clone()
                    };
                    let line_bound = line_listener.local_addr().map_err(bind_err)?;
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

/// Refuses options that do not belong to the entry's kind, rather than ignoring them.
fn check_fields(svc: &ServiceConfig) -> Result<(), ServeError> {
    let exec_only = svc.shell || !svc.allow_cmd.is_empty() || svc.timeout_secs.is_some();
    let files_only = svc.dir.is_some()
        || svc.policy.is_some()
        || svc.read_only
        || svc.write_only
        || svc.max_file_size.is_some();
    let chat_only = svc.line_listen.is_some() || svc.history.is_some();
    let process = svc.mode.as_deref() == Some("process");
    let misplaced = match svc.kind {
        ServiceKind::Echo => {
            if svc.udp && process {
                Some("mode = \"process\" needs a stream socket, not udp")
            } else {
                (exec_only || files_only || chat_only || svc.token_file.is_some() || svc.tls)
                    .then_some(
                    "token_file, tls, shell, allow_cmd, timeout_secs, line_listen, history and \
                     the files options are not echo options",
                )
            }
        }
        ServiceKind::Exec => (svc.upper || svc.udp || process || files_only || chat_only)
            .then_some(
            "upper, udp, mode = \"process\", line_listen, history and the files options are not \
             exec options",
        ),
        ServiceKind::Files => (svc.upper || svc.udp || process || exec_only || chat_only)
            .then_some(
                "upper, udp, mode = \"process\", shell, allow_cmd, timeout_secs, line_listen and \
             history are not files options",
            ),
        ServiceKind::Chat => {
            let chat_only_ok = svc.upper || svc.udp || process || exec_only || files_only;
            chat_only_ok.then_some(
                "chat takes listen, line_listen, history, token_file, tls and the engine options",
            )
        }
    };
    match misplaced {
        Some(why) => Err(ServeError::Config(format!("{:?} entry: {why}", svc.kind))),
        None => Ok(()),
    }
}

/// The files handler for an entry; a TLS fingerprint goes to `notes`. Beyond loopback a token
/// is required (from `token_file` or `SOCKIT_TOKEN`).
fn files_server(
    svc: &ServiceConfig,
    addr: &Addr,
    notes: &mut Vec<String>,
) -> Result<FilesServer, ServeError> {
    let config_err = |e: &dyn std::fmt::Display| ServeError::Config(format!("files: {e}"));
    let token = load_token(svc.token_file.as_deref()).map_err(|e| config_err(&e))?;
    check_exposure(addr, token.as_ref()).map_err(|e| config_err(&e))?;
    let policy = match svc.policy.as_deref() {
        None | Some("refuse") => Policy::Refuse,
        Some("overwrite") => Policy::Overwrite,
        Some("rename") => Policy::Rename,
        Some(other) => {
            return Err(config_err(&format!(
                "policy {other:?}: use refuse, overwrite or rename"
            )))
        }
    };
    if svc.read_only && svc.write_only {
        return Err(config_err(&"read_only and write_only exclude each other"));
    }
    let mut config = FilesConfig::new(svc.dir.clone().unwrap_or_else(|| DEFAULT_FILES_DIR.into()));
    config.store.policy = policy;
    if let Some(size) = &svc.max_file_size {
        config.store.max_file_size = parse_size(size).map_err(|e| config_err(&e))?;
    }
    config.access = match (svc.read_only, svc.write_only) {
        (true, _) => Access::ReadOnly,
        (_, true) => Access::WriteOnly,
        _ => Access::ReadWrite,
    };
    if svc.tls {
        let identity = ServerIdentity::self_signed(addr).map_err(|e| config_err(&e))?;
        let acceptor = TlsAcceptor::new(identity).map_err(|e| config_err(&e))?;
        notes.push(format!("tls fingerprint: {}", acceptor.fingerprint()));
        config.tls = Some(acceptor);
    }
    let shown = config.root.display().to_string();
    let server = FilesServer::new(config, token).map_err(|e| config_err(&e))?;
    notes.push(format!("dir: {shown}"));
    Ok(server)
}

/// The exec handler for an entry; a generated token and a TLS fingerprint go to `notes`.
fn exec_server(
    svc: &ServiceConfig,
    addr: &Addr,
    notes: &mut Vec<String>,
) -> Result<ExecServer, ServeError> {
    let config_err = |e: &dyn std::fmt::Display| ServeError::Config(format!("exec: {e}"));
    let token = match load_token(svc.token_file.as_deref()).map_err(|e| config_err(&e))? {
        Some(token) => token,
        None => {
            let token = Token::generate().map_err(|e| config_err(&e))?;
            // Shown once, to the operator; never logged.
            notes.push(format!(
                "token: {} (generated; clients set SOCKIT_TOKEN)",
                token.reveal()
            ));
            token
        }
    };
    let tls = match svc.tls {
        false => None,
        true => {
            let identity = ServerIdentity::self_signed(addr).map_err(|e| config_err(&e))?;
            let acceptor = TlsAcceptor::new(identity).map_err(|e| config_err(&e))?;
            notes.push(format!("tls fingerprint: {}", acceptor.fingerprint()));
            Some(acceptor)
        }
    };
    let config = ExecConfig {
        shell: svc.shell,
        allow_cmds: svc.allow_cmd.clone(),
        timeout: svc.timeout_secs.map(Duration::from_secs),
        tls,
        ..ExecConfig::default()
    };
    Ok(ExecServer::new(config, token))
}

/// The chat handlers for an entry, on one broker; a generated token (only beyond loopback)
/// and a TLS fingerprint go to `notes`.
fn chat_servers(
    svc: &ServiceConfig,
    addr: &Addr,
    notes: &mut Vec<String>,
) -> Result<(ChatServer, LineServer), ServeError> {
    let config_err = |e: &dyn std::fmt::Display| ServeError::Config(format!("chat: {e}"));
    let token = match load_token(svc.token_file.as_deref()).map_err(|e| config_err(&e))? {
        Some(token) => Some(token),
        None if addr.is_local() => None,
        None => {
            let token = Token::generate().map_err(|e| config_err(&e))?;
            notes.push(format!(
                "token: {} (generated; clients set SOCKIT_TOKEN)",
                token.reveal()
            ));
            Some(token)
        }
    };
    let tls = match svc.tls {
        false => None,
        true => {
            let identity = ServerIdentity::self_signed(addr).map_err(|e| config_err(&e))?;
            let acceptor = TlsAcceptor::new(identity).map_err(|e| config_err(&e))?;
            notes.push(format!("tls fingerprint: {}", acceptor.fingerprint()));
            Some(acceptor)
        }
    };
    let history = svc.history.unwrap_or(DEFAULT_HISTORY);
    if history > MAX_HISTORY {
        return Err(config_err(&format!("history is at most {MAX_HISTORY}")));
    }
    let broker = Broker::new(BrokerConfig {
        history,
        ..BrokerConfig::default()
    });
    let framed = FramedConfig {
        token,
        tls,
        ..FramedConfig::default()
    };
    Ok((
        ChatServer::new(broker.clone(), framed),
        LineServer::new(broker, LineConfig::default()),
    ))
}

/// Binds the chat line protocol, which has no authentication: loopback or Unix only.
async fn bind_line(text: &str, opts: &BindOptions) -> Result<Listener, ServeError> {
    let addr: Addr = text
        .parse()
        .map_err(|e: crate::net::AddrParseError| ServeError::Config(e.to_string()))?;
    if !addr.is_local() {
        return Err(ServeError::Config(format!(
            "chat: line_listen {addr} is not loopback; the line protocol has no authentication"
        )));
    }
    Listener::bind(&addr, opts)
        .await
        .map_err(|source| ServeError::Bind {
            kind: ServiceKind::Chat,
            source,
        })
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
        assert_eq!(config.services.len(), 5);
        for svc in &config.services {
            assert!(svc.listen.parse::<Addr>().unwrap().is_local());
            if let Some(line) = &svc.line_listen {
                assert!(line.parse::<Addr>().unwrap().is_local());
            }
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
        // Caught before binding, not when serve() starts after the banner was printed.
        let process_exec = ServeConfig::parse(
            "[[service]]\nkind = \"exec\"\nlisten = \"127.0.0.1:0\"\nmode = \"process\"\n",
        )
        .unwrap();
        assert!(check_fields(&process_exec.services[0]).is_err());
        let process_udp = ServeConfig::parse(
            "[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\nudp = true\nmode = \"process\"\n",
        )
        .unwrap();
        assert!(check_fields(&process_udp.services[0]).is_err());
        let files_option_on_echo = ServeConfig::parse(
            "[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\ndir = \"x\"\n",
        )
        .unwrap();
        assert!(check_fields(&files_option_on_echo.services[0]).is_err());
    }

    #[test]
    fn a_files_entry_needs_a_known_policy_and_a_token_beyond_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |listen: &str, extra: &str| {
            let text = format!(
                "[[service]]\nkind = \"files\"\nlisten = \"{listen}\"\ndir = {:?}\n{extra}",
                dir.path().to_str().unwrap()
            );
            ServeConfig::parse(&text).unwrap().services.remove(0)
        };
        let local: Addr = "127.0.0.1:9".parse().unwrap();
        let mut notes = Vec::new();
        let bad_policy = entry("127.0.0.1:0", "policy = \"clobber\"\n");
        assert!(files_server(&bad_policy, &local, &mut notes).is_err());
        let public: Addr = "0.0.0.0:9".parse().unwrap();
        assert!(check_exposure(&public, None).is_err());
        assert!(check_exposure(&local, None).is_ok());
        let missing_token = entry("0.0.0.0:0", "token_file = \"/nonexistent/token\"\n");
        assert!(files_server(&missing_token, &public, &mut notes).is_err());
        assert!(files_server(&entry("127.0.0.1:0", ""), &local, &mut notes).is_ok());
    }
}
