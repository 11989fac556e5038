//! What every server command shares: the engine flags (the same set on every server command
//! and in every `sockit serve` entry), and a bound service ready to run, whether it runs alone
//! (`sockit echo`) or in a set (`sockit serve`).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use super::output::{eprint_line, say};
use super::{parse_duration, Failure};
use sockit::engine::{self, Config, Mode};
use sockit::net::{parse_net, Acl, Addr, BindOptions, Keepalive, DEFAULT_BACKLOG};
use sockit::session::{
    load_token, PendingLimits, Token, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_PER_SOURCE,
};

/// Engine options, flattened into every server command and accepted by every `sockit serve`
/// entry under the same names.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Maximum concurrent connections; more wait in the backlog (default: the service's own,
    /// 10000 for most, 256 for files).
    #[arg(long)]
    pub max_conns: Option<usize>,
    /// Live connections from one source address (an IPv6 /64) at once; more are closed at
    /// once. 127.0.0.1, ::1 and Unix peers, shared by every local client, are not counted.
    #[arg(long, default_value_t = engine::DEFAULT_MAX_CONNS_PER_SOURCE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_conns_per_source: usize,
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
            max_conns_per_source: self.max_conns_per_source,
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

/// Where a service's token comes from, one rule for every service: its own `--token-file`,
/// else `SOCKIT_TOKEN`, else the token of the `sockit serve` set it runs in, else a generated
/// one when the service needs one (exec always, any service beyond loopback), printed once.
///
/// A set (`sockit serve`) has one token for all its services: the first service that needs
/// one generates it and every later service without a token of its own takes it, so a client
/// given `SOCKIT_TOKEN` reaches every service of the set. The set's token is settled before
/// any service is bound (see [`Tokens::for_set`]), so the order entries are bound in does not
/// matter.
#[derive(Debug)]
pub struct Tokens {
    /// The set's token, once settled.
    shared: Option<Token>,
    /// Whether the set's token was generated here (else it is `SOCKIT_TOKEN`'s).
    generated: bool,
    /// Whether a generated token is still to be printed, by the first service that takes it.
    unannounced: std::sync::atomic::AtomicBool,
}

impl Tokens {
    /// Tokens for one command running alone.
    pub fn single() -> Self {
        Tokens {
            shared: None,
            generated: false,
            unannounced: false.into(),
        }
    }

    /// Tokens for a set of services, where `needs_token` says whether any service of the set
    /// takes one: then the set's token is `SOCKIT_TOKEN`, or generated now and printed by
    /// the first service that uses it.
    ///
    /// # Errors
    /// A bad `SOCKIT_TOKEN`, or no randomness for a new token.
    pub fn for_set(needs_token: bool) -> Result<Self, Failure> {
        if !needs_token {
            return Ok(Tokens::single());
        }
        let (shared, generated) = match load_token(None).map_err(|e| Failure::Usage(e.into()))? {
            Some(token) => (token, false),
            None => (Token::generate().context("cannot generate a token")?, true),
        };
        Ok(Tokens {
            shared: Some(shared),
            generated,
            unannounced: generated.into(),
        })
    }

    /// The token of a service at `addr` that needs one only beyond loopback: its own, the
    /// set's, or beyond loopback a generated one (see [`Tokens`]); printed lines go into
    /// `notes`.
    ///
    /// # Errors
    /// A token file that cannot be used, a bad `SOCKIT_TOKEN`, or no randomness.
    pub fn resolve(
        &self,
        file: Option<&Path>,
        addr: &Addr,
        notes: &mut Vec<Note>,
    ) -> Result<Option<Token>, Failure> {
        match self.existing(file, addr, notes)? {
            Some(token) => Ok(Some(token)),
            None if addr.is_local() => Ok(None),
            None => generate(notes).map(Some),
        }
    }

    /// The token of a service that always needs one (exec): as [`Tokens::resolve`], with a
    /// generated one on loopback too.
    ///
    /// # Errors
    /// As [`Tokens::resolve`].
    pub fn require(
        &self,
        file: Option<&Path>,
        addr: &Addr,
        notes: &mut Vec<Note>,
    ) -> Result<Token, Failure> {
        match self.existing(file, addr, notes)? {
            Some(token) => Ok(token),
            None => generate(notes),
        }
    }

    /// The service's own token (file, else `SOCKIT_TOKEN`), else the set's; a given token
    /// too short to be safe beyond loopback is refused.
    fn existing(
        &self,
        file: Option<&Path>,
        addr: &Addr,
        notes: &mut Vec<Note>,
    ) -> Result<Option<Token>, Failure> {
        if file.is_some() || self.shared.is_none() {
            if let Some(token) = load_token(file).map_err(|e| Failure::Usage(e.into()))? {
                check_strength(&token, addr)?;
                return Ok(Some(token));
            }
        }
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        check_strength(shared, addr)?;
        if self
            .unannounced
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            // Shown once, to the operator; never logged.
            notes.push(Note::Token(shared.reveal().to_owned()));
        } else if self.generated {
            notes.push(Note::Text(SAME_TOKEN.into()));
        }
        Ok(Some(shared.clone()))
    }
}

/// The note of a service of a set that takes the token printed for an earlier one.
pub const SAME_TOKEN: &str = "token: the same as above";

/// Refuses a token shorter than [`MIN_PUBLIC_TOKEN_BYTES`] for a service beyond loopback,
/// where anyone who can reach the port can guess at it.
fn check_strength(token: &Token, addr: &Addr) -> Result<(), Failure> {
    let len = token.reveal().len();
    if len < MIN_PUBLIC_TOKEN_BYTES && !addr.is_local() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "the token is {len} bytes long, too short for {addr}, beyond loopback: use at \
             least {MIN_PUBLIC_TOKEN_BYTES} (e.g. `head -c 32 /dev/urandom | base64 > FILE`)"
        )));
    }
    Ok(())
}

/// Shortest token accepted for a service beyond loopback.
pub const MIN_PUBLIC_TOKEN_BYTES: usize = 16;

/// A new token, shown once to the operator through `notes` and never logged.
fn generate(notes: &mut Vec<Note>) -> Result<Token, Failure> {
    let token = Token::generate().context("cannot generate a token")?;
    notes.push(Note::Token(token.reveal().to_owned()));
    Ok(token)
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
        eprint_line(&format!("{} listening on {}{detail}", b.label, b.addr));
    }
    let service = bound.first().map_or("sockit", |b| b.service);
    run_all(bound, shutdown)
        .await
        .map_err(|e| Failure::Runtime(anyhow::Error::from(e).context(service)))
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
