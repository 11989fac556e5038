//! The exec commands: `exec serve`, `exec run` (sockit's protocol or the tutorial's) and
//! `exec shell`. Their clap types and `exec serve` are here; `exec run` and `exec shell` have a
//! file each.

mod run;
mod shell;

use crate::cli::peer::Peer;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::launch::{
    bind_failure, run_command, stream_transport, Bound, EngineArgs, ServiceDefaults, Tokens,
};
use super::{parse_duration, Failure, Note};
use sockit::compat::exec::{self as compat, CompatConfig, CompatServer};
use sockit::compat::Dialect;
use sockit::engine::{self, serve, Mode};
use sockit::net::{Addr, Listener};
use sockit::service::exec::{self, ExecConfig, ExecServer, ExecService};
use sockit::session::{load_token, GateConfig, Token};

pub(super) use run::run_exec_run;
pub(super) use shell::run_exec_shell;

/// `sockit exec ...`.
#[derive(Debug, Subcommand)]
pub enum ExecCommand {
    /// Run commands for authenticated clients, one per connection.
    Serve(ExecServeArgs),
    /// Run one command on an exec server; exits with its status (ssh's rule).
    Run(ExecRunArgs),
    /// A prompt loop: each line runs on the server (a connection per line; one connection for
    /// all with --compat) until EOF or `exit`.
    Shell(ExecShellArgs),
}

/// `sockit exec shell`.
#[derive(Debug, Args)]
pub struct ExecShellArgs {
    /// The exec server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Peer,
    /// File holding the token (mode 0600); else SOCKIT_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Send each line split on whitespace as a program and its arguments, for servers
    /// without --shell (default: each line is one `sh -c` line).
    #[arg(long)]
    pub words: bool,
    /// Speak one of the lessons' protocols, every line over one connection (no auth, no TLS).
    #[arg(long, value_enum, conflicts_with_all = ["token_file", "words"])]
    pub compat: Option<Compat>,
    /// With --compat, the time each reply may take (default 75s).
    #[arg(long, value_parser = parse_duration, requires = "compat")]
    pub timeout: Option<Duration>,
}

/// One of the Python socket lessons' "simulated ssh" protocols, to speak instead of sockit's
/// own. None has authentication: loopback or Unix sockets only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// No framing: stdout then stderr as they are (lesson 000 §4).
    Raw,
    /// The length as decimal text, an ack (`recv_ready`), then stdout or else stderr
    /// (000 §6.1, 002 §1.7).
    LengthTextAck,
    /// The length as decimal text glued to the output, no ack (002 §1.5).
    LengthText,
    /// A 4-byte `struct.pack("i")` length, then stdout and stderr (001 §3).
    Length,
    /// A 4-byte `struct.pack("i")` length, a JSON header, then stdout and stderr (000 §6.2);
    /// also called `tutorial`.
    #[value(alias = "tutorial")]
    StructJson,
}

impl From<Compat> for Dialect {
    fn from(compat: Compat) -> Dialect {
        match compat {
            Compat::Raw => Dialect::Raw,
            Compat::LengthTextAck => Dialect::LengthTextAck,
            Compat::LengthText => Dialect::LengthText,
            Compat::Length => Dialect::Length,
            Compat::StructJson => Dialect::StructJson,
        }
    }
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
    /// Stop a command after this long (e.g. 30s, 5m; with --compat the default is 60s): SIGTERM to its whole process group, SIGKILL --kill-grace later; the client is
    /// told and exits 124.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Time a timed-out command gets between SIGTERM and SIGKILL, to clean up.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub kill_grace: Duration,
    /// --max-conns defaults to 16 with --compat, whose sessions hold a command's whole output
    /// in memory.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// --tls, --cert, --key.
    #[command(flatten)]
    pub tls: super::ServerTlsArgs,
    /// Speak one of the Python lessons' protocols to their client (no auth, no TLS, so only on
    /// loopback or a Unix socket).
    #[arg(long, value_enum, conflicts_with_all = ["token_file", "shell", "allow_cmd", "tls"])]
    pub compat: Option<Compat>,
}

/// `sockit exec run`.
#[derive(Debug, Args)]
pub struct ExecRunArgs {
    /// The exec server: HOST:PORT, [IPv6]:PORT or unix:/path.
    pub addr: Peer,
    /// File holding the token (mode 0600); else SOCKIT_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Give up after this long (exit 255; the server then kills the command). With --compat
    /// the default is 75s.
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
    /// --tls, --tls-pin, --tls-ca.
    #[command(flatten)]
    pub tls: super::ClientTlsArgs,
    /// Speak one of the Python lessons' protocols to their server (the words are joined with
    /// spaces into one command line; no auth, no TLS).
    #[arg(long, value_enum, conflicts_with_all = ["token_file", "shell", "tls", "tty"])]
    pub compat: Option<Compat>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `exec run`'s status for a failure that is not the remote command's (ssh's rule).
const EXEC_FAILURE_CODE: u8 = 255;

/// A failure of `exec run` or `exec shell` that is not the remote command's.
fn fail(error: anyhow::Error) -> Failure {
    Failure::Exit {
        code: EXEC_FAILURE_CODE,
        error: Some(error),
    }
}

/// The client's token, from `token_file` or else SOCKIT_TOKEN; having none is a failure.
fn required_token(token_file: Option<&Path>) -> Result<Token, Failure> {
    load_token(token_file)
        .map_err(|e| fail(e.into()))?
        .ok_or_else(|| {
            fail(anyhow::anyhow!(
                "no token: give --token-file or set SOCKIT_TOKEN"
            ))
        })
}

pub(super) async fn run_exec_serve(args: ExecServeArgs) -> Result<(), Failure> {
    let shutdown = engine::shutdown_on_signals().context("cannot install signal handlers")?;
    let bound = args.bind(&shutdown, &Tokens::single()).await?;
    run_command(vec![bound], shutdown).await
}

impl ExecServeArgs {
    /// Binds the exec service (or a lessons' protocol with `--compat`); it serves until
    /// `shutdown` fires.
    ///
    /// # Errors
    /// A usage error for a bad token file, certificate or address, or the bind error.
    pub async fn bind(
        self,
        shutdown: &CancellationToken,
        tokens: &Tokens,
    ) -> Result<Bound, Failure> {
        if let Some(compat) = self.compat {
            return self.bind_compat(compat.into(), shutdown).await;
        }
        let mut notes = Vec::new();
        let config = ExecConfig {
            shell: self.shell,
            allow_cmds: self.allow_cmd,
            timeout: self.timeout,
            kill_grace: self.kill_grace,
            ..ExecConfig::default()
        };
        // A quiet command may run for hours: --timeout bounds commands, keepalive finds a
        // vanished client, and the handshake and the run request have their own deadlines.
        let defaults = ServiceDefaults {
            idle_timeout: None,
            ..ServiceDefaults::default()
        };
        let engine = self
            .engine
            .config(exec::SERVICE, Mode::Concurrent, defaults);
        let fail = |e| bind_failure("exec", e);
        let listener = Listener::bind(&self.listen, &self.engine.bind_options())
            .await
            .map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        let token = tokens.require(self.token_file.as_deref(), &addr, &mut notes)?;
        if !addr.is_local() {
            tracing::warn!(%addr, "exec listens beyond loopback: anyone holding the token can run commands");
        }
        let gate = GateConfig {
            tls: self.tls.acceptor(&addr, &mut notes)?,
            pending: self.engine.pending(),
            ..exec::gate(token)
        };
        let handler = ExecServer::new(gate, ExecService::new(config));
        Ok(Bound {
            service: "exec",
            transport: stream_transport(&addr, self.tls.tls),
            label: "exec".into(),
            detail: None,
            addr,
            notes,
            run: Box::pin(serve(listener, handler, engine, shutdown.clone())),
        })
    }

    async fn bind_compat(
        self,
        dialect: Dialect,
        shutdown: &CancellationToken,
    ) -> Result<Bound, Failure> {
        if !self.listen.is_local() {
            return Err(Failure::Usage(anyhow::anyhow!(
                "--compat {dialect} has no authentication, so it only listens on loopback or a \
                 Unix socket, not {}",
                self.listen
            )));
        }
        let config = CompatConfig {
            timeout: self.timeout.unwrap_or(compat::DEFAULT_COMMAND_TIMEOUT),
            ..CompatConfig::default()
        };
        let defaults = ServiceDefaults {
            max_conns: compat::DEFAULT_MAX_CONNS,
            ..ServiceDefaults::default()
        };
        let engine = self
            .engine
            .config("exec-compat", Mode::Concurrent, defaults);
        let fail = |e| bind_failure("exec", e);
        let listener = Listener::bind(&self.listen, &self.engine.bind_options())
            .await
            .map_err(fail)?;
        let addr = listener.local_addr().map_err(fail)?;
        let handler = CompatServer::new(dialect, config);
        Ok(Bound {
            service: "exec",
            transport: stream_transport(&addr, false),
            label: format!("exec (the lessons' {dialect} protocol, no auth)"),
            detail: None,
            addr,
            notes: vec![Note::Text(format!(
                "the lessons' {dialect} protocol: no auth"
            ))],
            run: Box::pin(serve(listener, handler, engine, shutdown.clone())),
        })
    }
}
