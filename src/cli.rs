//! The command line: clap types, and the dispatch from each subcommand to the library.

mod chat;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use tokio::signal::unix::{signal as unix_signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use chat::{ChatCommand, ChatJoinArgs, ChatServeArgs};

use crate::net::tls::{Fingerprint, ServerIdentity, ServerTrust, TlsAcceptor, TlsConnector};
use crate::net::{parse_net, Acl, Addr, BindOptions, Datagram, Listener, DEFAULT_BACKLOG};
use crate::server::{self, serve, serve_datagram, Config, Mode, ProcessCommand};
use crate::service::bench::{self, BenchError, EchoLoad, HoldLoad};
use crate::service::echo::{self, Echo, EchoDatagram};
use crate::service::exec::local::{self, Hangups};
use crate::service::exec::shell::{LineForm, ShellIo};
use crate::service::exec::tutorial::{self, TutorialConfig, TutorialServer};
use crate::service::exec::{self, ExecConfig, ExecServer, LocalIo, RunRequest, SignalName};
use crate::service::framed_echo::FramedEcho;
use crate::service::netcat::{self, ListenOptions, NetcatError};
use crate::service::serve::{bind_all, ServeConfig, DEFAULT_CONFIG};
use crate::session::{load_token, Token};
use crate::stdio::ThreadWriter;
use crate::terminal::{RawMode, WindowSize};

mod files;

pub use files::{
    parse_hash, parse_size, ClientArgs, FilesServeArgs, GetArgs, LsArgs, PutArgs, RecvArgs,
    ServerArgs,
};

/// A socket toolkit: echo, netcat, load generator and more, secure by default.
#[derive(Debug, Parser)]
#[command(name = "sockit", version, about)]
pub struct Cli {
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less logging (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a set of services (the embedded loopback-only default, or --config FILE).
    Serve(ServeArgs),
    /// Echo server over TCP, UDP or Unix sockets.
    Echo(EchoArgs),
    /// Connect to ADDR: stdin goes to the socket, the socket to stdout (like `nc HOST PORT`).
    Connect(ConnectArgs),
    /// Listen on ADDR for a peer (like `nc -l`), or run a command per connection (--exec).
    Listen(ListenArgs),
    /// Remote command execution with token auth (a safe "simulated ssh").
    #[command(subcommand)]
    Exec(ExecCommand),
    /// File service: serve a directory (`files serve`).
    #[command(subcommand)]
    Files(FilesCommand),
    /// Send files and directories to a file server, verified and resumable.
    Put(PutArgs),
    /// Fetch files and directories from a file server.
    Get(GetArgs),
    /// List a directory of a file server.
    Ls(LsArgs),
    /// Wait for one sender, receive its files into --dir, exit with its status.
    Recv(RecvArgs),
    /// Send files to `sockit recv` (the same as put).
    Send(PutArgs),
    /// Chat: rooms, nicks, history; sockit clients and plain nc alike.
    #[command(subcommand)]
    Chat(ChatCommand),
    /// Load generators.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `sockit files ...`.
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Receive into and serve from a directory: verified, atomic, resumable transfers.
    Serve(FilesServeArgs),
}

/// `sockit exec ...`.
#[derive(Debug, Subcommand)]
pub enum ExecCommand {
    /// Run commands for authenticated clients, one per connection.
    Serve(ExecServeArgs),
    /// Run one command on an exec server; exits with its status (ssh's rule).
    Run(ExecRunArgs),
    /// A prompt loop: each line runs on the server (a connection per line) until EOF or `exit`.
    Shell(ExecShellArgs),
}

/// `sockit exec shell`.
#[derive(Debug, Args)]
pub struct ExecShellArgs {
    /// The exec server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Addr,
    /// File holding the token (mode 0600); else SOCKIT_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Send each line split on whitespace as a program and its arguments, for servers
    /// without --shell (default: each line is one `sh -c` line).
    #[arg(long)]
    pub words: bool,
}

/// Another program's protocol to speak instead of sockit's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// The Python socket lessons' "simulated ssh": a raw command line in; a
    /// `struct.pack("i")` length, a JSON header and stdout+stderr out. No auth: loopback only.
    Tutorial,
}

/// `sockit exec serve`.
#[derive(Debug, Args)]
pub struct ExecServeArgs {
    /// Address: HOST:PORT, [IPv6]:PORT or unix:/path.
    #[arg(long, default_value = exec::DEFAULT_EXEC_ADDR)]
    pub listen: Addr,
    /// File holding the token (mode 0600); else SOCKIT_TOKEN; else one is generated and printed.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Allow clients to run `sh -c LINE` (exec run --shell).
    #[arg(long, conflicts_with = "allow_cmd")]
    pub shell: bool,
    /// Only run this program (exact argv[0]; repeatable).
    #[arg(long)]
    pub allow_cmd: Vec<String>,
    /// Kill a command's whole process group after this long (e.g. 30s, 5m; with --compat
    /// tutorial the default is 60s).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Maximum concurrent sessions; more wait in the backlog (default 10000; 16 with
    /// --compat tutorial, whose sessions hold a command's whole output in memory).
    #[arg(long)]
    pub max_conns: Option<usize>,
    /// Serve over TLS; without --cert/--key a self-signed certificate is generated and its
    /// fingerprint printed for clients' --tls-pin.
    #[arg(long)]
    pub tls: bool,
    /// PEM certificate chain for --tls (leaf first).
    #[arg(long, requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, requires_all = ["tls", "cert"])]
    pub key: Option<PathBuf>,
    /// Speak another protocol: `tutorial` for the Python lessons' client (no auth, no TLS, so
    /// only on loopback or a Unix socket).
    #[arg(long, value_enum, conflicts_with_all = ["token_file", "shell", "allow_cmd", "tls"])]
    pub compat: Option<Compat>,
}

/// `sockit exec run`.
#[derive(Debug, Args)]
pub struct ExecRunArgs {
    /// The exec server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Addr,
    /// File holding the token (mode 0600); else SOCKIT_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Give up after this long (exit 255; the server then kills the command).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Run the words as one `sh -c` line (the server must run with --shell).
    #[arg(long)]
    pub shell: bool,
    /// Run the command on a pseudo-terminal, for interactive programs (stdout and stderr
    /// merged, window size forwarded, this terminal in raw mode until the command ends). Only
    /// when stdin is a terminal; -tt forces one anyway (ssh's rule).
    #[arg(short = 't', action = clap::ArgAction::Count)]
    pub tty: u8,
    /// Connect over TLS (never falls back to plaintext); needs --tls-pin or --tls-ca.
    #[arg(long)]
    pub tls: bool,
    /// Accept only the server certificate with this fingerprint (sha256:AB:CD:...).
    #[arg(long, requires = "tls", conflicts_with = "tls_ca")]
    pub tls_pin: Option<Fingerprint>,
    /// Accept server certificates issued by a CA in this PEM file.
    #[arg(long, requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// Speak another protocol: `tutorial` talks to the Python lessons' server (the words are
    /// joined with spaces into one command line; no auth, no TLS).
    #[arg(long, value_enum, conflicts_with_all = ["token_file", "shell", "tls", "tty"])]
    pub compat: Option<Compat>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Engine options shared by servers.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Maximum concurrent connections; more wait in the backlog.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNS)]
    pub max_conns: usize,
    /// Close connections idle this long (e.g. 30s, 5m; 0 for never).
    #[arg(long, value_parser = parse_duration, default_value = "300s")]
    pub idle_timeout: Duration,
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
}

impl EngineArgs {
    fn config(&self, service: &str, mode: Mode) -> Config {
        Config {
            service: service.into(),
            mode,
            max_conns: self.max_conns,
            idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            drain_timeout: self.drain_timeout,
            acl: self.acl(),
            ..Config::default()
        }
    }

    fn acl(&self) -> Acl {
        Acl {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
        }
    }

    fn bind_options(&self) -> BindOptions {
        BindOptions {
            backlog: self.backlog,
            reuse_port: self.reuse_port,
            ..BindOptions::default()
        }
    }
}

/// `sockit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML service set (see --print-config for the format).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the embedded default service set and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `sockit echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address: HOST:PORT, [IPv6]:PORT or unix:/path.
    #[arg(long, default_value = "127.0.0.1:7007")]
    pub listen: Addr,
    /// UDP (or Unix datagram) instead of a stream.
    #[arg(long)]
    pub udp: bool,
    /// Upper-case ASCII letters, like the tutorials' server.
    #[arg(long)]
    pub upper: bool,
    /// sequential (one at a time), concurrent (a task each) or process (a child each).
    /// Default: concurrent for streams, sequential (inline) for datagrams.
    #[arg(long)]
    pub mode: Option<Mode>,
    /// Echo wire-v1 frames (length, JSON header, body) instead of raw bytes.
    #[arg(long, conflicts_with_all = ["udp", "upper"])]
    pub framed: bool,
    /// UDP: datagrams answered per second per non-loopback source IP.
    #[arg(long, default_value_t = echo::DEFAULT_UDP_RATE_PER_SOURCE)]
    pub udp_rate: u32,
    /// Echo stdin to stdout once (what each child runs in process mode).
    #[arg(long, hide = true)]
    pub stdio: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub engine: EngineArgs,
}

/// `sockit connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Address: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Addr,
    /// UDP (or Unix datagram).
    #[arg(long, short)]
    pub udp: bool,
    /// Write peer bytes unescaped even when stdout is a terminal.
    #[arg(long)]
    pub raw: bool,
}

/// `sockit listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Addr,
    /// UDP (or Unix datagram): talk to whoever sends first.
    #[arg(long, short)]
    pub udp: bool,
    /// Keep accepting peers: stdin goes to all of them.
    #[arg(long, short)]
    pub keep_open: bool,
    /// Run this command per connection with the socket as stdin/stdout (split on spaces).
    #[arg(long, short, conflicts_with = "sh_exec")]
    pub exec: Option<String>,
    /// Like --exec, through `sh -c`.
    #[arg(long)]
    pub sh_exec: Option<String>,
    /// Write peer bytes unescaped even when stdout is a terminal.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub engine: EngineArgs,
}

/// `sockit bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Drive an echo server and report requests/s, MB/s and latency percentiles.
    Echo(BenchEchoArgs),
    /// Hold many idle connections open and probe that the server still answers.
    Hold(BenchHoldArgs),
    /// Chat fan-out: receivers and senders in one room of a line-protocol chat broker.
    Chat(BenchChatArgs),
}

/// `sockit bench chat`.
#[derive(Debug, Args)]
pub struct BenchChatArgs {
    /// The broker's line-protocol address (`sockit chat serve --line-listen`, `ncat --chat`).
    pub addr: Addr,
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
    /// No nick handshake: for brokers like `ncat --chat`.
    #[arg(long, conflicts_with = "redis")]
    pub raw: bool,
    /// Speak Redis pub/sub (RESP): receivers SUBSCRIBE, senders PUBLISH, to a redis-server.
    #[arg(long)]
    pub redis: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `sockit bench echo`.
#[derive(Debug, Args)]
pub struct BenchEchoArgs {
    /// The echo server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Addr,
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
    pub addr: Addr,
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

/// Parses `300ms`, `5s`, `2m`, `1h` or a bare number of seconds.
///
/// # Errors
/// A message naming the bad input.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 5s, 2m"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// How a command failed, for the exit code: 1 network error, 2 usage error, or an explicit
/// code (`exec run`: the remote status, 255 for a connection, protocol or auth error).
#[derive(Debug)]
pub enum Failure {
    /// Bad input: exit 2.
    Usage(anyhow::Error),
    /// Network or other runtime error: exit 1.
    Runtime(anyhow::Error),
    /// Exit with `code`, printing `error` if there is one.
    Exit {
        /// The process exit status.
        code: u8,
        /// What to report on stderr first.
        error: Option<anyhow::Error>,
    },
}

/// `exec run`'s status for a failure that is not the remote command's (ssh's rule).
const EXEC_FAILURE_CODE: u8 = 255;

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        // An address in use is a usage error: the user asked for a port that is taken.
        let in_use = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
        });
        if in_use {
            Failure::Usage(e)
        } else {
            Failure::Runtime(e)
        }
    }
}

impl Cli {
    /// Whether the command is one stream pumped by one task, better served by a
    /// single-threaded runtime: `exec run` moves its output on the thread that reads the
    /// socket, with no hand-offs between worker threads (measured in docs/benchmarks.md).
    pub fn single_threaded(&self) -> bool {
        matches!(self.command, Command::Exec(ExecCommand::Run(_)))
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// A [`Failure`] carrying the exit-code class.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let quiet = cli.quiet > 0;
    match cli.command {
        Command::Serve(args) => run_serve(args).await,
        Command::Echo(args) => run_echo(args).await,
        Command::Connect(args) => netcat::connect(&args.addr, args.udp, args.raw)
            .await
            .map_err(netcat_failure),
        Command::Listen(args) => run_listen(args).await,
        Command::Exec(ExecCommand::Serve(args)) => run_exec_serve(args).await,
        Command::Exec(ExecCommand::Run(args)) => run_exec_run(args).await,
        Command::Exec(ExecCommand::Shell(args)) => run_exec_shell(args).await,
        Command::Files(FilesCommand::Serve(args)) => files::run_files_serve(args).await,
        Command::Put(args) => files::run_put(args, "put", quiet).await,
        Command::Get(args) => files::run_get(args, quiet).await,
        Command::Ls(args) => files::run_ls(args).await,
        Command::Recv(args) => files::run_recv(args).await,
        Command::Send(args) => files::run_put(args, "send", quiet).await,
        Command::Chat(cmd) => chat::run_chat(cmd).await,
        Command::Bench(cmd) => run_bench(cmd).await,
    }
}

/// The client's TLS connector from `--tls`, `--tls-pin`, `--tls-ca`; `None` for plaintext.
fn client_tls(
    tls: bool,
    pin: Option<Fingerprint>,
    ca: Option<PathBuf>,
) -> Result<Option<TlsConnector>, Failure> {
    let trust = match (tls, pin, ca) {
        (false, _, _) => return Ok(None),
        (true, Some(pin), _) => ServerTrust::Pin(pin),
        (true, None, Some(ca)) => ServerTrust::CaFile(ca),
        (true, None, None) => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "--tls needs --tls-pin FINGERPRINT or --tls-ca FILE; the fingerprint is the \
                 `tls fingerprint: sha256:...` line the server prints at start"
            )))
        }
    };
    let connector = TlsConnector::new(&trust).map_err(|e| Failure::Usage(e.into()))?;
    Ok(Some(connector))
}

/// The server's TLS acceptor from `--tls`, `--cert`, `--key` (a self-signed certificate for
/// `addr` without them); its fingerprint goes to stdout for clients' `--tls-pin`.
fn server_tls(
    tls: bool,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    addr: &Addr,
) -> Result<Option<TlsAcceptor>, Failure> {
    let identity = match (tls, cert, key) {
        (false, _, _) => return Ok(None),
        (true, Some(cert), Some(key)) => {
            ServerIdentity::from_pem_files(cert, key).map_err(|e| Failure::Usage(e.into()))?
        }
        (true, _, _) => ServerIdentity::self_signed(addr).context("tls")?,
    };
    let acceptor = TlsAcceptor::new(identity).map_err(|e| Failure::Usage(e.into()))?;
    // Public, so stdout next to any token line.
    println!("tls fingerprint: {}", acceptor.fingerprint());
    Ok(Some(acceptor))
}

fn netcat_failure(e: NetcatError) -> Failure {
    match e {
        NetcatError::Usage(msg) => Failure::Usage(anyhow::anyhow!(msg)),
        NetcatError::Io(e) => Failure::from(anyhow::Error::from(e)),
    }
}

async fn run_serve(args: ServeArgs) -> Result<(), Failure> {
    if args.print_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(Failure::Usage)?,
        None => DEFAULT_CONFIG.to_string(),
    };
    let config = ServeConfig::parse(&text).map_err(|e| Failure::Usage(e.into()))?;
    let shutdown = server::shutdown_on_signals().context("cannot install signal handlers")?;
    let (banner, run) = bind_all(&config, shutdown)
        .await
        .map_err(|e| Failure::from(anyhow::Error::from(e)))?;
    for line in &banner {
        println!("{line}");
    }
    println!("serving {} services; Ctrl-C to stop", banner.len());
    run.await.map_err(|e| Failure::Runtime(e.into()))
}

async fn run_echo(args: EchoArgs) -> Result<(), Failure> {
    if args.stdio {
        let upper = args.upper;
        return tokio::task::spawn_blocking(move || echo::echo_stdio(upper))
            .await
            .context("echo task failed")?
            .map(drop)
            .context("stdio echo")
            .map_err(Failure::from);
    }
    let mode = args.mode.unwrap_or(echo::default_mode(args.udp));
    if args.udp && mode == Mode::Process {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--mode process needs a stream socket: a datagram has no connection to hand a child"
        )));
    }
    let config = args.engine.config("echo", mode);
    let opts = args.engine.bind_options();
    let shutdown = server::shutdown_on_signals().context("cannot install signal handlers")?;
    if args.udp {
        let socket = Datagram::bind(&args.listen, &opts).await.context("echo")?;
        eprintln!(
            "echo listening on {} (udp)",
            socket.local_addr().context("echo")?
        );
        let handler = EchoDatagram::new(args.upper, args.udp_rate, false);
        serve_datagram(socket, handler, config, shutdown)
            .await
            .context("echo")?;
    } else {
        let listener = Listener::bind(&args.listen, &opts).await.context("echo")?;
        eprintln!(
            "echo listening on {}",
            listener.local_addr().context("echo")?
        );
        let served = match args.framed {
            true => serve(listener, FramedEcho, config, shutdown).await,
            false => serve(listener, Echo { upper: args.upper }, config, shutdown).await,
        };
        served.context("echo")?;
    }
    Ok(())
}

async fn run_listen(args: ListenArgs) -> Result<(), Failure> {
    let exec = match (&args.exec, &args.sh_exec) {
        (Some(line), _) => {
            let mut words = line.split_whitespace().map(OsString::from);
            let program = words
                .next()
                .ok_or_else(|| Failure::Usage(anyhow::anyhow!("--exec needs a command")))?;
            Some(ProcessCommand {
                program: program.into(),
                args: words.collect(),
            })
        }
        (None, Some(line)) => Some(ProcessCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), line.into()],
        }),
        (None, None) => None,
    };
    let shutdown: CancellationToken =
        server::shutdown_on_signals().context("cannot install signal handlers")?;
    let opts = ListenOptions {
        addr: args.addr,
        udp: args.udp,
        keep_open: args.keep_open,
        exec,
        acl: args.engine.acl(),
        bind: args.engine.bind_options(),
        max_conns: args.engine.max_conns,
        raw: args.raw,
    };
    netcat::listen(opts, shutdown).await.map_err(netcat_failure)
}

async fn run_exec_serve(args: ExecServeArgs) -> Result<(), Failure> {
    if args.compat == Some(Compat::Tutorial) {
        return run_tutorial_serve(args).await;
    }
    let token =
        match load_token(args.token_file.as_deref()).map_err(|e| Failure::Usage(e.into()))? {
            Some(token) => token,
            None => {
                let token = Token::generate().context("exec")?;
                // Shown once, to the operator, on stdout; never logged.
                println!("exec token: {}", token.reveal());
                token
            }
        };
    let config = ExecConfig {
        shell: args.shell,
        allow_cmds: args.allow_cmd,
        timeout: args.timeout,
        ..ExecConfig::default()
    };
    let engine = Config {
        service: exec::SERVICE.into(),
        max_conns: args.max_conns.unwrap_or(server::DEFAULT_MAX_CONNS),
        // A quiet command may run for hours; --timeout bounds commands, and the handshake and
        // the run request have their own deadlines.
        idle_timeout: None,
        ..Config::default()
    };
    let listener = Listener::bind(&args.listen, &BindOptions::default())
        .await
        .context("exec")?;
    let addr = listener.local_addr().context("exec")?;
    if !addr.is_local() {
        tracing::warn!(%addr, "exec listens beyond loopback: anyone holding the token can run commands");
    }
    let config = ExecConfig {
        tls: server_tls(args.tls, args.cert.as_deref(), args.key.as_deref(), &addr)?,
        ..config
    };
    let shutdown = server::shutdown_on_signals().context("cannot install signal handlers")?;
    eprintln!("exec listening on {addr}");
    serve(listener, ExecServer::new(config, token), engine, shutdown)
        .await
        .context("exec")?;
    Ok(())
}

async fn run_tutorial_serve(args: ExecServeArgs) -> Result<(), Failure> {
    if !args.listen.is_local() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--compat tutorial has no authentication, so it only listens on loopback or a Unix \
             socket, not {}",
            args.listen
        )));
    }
    let config = TutorialConfig {
        timeout: args.timeout.unwrap_or(tutorial::DEFAULT_COMMAND_TIMEOUT),
        ..TutorialConfig::default()
    };
    let engine = Config {
        service: "exec-tutorial".into(),
        max_conns: args.max_conns.unwrap_or(tutorial::DEFAULT_MAX_CONNS),
        ..Config::default()
    };
    let listener = Listener::bind(&args.listen, &BindOptions::default())
        .await
        .context("exec")?;
    let addr = listener.local_addr().context("exec")?;
    let shutdown = server::shutdown_on_signals().context("cannot install signal handlers")?;
    eprintln!("exec (tutorial protocol, no auth) listening on {addr}");
    serve(listener, TutorialServer::new(config), engine, shutdown)
        .await
        .context("exec")?;
    Ok(())
}

async fn run_exec_run(args: ExecRunArgs) -> Result<(), Failure> {
    let fail = |e: anyhow::Error| Failure::Exit {
        code: EXEC_FAILURE_CODE,
        error: Some(e),
    };
    if args.compat == Some(Compat::Tutorial) {
        return run_tutorial_client(args).await;
    }
    let tls = client_tls(args.tls, args.tls_pin, args.tls_ca)?;
    let token = load_token(args.token_file.as_deref())
        .map_err(|e| fail(e.into()))?
        .ok_or_else(|| {
            fail(anyhow::anyhow!(
                "no token: give --token-file or set SOCKIT_TOKEN"
            ))
        })?;
    let stdin_is_tty = std::io::stdin().is_terminal();
    let pty = match (args.tty, stdin_is_tty) {
        (0, _) => None,
        (1, false) => {
            eprintln!(
                "sockit: pseudo-terminal will not be allocated because stdin is not a terminal \
                 (-tt forces one)"
            );
            None
        }
        _ => Some(local::pty_request()),
    };
    // With a pty and a local terminal: raw mode, so every key (Ctrl-C, Ctrl-D, Ctrl-Z too)
    // goes to the remote terminal, which gives it its meaning. The guard restores the
    // terminal however this function ends, and before anything is printed after the run.
    let (resizes, mut hangups, raw) = if pty.is_some() && stdin_is_tty {
        let (resizes, hangups, raw) = enter_pty_mode().map_err(fail)?;
        (Some(resizes), Some(hangups), Some(raw))
    } else {
        (None, None, None)
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // Ctrl-C goes to the remote command, which decides whether to die of it. (In raw mode the
    // key is a byte on stdin; this still catches a SIGINT sent from elsewhere.)
    let mut interrupts = unix_signal(SignalKind::interrupt())
        .context("cannot install signal handlers")
        .map_err(fail)?;
    tokio::spawn(async move {
        while interrupts.recv().await.is_some() {
            if tx.send(SignalName::Int).await.is_err() {
                break;
            }
        }
    });
    // Output goes through writer threads: tokio's stdout hands every small write to its
    // blocking pool, which capped `exec run -- cat` near 0.3 GB/s (docs/benchmarks.md).
    let mut stdout = ThreadWriter::spawn(std::io::stdout());
    let mut stderr = ThreadWriter::spawn(std::io::stderr());
    let io = LocalIo {
        stdin: tokio::io::stdin(),
        stdout: &mut stdout,
        stderr: &mut stderr,
        signals: rx,
        resizes,
    };
    let request = RunRequest {
        argv: args.command,
        shell: args.shell,
        pty,
    };
    let running = async {
        match &tls {
            Some(tls) => exec::run_tls(&args.addr, tls, &token, &request, io).await,
            None => exec::run(&args.addr, &token, &request, io).await,
        }
    };
    let limited = async {
        match args.timeout {
            Some(limit) => tokio::time::timeout(limit, running).await.map_err(|_| {
                fail(anyhow::anyhow!(
                    "the command did not finish within {limit:?}"
                ))
            }),
            None => Ok(running.await),
        }
    };
    let result = tokio::select! {
        result = limited => result,
        signal = Hangups::recv(&mut hangups) => {
            Err(fail(anyhow::anyhow!("terminated by {signal}")))
        }
    };
    // Everything received is written out before any error or exit status is reported, and
    // the terminal is itself again before anything else is printed.
    let flushed = stdout.finish().await.and(stderr.finish().await);
    drop(raw);
    let outcome = result?.map_err(|e| fail(e.into()))?;
    flushed.map_err(|e| fail(anyhow::Error::from(e).context("cannot write the output")))?;
    if let Some(error) = &outcome.error {
        eprintln!("sockit: remote: {} ({})", error.message, error.code);
    }
    match outcome.exit.exit_code() {
        0 => Ok(()),
        code => Err(Failure::Exit { code, error: None }),
    }
}

/// What `exec run -t` sets up on a local terminal: the window size to follow, SIGTERM and
/// SIGHUP caught, and raw mode (last, so nothing can fail after it but the run).
fn enter_pty_mode() -> anyhow::Result<(watch::Receiver<WindowSize>, Hangups, RawMode)> {
    let resizes = local::watch_window_size().context("cannot watch the window size")?;
    let hangups = Hangups::install().context("cannot install signal handlers")?;
    let raw = RawMode::enable(std::io::stdin()).context("cannot put the terminal in raw mode")?;
    Ok((resizes, hangups, raw))
}

async fn run_tutorial_client(args: ExecRunArgs) -> Result<(), Failure> {
    let fail = |e: anyhow::Error| Failure::Exit {
        code: EXEC_FAILURE_CODE,
        error: Some(e),
    };
    let line = args.command.join(" ");
    let running = tutorial::run_tutorial(&args.addr, &line, tokio::io::stdout());
    let reply = match args.timeout {
        Some(limit) => tokio::time::timeout(limit, running)
            .await
            .map_err(|_| fail(anyhow::anyhow!("no complete reply within {limit:?}")))?,
        None => running.await,
    }
    .map_err(|e| fail(e.into()))?;
    if !reply.verified && !reply.header.hash.is_empty() {
        eprintln!(
            "sockit: the output's hash is not SHA-256 ({} hex digits), so it was not checked",
            reply.header.hash.len()
        );
    }
    Ok(())
}

async fn run_exec_shell(args: ExecShellArgs) -> Result<(), Failure> {
    let fail = |e: anyhow::Error| Failure::Exit {
        code: EXEC_FAILURE_CODE,
        error: Some(e),
    };
    let token = load_token(args.token_file.as_deref())
        .map_err(|e| fail(e.into()))?
        .ok_or_else(|| {
            fail(anyhow::anyhow!(
                "no token: give --token-file or set SOCKIT_TOKEN"
            ))
        })?;
    let form = if args.words {
        LineForm::Words
    } else {
        LineForm::Shell
    };
    let io = ShellIo {
        input: tokio::io::BufReader::new(tokio::io::stdin()),
        stdout: tokio::io::stdout(),
        stderr: tokio::io::stderr(),
    };
    let code = exec::shell::shell(&args.addr, &token, form, io)
        .await
        .map_err(|e| fail(e.into()))?;
    match code {
        0 => Ok(()),
        code => Err(Failure::Exit { code, error: None }),
    }
}

async fn run_bench(cmd: BenchCommand) -> Result<(), Failure> {
    let (text, json) = match cmd {
        BenchCommand::Echo(a) => {
            let load = EchoLoad {
                addr: a.addr,
                conns: a.conns,
                size: a.size,
                duration: a.duration,
                pipeline: a.pipeline,
                udp: a.udp,
                verify: a.verify,
                connect_per_request: a.connect_per_request,
            };
            let report = bench::run_echo(&load).await.map_err(bench_failure)?;
            let json = serde_json::to_string(&report).context("report")?;
            (report.table(), a.json.then_some(json))
        }
        BenchCommand::Hold(a) => {
            let load = HoldLoad {
                addr: a.addr,
                conns: a.conns,
                duration: a.seconds,
                probes: a.probes,
            };
            let report = bench::run_hold(&load).await.map_err(bench_failure)?;
            let json = serde_json::to_string(&report).context("report")?;
            (report.table(), a.json.then_some(json))
        }
        BenchCommand::Chat(a) => {
            let load = bench::ChatLoad {
                addr: a.addr,
                proto: match (a.raw, a.redis) {
                    (true, _) => bench::ChatProto::Raw,
                    (_, true) => bench::ChatProto::Redis,
                    _ => bench::ChatProto::Sockit,
                },
                receivers: a.receivers,
                senders: a.senders,
                size: a.size,
                duration: a.duration,
                window: a.window,
            };
            let report = bench::run_chat(&load).await.map_err(bench_failure)?;
            let json = serde_json::to_string(&report).context("report")?;
            (report.table(), a.json.then_some(json))
        }
    };
    println!("{}", json.unwrap_or(text));
    Ok(())
}

fn bench_failure(e: BenchError) -> Failure {
    match e {
        BenchError::InvalidLoad(_) => Failure::Usage(e.into()),
        e => Failure::Runtime(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
