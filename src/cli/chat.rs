//! `sockit chat serve` and `sockit chat join`.

use crate::cli::peer::Peer;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::launch::{
    bind_failure, run_command, stream_transport, Bound, EngineArgs, ServiceDefaults, Tokens,
};
use super::output::ColorWhen;
use super::{Failure, Note};
use sockit::engine::{self, serve, Config, Mode};
use sockit::net::{Addr, Listener};
use sockit::service::chat::{
    self, Broker, BrokerConfig, ChatServer, ChatService, ClusterConfig, FramedConfig, JoinOptions,
    LineConfig, LineServer, Link, RateLimit, RedisTarget, WebConfig, WebServer, DEFAULT_HISTORY,
    DEFAULT_HISTORY_BYTES, MAX_HISTORY, MAX_HISTORY_BYTES,
};
use sockit::session::{load_token, GateConfig};

/// `sockit chat ...`.
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Run a chat server: framed clients on --listen, plain-text (nc) clients on --line-listen.
    Serve(Box<ChatServeArgs>),
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
    /// Also serve the chat page for browsers here, over HTTP: the page at /chat/ and its
    /// WebSocket at /chat/ws (same rooms and nicks). Beyond loopback the page asks for the
    /// token, as `sockit chat join` needs it; plain HTTP, so put TLS in front beyond a LAN.
    #[arg(long)]
    pub web_listen: Option<Addr>,
    /// Allow --line-listen beyond loopback: anyone who can connect can chat.
    #[arg(long, requires = "line_listen")]
    pub line_public: bool,
    /// Messages each room keeps and replays on join.
    #[arg(long, default_value_t = DEFAULT_HISTORY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_HISTORY as u64))]
    pub history: usize,
    /// Bytes of history each room keeps (e.g. 256K), whichever of this and --history is
    /// reached first; a message counts three times its text (its line and frame encodings
    /// are kept with it). A room's history is dropped when its last member leaves.
    #[arg(long, default_value_t = DEFAULT_HISTORY_BYTES, value_parser = parse_history_bytes)]
    pub history_bytes: usize,
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
    /// Join a cluster of chat nodes that share this Redis (redis://[:PASSWORD@]HOST:PORT/[DB]):
    /// users of every node share rooms, nicks, /who, private messages and history. Give a
    /// password with --redis-password-file rather than in the URL, which `ps` shows.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// File holding the Redis password (its first line); it replaces any password in --redis.
    #[arg(long, requires = "redis")]
    pub redis_password_file: Option<PathBuf>,
    /// Time after which a node that stopped its heartbeat (killed, cut off, paused) is taken
    /// for dead by the others: its users leave /who and their nicks become free (within this
    /// plus a third of it).
    #[arg(long, default_value = "15s", value_parser = parse_node_timeout, requires = "redis")]
    pub redis_node_timeout: std::time::Duration,
    /// Applied to both ports (--max-conns per listener); quiet connections are normal in a
    /// chat, so --idle-timeout defaults to never and keepalive finds vanished peers.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The first line of a Redis password file, refused (as token files are) when group or
/// others may read it.
fn read_password_file(path: &std::path::Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the Redis password file {shown}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the Redis password file {shown} has mode {mode:04o}: it is accessible by group or \
             others, so it is not used; run `chmod 600 {shown}`"
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the Redis password file {shown}"))?;
    let password = text.lines().next().unwrap_or("");
    if password.is_empty() {
        anyhow::bail!("the Redis password file {shown} is empty");
    }
    Ok(password.to_owned())
}

/// A node timeout: from 1 s to an hour.
fn parse_node_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = super::parse_duration(s)?;
    if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600)).contains(&d) {
        return Err(format!("{s:?}: give a time from 1s to 1h"));
    }
    Ok(d)
}

/// A size such as `512K` up to [`MAX_HISTORY_BYTES`].
fn parse_history_bytes(s: &str) -> Result<usize, String> {
    let bytes = sockit::service::files::parse_size(s)?;
    usize::try_from(bytes)
        .ok()
        .filter(|b| *b <= MAX_HISTORY_BYTES)
        .ok_or_else(|| format!("at most {MAX_HISTORY_BYTES} bytes of history per room"))
}

/// `sockit chat join`.
#[derive(Debug, Args)]
pub struct ChatJoinArgs {
    /// The chat server's framed address: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Peer,
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
pub async fn run_chat(cmd: ChatCommand, color: ColorWhen) -> Result<(), Failure> {
    match cmd {
        ChatCommand::Serve(args) => run_serve(*args).await,
        ChatCommand::Join(args) => run_join(args, color).await,
    }
}

/// What the chat entry of a `sockit serve` set lends an `http` entry with `chat = true`, so
/// that the page it carries is a way into the same chat.
#[derive(Debug, Clone)]
pub struct LentChat {
    /// The entry's broker: its rooms, nicks and history.
    pub broker: Arc<Broker>,
    /// The entry's per-connection rate limit.
    pub rate: RateLimit,
}

async fn run_serve(args: ChatServeArgs) -> Result<(), Failure> {
    let shutdown = engine::shutdown_on_signals().context("cannot install signal handlers")?;
    let bound = args.bind(&shutdown, &Tokens::single()).await?;
    run_command(bound, shutdown).await
}

impl ChatServeArgs {
    /// Binds the framed port and the line port (if asked) on one broker; they serve until
    /// `shutdown` fires.
    ///
    /// # Errors
    /// A usage error for a public line port without --line-public, a bad token file or
    /// certificate, or the bind error.
    pub async fn bind(
        self,
        shutdown: &CancellationToken,
        tokens: &Tokens,
    ) -> Result<Vec<Bound>, Failure> {
        self.bind_lending(shutdown, tokens)
            .await
            .map(|(bound, _)| bound)
    }

    /// As [`ChatServeArgs::bind`], and lends the broker for another listener to carry.
    ///
    /// # Errors
    /// As [`ChatServeArgs::bind`].
    pub async fn bind_lending(
        self,
        shutdown: &CancellationToken,
        tokens: &Tokens,
    ) -> Result<(Vec<Bound>, LentChat), Failure> {
        self.check_line_listen()?;
        let opts = self.engine.bind_options();
        let fail = |e| bind_failure("chat", e);
        let listener = Listener::bind(&self.listen, &opts).await.map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        let line = match &self.line_listen {
            Some(line_addr) => {
                let l = Listener::bind(line_addr, &opts).await.map_err(fail)?;
                let bound = l.local_addr().map_err(fail)?;
                Some((l, bound))
            }
            None => None,
        };
        let web = match &self.web_listen {
            Some(web_addr) => {
                let l = Listener::bind(web_addr, &opts).await.map_err(fail)?;
                let bound = l.local_addr().map_err(fail)?;
                Some((l, bound))
            }
            None => None,
        };
        let mut notes = Vec::new();
        // One token for both authenticated ports, needed if either is beyond loopback.
        let exposed = match &web {
            Some((_, web_addr)) if !web_addr.is_local() => web_addr,
            _ => &addr,
        };
        let token = tokens.resolve(self.token_file.as_deref(), exposed, &mut notes)?;
        // On loopback the page asks for no token, as the line port asks for none there (and
        // a page elsewhere is kept out by the Origin check); beyond it, the same token.
        let web_token = match &web {
            Some((_, web_addr)) if !web_addr.is_local() => token.clone(),
            _ => None,
        };
        let tls = self.tls.acceptor(&addr, &mut notes)?;
        let broker = self.broker(shutdown, &mut notes).await?;
        let defaults = ServiceDefaults {
            idle_timeout: None,
            ..ServiceDefaults::default()
        };
        let engine = self
            .engine
            .config(chat::SERVICE, Mode::Concurrent, defaults);
        let gate = GateConfig {
            tls,
            session: match &line {
                Some((_, bound)) => chat::session_config_with_line_port(bound),
                None => chat::session_config(),
            },
            pending: self.engine.pending(),
            ..chat::gate(token)
        };
        let framed = Framed {
            listener,
            addr,
            notes,
            gate,
        };
        let mut bound = vec![self.framed_bound(framed, broker.clone(), engine.clone(), shutdown)];
        if let Some((listener, web_addr)) = web {
            let web = WebConfig {
                rate: self.rate_limit(),
                token: web_token,
                ..WebConfig::default()
            };
            bound.push(self.web_bound(
                listener,
                web_addr,
                web,
                broker.clone(),
                engine.clone(),
                shutdown,
            ));
        }
        let lent = LentChat {
            broker: broker.clone(),
            rate: self.rate_limit(),
        };
        if let Some((listener, line_addr)) = line {
            bound.push(self.line_bound(listener, line_addr, broker, engine, shutdown));
        }
        Ok((bound, lent))
    }

    /// The broker: alone, or a node of the cluster on --redis (connected, and its password
    /// checked, before anything is served).
    async fn broker(
        &self,
        shutdown: &CancellationToken,
        notes: &mut Vec<Note>,
    ) -> Result<Arc<Broker>, Failure> {
        let config = BrokerConfig {
            history: self.history,
            history_bytes: self.history_bytes,
            ..BrokerConfig::default()
        };
        let Some(url) = &self.redis else {
            return Ok(Broker::new(config));
        };
        let password = match &self.redis_password_file {
            Some(path) => Some(read_password_file(path).map_err(Failure::Usage)?),
            None => None,
        };
        let target =
            RedisTarget::parse(url, password.as_deref()).map_err(|e| Failure::Usage(e.into()))?;
        if password.is_none() && RedisTarget::url_has_password(url) {
            tracing::warn!(
                "the Redis password is on the command line, where other local users can read it; \
                 use --redis-password-file"
            );
        }
        let cluster = ClusterConfig {
            node_timeout: self.redis_node_timeout,
            ..ClusterConfig::new(target.clone())
        };
        let link = Link::connect(cluster)
            .await
            .map_err(|e| Failure::Runtime(e.into()))?;
        notes.push(Note::Text(format!(
            "chat cluster node {} on {target}",
            link.node()
        )));
        let broker = Broker::clustered(config, link.clone());
        link.start(&broker, shutdown);
        Ok(broker)
    }

    /// Refuses a line port beyond loopback unless --line-public says so.
    fn check_line_listen(&self) -> Result<(), Failure> {
        if let Some(line) = &self.line_listen {
            if !line.is_local() && !self.line_public {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "the line protocol has no authentication, so --line-listen {line} needs \
                     --line-public (or use a loopback address)"
                )));
            }
        }
        Ok(())
    }

    /// The lines a connection may send, on either port.
    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_sec: self.rate,
            burst: self.burst,
        }
    }

    /// The framed port, serving sockit clients through the session gate.
    fn framed_bound(
        &self,
        framed: Framed,
        broker: Arc<Broker>,
        engine: Config,
        shutdown: &CancellationToken,
    ) -> Bound {
        let config = FramedConfig {
            rate: self.rate_limit(),
            ..FramedConfig::default()
        };
        let link = broker.link().cloned();
        let handler = ChatServer::new(framed.gate, ChatService::new(broker, config));
        let served = serve(framed.listener, handler, engine, shutdown.clone());
        Bound {
            service: "chat",
            transport: stream_transport(&framed.addr, self.tls.tls),
            label: "chat".into(),
            detail: None,
            addr: framed.addr,
            notes: framed.notes,
            run: Box::pin(async move {
                let result = served.await;
                // A cluster node's goodbye (its users leave, its nicks go) before it exits.
                if let Some(link) = link {
                    link.stopped().await;
                }
                result
            }),
        }
    }

    /// The web listener: the chat page and its WebSocket, on the framed port's broker.
    fn web_bound(
        &self,
        listener: Listener,
        web_addr: Addr,
        config: WebConfig,
        broker: Arc<Broker>,
        engine: Config,
        shutdown: &CancellationToken,
    ) -> Bound {
        let engine = Config {
            service: "chat-web".into(),
            ..engine
        };
        let note = match &web_addr {
            Addr::Inet(sa) => format!("open http://{sa}{} in a browser", chat::CHAT_PATH),
            Addr::Unix(_) => format!("the page is at {} (behind a proxy)", chat::CHAT_PATH),
        };
        Bound {
            service: "chat",
            transport: "http",
            label: "chat web page".into(),
            detail: None,
            addr: web_addr,
            notes: vec![Note::Text(note)],
            run: Box::pin(serve(
                listener,
                WebServer::new(broker, config),
                engine,
                shutdown.clone(),
            )),
        }
    }

    /// The line port: plain text, no authentication, on the framed port's broker.
    fn line_bound(
        &self,
        listener: Listener,
        line_addr: Addr,
        broker: Arc<Broker>,
        engine: Config,
        shutdown: &CancellationToken,
    ) -> Bound {
        if !line_addr.is_local() {
            tracing::warn!(addr = %line_addr, "the line protocol listens beyond loopback, unauthenticated");
        }
        let handler = LineServer::new(
            broker,
            LineConfig {
                rate: self.rate_limit(),
                ..LineConfig::default()
            },
        );
        let engine = Config {
            service: "chat-line".into(),
            ..engine
        };
        Bound {
            service: "chat",
            transport: "line",
            label: "chat line protocol".into(),
            detail: None,
            addr: line_addr,
            notes: vec![Note::Text("plain text: nc, telnet (no auth)".into())],
            run: Box::pin(serve(listener, handler, engine, shutdown.clone())),
        }
    }
}

/// The framed port, bound and gated, before it serves.
struct Framed {
    listener: Listener,
    addr: Addr,
    notes: Vec<Note>,
    gate: GateConfig,
}

async fn run_join(args: ChatJoinArgs, color: ColorWhen) -> Result<(), Failure> {
    let tls = args.tls.connector(&args.addr)?;
    let token = load_token(args.token_file.as_deref()).map_err(|e| Failure::Usage(e.into()))?;
    let opts = JoinOptions {
        nick: args.nick,
        room: args.room,
        token,
        tls,
    };
    let addr = args.addr.resolve().await?;
    let client = chat::join(&addr, &opts).await.context("chat")?;
    let colour = color.enabled(std::io::stdout().is_terminal());
    chat::run_terminal(client, colour).await.context("chat")?;
    Ok(())
}
