//! `sockit http serve`: a directory over HTTP for browsers and curl, uploads optional.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::chat::LentChat;
use super::launch::{
    bind_failure, run_command, stream_transport, Bound, EngineArgs, ServiceDefaults, Tokens,
};
use super::{Failure, Note, ServerTlsArgs};
use sockit::engine::{self, serve, Mode};
use sockit::net::{Addr, Listener};
use sockit::service::chat::{self, Broker, BrokerConfig, RateLimit, WebConfig, WebServer};
use sockit::service::files::parse_size;
use sockit::service::files::Policy;
use sockit::service::http::{self, HttpConfig, HttpServer};

/// `sockit http ...`.
#[derive(Debug, Subcommand)]
pub enum HttpCommand {
    /// Serve a directory to browsers and curl: listings, ranges, validators, uploads.
    Serve(HttpServeArgs),
}

/// `sockit http serve`.
#[derive(Debug, Args)]
pub struct HttpServeArgs {
    /// The directory to serve.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Address: HOST:PORT, [IPv6]:PORT or unix:/path.
    #[arg(long, default_value = http::DEFAULT_HTTP_ADDR)]
    pub listen: Addr,
    /// Accept uploads: `PUT /path` and browser forms (atomic, digest-checked; a token beyond
    /// loopback).
    #[arg(long)]
    pub upload: bool,
    /// Answer 404 for a directory without index.html instead of listing it.
    #[arg(long)]
    pub no_listing: bool,
    /// List and serve dot files.
    #[arg(long)]
    pub show_hidden: bool,
    /// Replace existing files on upload (atomically) instead of answering 409.
    #[arg(long)]
    pub overwrite: bool,
    /// Largest upload accepted (e.g. 512M, 10G; default 1G).
    #[arg(long, value_parser = parse_size)]
    pub max_file_size: Option<u64>,
    /// File holding the upload token (mode 0600); else SOCKIT_TOKEN; else none, which only
    /// loopback allows (a token is generated beyond loopback).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Also carry a chat: its page at /chat/ and its WebSocket at /chat/ws, in place of
    /// anything under chat/ in the directory. In `sockit serve` it is the set's chat entry
    /// (same rooms and nicks as its other ports); alone, a chat of this server's own. Beyond
    /// loopback the page asks for the token.
    #[arg(long)]
    pub chat: bool,
    /// --tls, --cert, --key.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// --idle-timeout here is the keep-alive idle limit (default 300s).
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `sockit http serve`.
pub(super) async fn run_http_serve(args: HttpServeArgs) -> Result<(), Failure> {
    let shutdown = engine::shutdown_on_signals().context("cannot install signal handlers")?;
    let bound = args.bind(&shutdown, &Tokens::single(), None).await?;
    run_command(vec![bound], shutdown).await
}

impl HttpServeArgs {
    /// Whether this service takes a token: uploads or a chat beyond loopback.
    pub fn needs_token(&self) -> bool {
        (self.upload || self.chat) && !self.listen.is_local()
    }

    /// Binds the HTTP service, carrying `chat` (else a chat of its own) if `--chat`; it
    /// serves until `shutdown` fires.
    ///
    /// # Errors
    /// A usage error for a bad directory, token file or certificate, or the bind error.
    pub async fn bind(
        self,
        shutdown: &CancellationToken,
        tokens: &Tokens,
        chat: Option<&LentChat>,
    ) -> Result<Bound, Failure> {
        let fail = |e| bind_failure(http::SERVICE, e);
        let listener = Listener::bind(&self.listen, &self.engine.bind_options())
            .await
            .map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        let mut notes = Vec::new();
        let mut config = HttpConfig::new(&self.dir);
        config.listing = !self.no_listing;
        config.show_hidden = self.show_hidden;
        config.upload = self.upload;
        let token = if self.upload || (self.chat && !addr.is_local()) {
            tokens.resolve(self.token_file.as_deref(), &addr, &mut notes)?
        } else {
            None
        };
        if self.chat {
            let lent = chat.cloned().unwrap_or_else(|| LentChat {
                broker: Broker::new(BrokerConfig::default()),
                rate: RateLimit::default(),
            });
            // As the chat's own web listener: on loopback no token (a page elsewhere is
            // kept out by the Origin check), beyond it the same token as uploads.
            let web = WebConfig {
                rate: lent.rate,
                token: token.clone().filter(|_| !addr.is_local()),
                ..WebConfig::default()
            };
            config.chat = Some(WebServer::new(lent.broker, web));
            if let Addr::Inet(sa) = &addr {
                let scheme = if self.tls.tls { "https" } else { "http" };
                notes.push(Note::Text(format!(
                    "chat: open {scheme}://{sa}{} in a browser",
                    chat::CHAT_PATH
                )));
            }
        }
        if self.upload {
            config.token = token;
        }
        if self.overwrite {
            config.store.policy = Policy::Overwrite;
        }
        if let Some(max) = self.max_file_size {
            config.store.max_file_size = max;
        }
        config.tls = self.tls.acceptor(&addr, &mut notes)?;
        let tls = config.tls.is_some();
        let handler = HttpServer::new(config)
            .with_context(|| format!("cannot serve {}", self.dir.display()))
            .map_err(Failure::Usage)?;
        notes.push(Note::Text(format!("dir: {}", self.dir.display())));
        let engine =
            self.engine
                .config(http::SERVICE, Mode::Concurrent, ServiceDefaults::default());
        Ok(Bound {
            service: http::SERVICE,
            transport: stream_transport(&addr, tls),
            label: "http".into(),
            detail: Some(format!("(dir {})", self.dir.display())),
            addr,
            notes,
            run: Box::pin(serve(listener, handler, engine, shutdown.clone())),
        })
    }
}
