//! The load generators: `bench echo`, `bench hold`, `bench chat`.

use crate::cli::peer::Peer;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{parse_duration, Failure};
use sockit::session::load_token;
use sockit::tools::bench::{self, BenchError, EchoLoad, HoldLoad};

/// `sockit bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Drive an echo server and report requests/s, MB/s and latency percentiles.
    Echo(BenchEchoArgs),
    /// Hold many idle connections open and probe that the server still answers.
    Hold(BenchHoldArgs),
    /// Chat fan-out: receivers and senders in one room of a chat broker (line protocol,
    /// the browser's WebSocket, ncat --chat or Redis), over one or more nodes.
    Chat(BenchChatArgs),
}

/// `sockit bench chat`.
#[derive(Debug, Args)]
pub struct BenchChatArgs {
    /// The broker's address: its line port (`sockit chat serve --line-listen`, `ncat --chat`,
    /// a redis-server) or, with --ws, its web page's server (`--web-listen`, or `sockit http
    /// serve --chat`: the default `sockit serve` set's http port). Several addresses
    /// (the nodes of one chat) spread receivers and senders over them round-robin.
    #[arg(required = true, num_args = 1..)]
    pub addrs: Vec<Peer>,
    /// Clients that only receive.
    #[arg(long, default_value_t = 100)]
    pub receivers: usize,
    /// Clients that send.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Bytes per message (newline excluded).
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// How long senders send (e.g. 5s).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Messages a sender may be ahead of the slowest receiver (keep senders × window under
    /// the broker's per-client queue, 4,096 messages for sockit, or receivers get dropped).
    #[arg(long, default_value_t = 100)]
    pub window: u64,
    /// Pace each sender at this many messages per second (default: as fast as the window
    /// allows).
    #[arg(long)]
    pub rate: Option<u32>,
    /// No nick handshake: for brokers like `ncat --chat`.
    #[arg(long, conflicts_with_all = ["redis", "ws"])]
    pub raw: bool,
    /// Speak Redis pub/sub (RESP): receivers SUBSCRIBE, senders PUBLISH, to a redis-server.
    #[arg(long, conflicts_with = "ws")]
    pub redis: bool,
    /// Speak the chat page's protocol: a WebSocket to ws://ADDR/chat/ws with the page's
    /// Origin and its JSON messages (`sockit chat serve --web-listen`, `sockit http serve
    /// --chat`).
    #[arg(long)]
    pub ws: bool,
    /// With --ws, the server's token if it asks for one: a file (mode 0600); else
    /// SOCKIT_TOKEN.
    #[arg(long, requires = "ws")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `sockit bench echo`.
#[derive(Debug, Args)]
pub struct BenchEchoArgs {
    /// The echo server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Peer,
    /// Concurrent connections (or UDP clients).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How long to run (e.g. 10s).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// UDP echo.
    #[arg(long)]
    pub udp: bool,
    /// Check every echoed byte.
    #[arg(long)]
    pub verify: bool,
    /// Open a connection per request (measures connection rate).
    #[arg(long)]
    pub connect_per_request: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `sockit bench hold`.
#[derive(Debug, Args)]
pub struct BenchHoldArgs {
    /// The echo server: HOST:PORT.
    pub addr: Peer,
    /// Connections to hold.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// How long to hold them.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub seconds: Duration,
    /// Probe round trips on a fresh connection while holding.
    #[arg(long, default_value_t = 200)]
    pub probes: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run_bench(cmd: BenchCommand) -> Result<(), Failure> {
    let (text, json, failure) = match cmd {
        BenchCommand::Echo(a) => {
            let load = EchoLoad {
                addr: a.addr.resolve().await?,
                conns: a.conns,
                size: a.size,
                duration: a.duration,
                pipeline: a.pipeline,
                udp: a.udp,
                verify: a.verify,
                connect_per_request: a.connect_per_request,
            };
            let report = bench::run_echo(&load).await.map_err(bench_failure)?;
            let json = a.json.then(|| serde_json::to_value(&report)).transpose();
            (report.table(), json.context("report")?, report.failure())
        }
        BenchCommand::Hold(a) => {
            let load = HoldLoad {
                addr: a.addr.resolve().await?,
                conns: a.conns,
                duration: a.seconds,
                probes: a.probes,
            };
            let report = bench::run_hold(&load).await.map_err(bench_failure)?;
            let json = a.json.then(|| serde_json::to_value(&report)).transpose();
            (report.table(), json.context("report")?, report.failure())
        }
        BenchCommand::Chat(a) => {
            let mut addrs = Vec::with_capacity(a.addrs.len());
            for peer in &a.addrs {
                addrs.push(peer.resolve().await?);
            }
            let token = match a.ws {
                true => load_token(a.token_file.as_deref()).context("cannot read the token")?,
                false => None,
            };
            let load = bench::ChatLoad {
                addrs,
                token,
                proto: match (a.raw, a.redis, a.ws) {
                    (true, _, _) => bench::ChatProto::Raw,
                    (_, true, _) => bench::ChatProto::Redis,
                    (_, _, true) => bench::ChatProto::WebSocket,
                    _ => bench::ChatProto::Sockit,
                },
                receivers: a.receivers,
                senders: a.senders,
                size: a.size,
                duration: a.duration,
                window: a.window,
                rate: a.rate,
            };
            let report = bench::run_chat(&load).await.map_err(bench_failure)?;
            let json = a.json.then(|| serde_json::to_value(&report)).transpose();
            (report.table(), json.context("report")?, report.failure())
        }
    };
    match json {
        Some(mut json) => {
            // Every report says in JSON too whether the load failed, and why.
            json["failure"] = serde_json::Value::from(failure.clone());
            super::output::print_line(&json.to_string());
        }
        None => super::output::print_line(text.trim_end()),
    }
    // A load that failed is not a measurement: exit 1, as a failed test would.
    match failure {
        Some(why) => Err(Failure::Exit {
            code: 1,
            error: Some(anyhow::anyhow!("bench failed: {why}")),
        }),
        None => Ok(()),
    }
}

fn bench_failure(e: BenchError) -> Failure {
    match e {
        BenchError::InvalidLoad(_) => Failure::Usage(e.into()),
        e => Failure::Runtime(e.into()),
    }
}
