//! What every server command shares: the engine flags (the same set on every server command
//! and in every `sockit serve` entry), and a bound service ready to run, whether it runs alone
//! (`sockit echo`) or in a set (`sockit serve`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use super::{parse_duration, Failure};
use sockit::engine::{self, Config, Mode};
use sockit::net::{parse_net, Acl, Addr, BindOptions, Keepalive, DEFAULT_BACKLOG};
use sockit::session::{PendingLimits, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_SOURCE};

/// Engine options, flattened into every server command and accepted by every `sockit serve`
/// entry under the same names.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Maximum concurrent connections; more wait in the backlog (default: the service's own,
    /// 10000 for most, 256 for files).
    #[arg(long)]
    pub max_conns: Option<usize>,
    /// Handshakes in progress at once (framed services); at the cap the oldest is dropped,
    /// so silent peers cannot keep a client out.
    #[arg(long, default_value_t = DEFAULT_MAX_PENDING, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_pending: usize,
    /// Handshakes in progress at once from one source address (an IPv6 /64).
    #[arg(long, default_value_t = DEFAULT_MAX_PENDING_PER_SOURCE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_pending_per_source: usize,
    /// Close connections idle this long (e.g. 30s, 5m, or never; default: the service's own,
    /// 300s, or never for exec and chat, whose quiet connections are normal).
    #[arg(long, value_parser = parse_limit)]
    pub idle_timeout: Option<Limit>,
    /// Time connections get to finish at shutdown.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub drain_timeout: Duration,
    /// Only serve peers in this network (CIDR or IP; repeatable).
    #[arg(long, value_parser = parse_net)]
    pub allow: Vec<IpNet>,
    /// Never serve peers in this network (CIDR or IP; repeatable; wins over --allow).
    #[arg(long, value_parser = parse_net)]
    pub deny: Vec<IpNet>,
    /// Listen backlog.
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// Set SO_REUSEPORT so several processes can share the port.
    #[arg(long)]
    pub reuse_port: bool,
    /// TCP keepalive: the first probe after this much quiet, and a peer that vanished
    /// without a close (a pulled cable) dropped about as long again later; never turns it
    /// off.
    #[arg(long, value_parser = parse_limit, default_value = "60s")]
    pub keepalive: Limit,
}

/// What a service defaults to where the engine flags leave it open.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    /// `--max-conns` when not given.
    pub max_conns: usize,
    /// `--idle-timeout` when not given (`None`: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for ServiceDefaults {
    fn default() -> Self {
        ServiceDefaults {
            max_conns: engine::DEFAULT_MAX_CONNS,
            idle_timeout: Some(engine::DEFAULT_IDLE_TIMEOUT),
        }
    }
}

impl EngineArgs {
    /// The engine settings for `service` run in `mode`.
    pub fn config(&self, service: &str, mode: Mode, defaults: ServiceDefaults) -> Config {
        Config {
            service: service.into(),
            mode,
            max_conns: self.max_conns.unwrap_or(defaults.max_conns),
            idle_timeout: self.idle_timeout.map_or(defaults.idle_timeout, |l| l.0),
            drain_timeout: self.drain_timeout,
            acl: self.acl(),
            ..Config::default()
        }
    }

    /// The access list.
    pub fn acl(&self) -> Acl {
        Acl {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
        }
    }

    /// The socket options for binding.
    pub fn bind_options(&self) -> BindOptions {
        BindOptions {
            backlog: self.backlog,
            reuse_port: self.reuse_port,
            keepalive: self.keepalive.0.map(Keepalive::after),
            ..BindOptions::default()
        }
    }

    /// The pending-handshake caps.
    pub fn pending(&self) -> PendingLimits {
        PendingLimits {
            total: self.max_pending,
            per_source: self.max_pending_per_source,
        }
    }
}

/// A time limit that can be switched off: `never` on the command line and in configs. Zero
/// is refused, so that no reader has to guess whether it means "at once" or "never".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<Duration>);

/// Parses a [`Limit`]: `never`, or a positive duration (`500ms`, `30s`, `5m`, `12h`, `7d`).
///
/// # Errors
/// A message naming the bad input, and for zero what to write instead.
pub fn parse_limit(s: &str) -> Result<Limit, String> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(Limit(None));
    }
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{s:?} is no limit: give a positive duration, or `never` for none"
        ));
    }
    Ok(Limit(Some(d)))
}

/// A line for the operator about a bound service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A token generated at start (shown once, never logged).
    Token(String),
    /// The fingerprint of a generated or given TLS certificate, for clients' `--tls-pin`.
    Fingerprint(String),
    /// Anything else worth a line (the directory served, "no auth").
    Text(String),
}

/// The future that serves one bound service until shutdown.
pub type ServeFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// A service bound to its address and ready to serve: the one shape every server command and
/// every `sockit serve` entry comes down to.
pub struct Bound {
    /// The service (`echo`, `exec`, …).
    pub service: &'static str,
    /// `tcp`, `udp`, `unix`, `unixgram`, `tls` or `line`.
    pub transport: &'static str,
    /// What the single command's `listening on` line calls it (`chat line protocol`).
    pub label: String,
    /// Said after the address on that line (`(udp)`, `(dir D)`), if anything.
    pub detail: Option<String>,
    /// The bound address.
    pub addr: Addr,
    /// Lines for the operator.
    pub notes: Vec<Note>,
    /// Serves until the shutdown token given at bind time fires.
    pub run: ServeFuture,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("service", &self.service)
            .field("transport", &self.transport)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The transport name of a stream service at `addr`.
pub fn stream_transport(addr: &Addr, tls: bool) -> &'static str {
    match (tls, addr) {
        (true, _) => "tls",
        (false, Addr::Unix(_)) => "unix",
        (false, Addr::Inet(_)) => "tcp",
    }
}

/// Runs bound services together until `shutdown` fires or one fails (which stops the rest).
///
/// # Errors
/// The first service's error.
pub async fn run_all(bound: Vec<Bound>, shutdown: CancellationToken) -> io::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for b in bound {
        tasks.spawn(b.run);
    }
    let mut first_error = None;
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res.map_err(io::Error::other).and_then(|r| r) {
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs the services of one command: their `listening on` lines on stderr, generated tokens
/// and fingerprints on stdout (public lines a script can read), then serves until Ctrl-C.
///
/// # Errors
/// A runtime failure of a service.
pub async fn run_command(bound: Vec<Bound>, shutdown: CancellationToken) -> Result<(), Failure> {
    for b in &bound {
        for note in &b.notes {
            match note {
                Note::Token(token) => say(&format!("{} token: {token}", b.service)),
                Note::Fingerprint(fp) => say(&format!("tls fingerprint: {fp}")),
                Note::Text(_) => {}
            }
        }
        let detail = b
            .detail
            .as_ref()
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        eprintln!("{} listening on {}{detail}", b.label, b.addr);
    }
    let service = bound.first().map_or("sockit", |b| b.service);
    run_all(bound, shutdown)
        .await
        .map_err(|e| Failure::Runtime(anyhow::Error::from(e).context(service)))
}

/// Writes one line to stdout for whoever reads it. A reader that went away (a closed pipe)
/// must not take the server down with it, so a failed write is dropped, not a panic as with
/// `println!`.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// A bind failure as the command's failure (an address in use is a usage error).
pub fn bind_failure(service: &str, e: io::Error) -> Failure {
    Failure::from(anyhow::Error::from(e).context(service.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_a_positive_duration_or_never_and_zero_is_refused() {
        assert_eq!(parse_limit("never").unwrap(), Limit(None));
        assert_eq!(
            parse_limit("5m").unwrap(),
            Limit(Some(Duration::from_secs(300)))
        );
        let zero = parse_limit("0").unwrap_err();
        assert!(zero.contains("never"), "{zero}");
        assert!(parse_limit("0s").is_err());
        assert!(parse_limit("soon").is_err());
    }
}
