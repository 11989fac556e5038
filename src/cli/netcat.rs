//! The netcat commands: `connect` and `listen` (with `--exec`, a command per connection).

use std::ffi::OsString;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::launch::ServiceDefaults;
use super::{parse_duration, EngineArgs, Failure};
use sockit::engine::{self, ProcessCommand};
use sockit::net::{Addr, BarePort, Target};
use sockit::tools::netcat::{self, ListenOptions, NetcatError, PumpOptions};

/// How one stream session moves bytes, the same for `connect` and `listen`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Write peer bytes unescaped even when stdout is a terminal.
    #[arg(long)]
    pub raw: bool,
    /// After one direction ends, end the session this long later (e.g. 0, 2s), as `nc -q`
    /// and `socat -t` do; by default both directions run to their end.
    #[arg(long, value_parser = parse_duration)]
    pub quit_after: Option<std::time::Duration>,
    /// Only send stdin, ignore what arrives, and end once stdin is sent (ncat --send-only).
    #[arg(long, conflicts_with = "recv_only")]
    pub send_only: bool,
    /// Only receive; never read stdin (ncat --recv-only).
    #[arg(long)]
    pub recv_only: bool,
}

impl SessionArgs {
    fn pump(&self, idle_timeout: Option<std::time::Duration>) -> PumpOptions {
        PumpOptions {
            raw: self.raw,
            send_only: self.send_only,
            recv_only: self.recv_only,
            quit_after: self.quit_after,
            idle_timeout,
            datagram_bytes: None,
            verbose: false,
        }
    }
}

/// `sockit connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Address: HOST:PORT, [IPv6]:PORT or unix:/path; HOST may be a name (/etc/hosts, DNS).
    pub addr: String,
    /// The port, when the host is given alone as nc takes it (`connect example.org 80`).
    pub port: Option<String>,
    /// UDP (or Unix datagram).
    #[arg(long, short)]
    pub udp: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub session: SessionArgs,
    /// Close the connection after this long without a byte either way (e.g. 30s; ncat -i).
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<std::time::Duration>,
    /// UDP: the largest datagram sent; each stdin read is split into datagrams this big.
    #[arg(long, default_value_t = netcat::DEFAULT_DATAGRAM_SEND_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_507))]
    pub datagram_size: usize,
}

/// `sockit listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address: HOST:PORT, [IPv6]:PORT, unix:/path, or a bare PORT for 127.0.0.1:PORT.
    pub addr: String,
    /// The port, when the host is given alone as nc takes it (`listen 127.0.0.1 9000`).
    pub port: Option<String>,
    /// UDP (or Unix datagram): talk to whoever sends first.
    #[arg(long, short)]
    pub udp: bool,
    /// Keep accepting peers: stdin goes to all of them (with --exec, a command for each; with
    /// --udp --exec, a command per datagram). Without it, listen serves one peer and exits,
    /// as ncat does.
    #[arg(long, short)]
    pub keep_open: bool,
    /// Run this command per connection with the socket as stdin/stdout (split on spaces).
    #[arg(long, short, conflicts_with = "sh_exec")]
    pub exec: Option<String>,
    /// Like --exec, through `sh -c`.
    #[arg(long)]
    pub sh_exec: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub session: SessionArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub engine: EngineArgs,
}

fn netcat_failure(e: NetcatError) -> Failure {
    match e {
        NetcatError::Usage(msg) => Failure::Usage(anyhow::anyhow!(msg)),
        NetcatError::Io(e) => Failure::from(anyhow::Error::from(e)),
    }
}

/// The addresses `ADDR [PORT]` names: a malformed target is a usage error (exit 2), a name
/// that does not resolve a runtime one (exit 1), as with nc.
async fn resolve(addr: &str, port: Option<&str>, bare: BarePort) -> Result<Vec<Addr>, Failure> {
    let target = Target::parse(addr, port, bare).map_err(|e| Failure::Usage(e.into()))?;
    Ok(target.resolve().await.map_err(anyhow::Error::from)?)
}

pub(super) async fn run_connect(args: ConnectArgs, verbose: bool) -> Result<(), Failure> {
    let addrs = resolve(&args.addr, args.port.as_deref(), BarePort::Refused).await?;
    let pump = PumpOptions {
        datagram_bytes: Some(args.datagram_size),
        verbose,
        ..args.session.pump(args.idle_timeout)
    };
    netcat::connect(&addrs, args.udp, pump)
        .await
        .map_err(netcat_failure)
}

pub(super) async fn run_listen(args: ListenArgs) -> Result<(), Failure> {
    let exec = match (&args.exec, &args.sh_exec) {
        (Some(line), _) => {
            let mut words = line.split_whitespace().map(OsString::from);
            let program = words
                .next()
                .ok_or_else(|| Failure::Usage(anyhow::anyhow!("--exec needs a command")))?;
            Some(ProcessCommand {
                program: program.into(),
                args: words.collect(),
                env: Vec::new(),
            })
        }
        (None, Some(line)) => Some(ProcessCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), line.into()],
            env: Vec::new(),
        }),
        (None, None) => None,
    };
    // A command per datagram: at most this many run at once unless --max-conns says.
    let defaults = match (args.udp, &exec) {
        (true, Some(_)) => ServiceDefaults {
            max_conns: netcat::DEFAULT_DATAGRAM_EXEC_CONCURRENCY,
            ..ServiceDefaults::default()
        },
        _ => ServiceDefaults::default(),
    };
    let shutdown: CancellationToken =
        engine::shutdown_on_signals().context("cannot install signal handlers")?;
    // A name that lists several addresses (localhost as ::1 and 127.0.0.1) binds the first,
    // as nc does.
    let addrs = resolve(&args.addr, args.port.as_deref(), BarePort::Loopback).await?;
    let Some(addr) = addrs.into_iter().next() else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{} names no address",
            args.addr
        )));
    };
    let opts = ListenOptions {
        addr,
        udp: args.udp,
        keep_open: args.keep_open,
        exec,
        bind: args.engine.bind_options(),
        engine: args
            .engine
            .config("listen", engine::Mode::Concurrent, defaults),
        // Like ncat -i: no idle limit unless asked for.
        pump: args
            .session
            .pump(args.engine.idle_timeout.and_then(|limit| limit.0)),
    };
    netcat::listen(opts, shutdown).await.map_err(netcat_failure)
}
