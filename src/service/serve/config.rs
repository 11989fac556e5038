//! The service-set file: its TOML shape, the embedded default, and the checks that run
//! before anything binds.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::net::{parse_net, Acl};
use crate::server::{Config, Mode};

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
    /// Files: remove partial files (kept for a resume) untouched this many seconds (default
    /// 7 days); 0 keeps them.
    #[serde(default)]
    pub partial_max_age_secs: Option<u64>,
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

/// Refuses options that do not belong to the entry's kind, rather than ignoring them.
pub(super) fn check_fields(svc: &ServiceConfig) -> Result<(), ServeError> {
    let exec_only = svc.shell || !svc.allow_cmd.is_empty() || svc.timeout_secs.is_some();
    let files_only = svc.dir.is_some()
        || svc.policy.is_some()
        || svc.read_only
        || svc.write_only
        || svc.max_file_size.is_some()
        || svc.partial_max_age_secs.is_some();
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

/// The engine settings of an entry: mode, limits, ACL, drain deadline.
pub(super) fn engine_config(
    svc: &ServiceConfig,
    drain_secs: Option<u64>,
) -> Result<Config, ServeError> {
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
    use crate::net::Addr;

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
}
