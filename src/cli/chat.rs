//! `sockit chat serve` and `sockit chat join`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::net::{Addr, Listener};
use crate::server::{self, serve, Config};
use crate::service::chat::{
    self, Broker, BrokerConfig, ChatServer, ChatService, FramedConfig, JoinOptions, LineConfig,
    LineServer, RateLimit, DEFAULT_HISTORY, MAX_HISTORY,
};
use crate::session::{load_token, GateConfig, Token};

/// `sockit chat ...`.
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Run a chat server: framed clients on --listen, plain-text (nc) clients on --line-listen.
    Serve(ChatServeArgs),
    /// Join a chat server interactively (/help lists the commands; /quit or Ctrl-D leaves).
    Join(ChatJoinArgs),
}

/// `sockit chat serve`.
#[derive(Debug, Args)]
pub struct ChatServeArgs {
    /// Framed protocol address (sockit clients): HOST:PORT, [IPv6]:PORT or unix:/path.
    #[arg(long, default_value = chat::DEFAULT_CHAT_ADDR)]
    pub listen: Addr,
    /// Also serve the plain-text line protocol (nc, telnet) here. It has no authentication
    /// and no TLS, so only loopback or a Unix socket unless --line-public.
    #[arg(long)]
    pub line_listen: Option<Addr>,
    /// Allow --line-listen beyond loopback: anyone who can connect can chat.
    #[arg(long, requires = "line_listen")]
    pub line_public: bool,
    /// Messages each room keeps and replays on join.
    #[arg(long, default_value_t = DEFAULT_HISTORY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_HISTORY as u64))]
    pub history: usize,
    /// File holding the token (mode 0600); else SOCKIT_TOKEN; else none on loopback, and a
    /// generated one (printed once) beyond it.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// TLS for the framed port (--listen) only; the line port is always plain text.
    #[command(flatten)]
    pub tls: super::ServerTlsArgs,
    /// Lines a connection may send per second (messages and commands alike).
    #[arg(long, default_value_t = chat::DEFAULT_RATE_PER_SEC, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// Lines a quiet connection may send at once.
    #[arg(long, default_value_t = chat::DEFAULT_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
    /// Maximum concurrent connections per listener; more wait in the backlog.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNS)]
    pub max_conns: usize,
}

/// `sockit chat join`.
#[derive(Debug, Args)]
pub struct ChatJoinArgs {
    /// The chat server's framed address: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Addr,
    /// Your nick: letters, digits, . _ - (at most 32).
    #[arg(long)]
    pub nick: String,
    /// Room to join instead of the server's default.
    #[arg(long)]
    pub room: Option<String>,
    /// File holding the token (mode 0600); else SOCKIT_TOKEN; else none.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// --tls, --tls-pin, --tls-ca.
    #[command(flatten)]
    pub tls: super::ClientTlsArgs,
}

/// Runs a `sockit chat` subcommand.
///
/// # Errors
/// A [`Failure`] carrying the exit-code class.
pub async fn run_chat(cmd: ChatCommand) -> Result<(), Failure> {
    match cmd {
        ChatCommand::Serve(args) => run_serve(args).await,
        ChatCommand::Join(args) => run_join(args).await,
    }
}

async fn run_serve(args: ChatServeArgs) -> Result<(), Failure> {
    let usage = |e: anyhow::Error| Failure::Usage(e);
    if let Some(line) = &args.line_listen {
        if !line.is_local() && !args.line_public {
            return Err(usage(anyhow::anyhow!(
                "the line protocol has no authentication, so --line-listen {line} needs \
                 --line-public (or use a loopback address)"
            )));
        }
    }
    let listener = Listener::bind(&args.listen, &chat::bind_options())
        .await
        .context("chat")?;
    let addr = listener.local_addr().context("chat")?;
    let token = match load_token(args.token_file.as_deref()).map_err(|e| usage(e.into()))? {
        Some(token) => Some(token),
        None if addr.is_local() => None,
        None => {
            let token = Token::generate().context("chat")?;
            // Shown once, to the operator, on stdout; never logged.
            println!("chat token: {}", token.reveal());
            Some(token)
        }
    };
    let tls = args.tls.acceptor(&addr)?;
    let broker = Broker::new(BrokerConfig {
        history: args.history,
        ..BrokerConfig::default()
    });
    let engine = Config {
        service: chat::SERVICE.into(),
        max_conns: args.max_conns,
        // Lurkers are normal in a chat: a quiet connection is not a dead one.
        idle_timeout: None,
        ..Config::default()
    };
    let rate = RateLimit {
        per_sec: args.rate,
        burst: args.burst,
    };
    let line = match &args.line_listen {
        Some(line_addr) => {
            let l = Listener::bind(line_addr, &chat::bind_options())
                .await
                .context("chat line protocol")?;
            let bound = l.local_addr().context("chat")?;
            Some((l, bound))
        }
        None => None,
    };
    let session = match &line {
        Some((_, bound)) => chat::session_config_with_line_port(bound),
        None => chat::session_config(),
    };
    let gate = GateConfig {
        tls,
        session,
        ..chat::gate(token)
    };
    let framed = ChatServer::new(
        gate,
        ChatService::new(
            broker.clone(),
            FramedConfig {
                rate,
                ..FramedConfig::default()
            },
        ),
    );
    let shutdown = server::shutdown_on_signals().context("cannot install signal handlers")?;
    eprintln!("chat listening on {addr}");
    let line = line.map(|(l, bound)| {
        if !bound.is_local() {
            tracing::warn!(addr = %bound, "the line protocol listens beyond loopback, unauthenticated");
        }
        eprintln!("chat line protocol listening on {bound}");
        l
    });
    let lines = serve_lines(
        line,
        LineServer::new(
            broker,
            LineConfig {
                rate,
                ..LineConfig::default()
            },
        ),
        &engine,
        &shutdown,
    );
    let (a, b) = tokio::join!(
        serve(listener, framed, engine.clone(), shutdown.clone()),
        lines
    );
    a.and(b).context("chat")?;
    Ok(())
}

async fn serve_lines(
    listener: Option<Listener>,
    handler: LineServer,
    engine: &Config,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    match listener {
        Some(l) => {
            let engine = Config {
                service: "chat-line".into(),
                ..engine.clone()
            };
            serve(l, handler, engine, shutdown.clone()).await
        }
        None => Ok(()),
    }
}

async fn run_join(args: ChatJoinArgs) -> Result<(), Failure> {
    let tls = args.tls.connector()?;
    let token = load_token(args.token_file.as_deref()).map_err(|e| Failure::Usage(e.into()))?;
    let opts = JoinOptions {
        nick: args.nick,
        room: args.room,
        token,
        tls,
    };
    let client = chat::join(&args.addr, &opts).await.context("chat")?;
    chat::run_terminal(client).await.context("chat")?;
    Ok(())
}
