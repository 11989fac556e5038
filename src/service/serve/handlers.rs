//! The handler each kind of entry runs, built from its settings: tokens, TLS, policies.

use std::time::Duration;

use super::config::{ServeError, ServiceConfig, ServiceKind};
use crate::net::tls::{ServerIdentity, TlsAcceptor};
use crate::net::{Addr, BindOptions, Listener};
use crate::service::chat::{
    self, session_config, session_config_with_line_port, Broker, BrokerConfig, ChatServer,
    ChatService, FramedConfig, LineConfig, LineServer, DEFAULT_HISTORY, MAX_HISTORY,
};
use crate::service::exec::{self, ExecConfig, ExecServer, ExecService};
use crate::service::files::{
    self, check_exposure, parse_size, Access, FilesConfig, FilesServer, FilesService, Policy,
    DEFAULT_FILES_DIR,
};
use crate::session::{load_token, GateConfig, Token};

/// The files handler for an entry; a TLS fingerprint goes to `notes`. Beyond loopback a token
/// is required (from `token_file` or `SOCKIT_TOKEN`).
pub(super) fn files_server(
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
    if let Some(secs) = svc.partial_max_age_secs {
        config.partial_max_age = (secs > 0).then(|| Duration::from_secs(secs));
    }
    config.access = match (svc.read_only, svc.write_only) {
        (true, _) => Access::ReadOnly,
        (_, true) => Access::WriteOnly,
        _ => Access::ReadWrite,
    };
    let mut gate = files::gate(token);
    if svc.tls {
        let identity = ServerIdentity::self_signed(addr).map_err(|e| config_err(&e))?;
        let acceptor = TlsAcceptor::new(identity).map_err(|e| config_err(&e))?;
        notes.push(format!("tls fingerprint: {}", acceptor.fingerprint()));
        gate.tls = Some(acceptor);
    }
    let shown = config.root.display().to_string();
    let server = FilesServer::new(gate, FilesService::new(config).map_err(|e| config_err(&e))?);
    notes.push(format!("dir: {shown}"));
    Ok(server)
}

/// The exec handler for an entry; a generated token and a TLS fingerprint go to `notes`.
pub(super) fn exec_server(
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
        ..ExecConfig::default()
    };
    let gate = GateConfig {
        tls,
        ..exec::gate(token)
    };
    Ok(ExecServer::new(gate, ExecService::new(config)))
}

/// The chat handlers for an entry, on one broker; a generated token (only beyond loopback)
/// and a TLS fingerprint go to `notes`.
pub(super) fn chat_servers(
    svc: &ServiceConfig,
    addr: &Addr,
    line: Option<&Addr>,
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
    let gate = GateConfig {
        tls,
        session: line.map_or_else(session_config, session_config_with_line_port),
        ..chat::gate(token)
    };
    Ok((
        ChatServer::new(
            gate,
            ChatService::new(broker.clone(), FramedConfig::default()),
        ),
        LineServer::new(broker, LineConfig::default()),
    ))
}

/// Binds the chat line protocol, which has no authentication: loopback or Unix only.
pub(super) async fn bind_line(text: &str, opts: &BindOptions) -> Result<Listener, ServeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::serve::ServeConfig;

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

    #[test]
    fn partial_max_age_secs_sets_how_long_a_files_entry_keeps_partials() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir
            .path()
            .join(".sockit-partial")
            .join("0123456789abcdef0123456789abcdef.part");
        std::fs::create_dir(partial.parent().unwrap()).unwrap();
        std::fs::write(&partial, b"half").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
        let file = std::fs::File::options().write(true).open(&partial).unwrap();
        file.set_modified(two_hours_ago).unwrap();
        let local: Addr = "127.0.0.1:9".parse().unwrap();
        let mut notes = Vec::new();
        let mut start = |max_age: &str| {
            let text = format!(
                "[[service]]\nkind = \"files\"\nlisten = \"127.0.0.1:0\"\ndir = {:?}\n{max_age}",
                dir.path().to_str().unwrap()
            );
            let svc = ServeConfig::parse(&text).unwrap().services.remove(0);
            files_server(&svc, &local, &mut notes).unwrap();
        };
        start("");
        assert!(
            partial.exists(),
            "the default (7 days) keeps a 2-hour-old partial"
        );
        start("partial_max_age_secs = 0\n");
        assert!(partial.exists(), "0 keeps partials");
        start("partial_max_age_secs = 3600\n");
        assert!(!partial.exists(), "an hour's limit removes it at start");
    }
}
