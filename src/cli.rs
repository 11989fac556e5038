//! The command line: clap types, and the dispatch from each subcommand to the library.
//! One module per command family (`exec`, `files`, `chat`, `echo`, `netcat` for `connect` and
//! `listen`, `serve`, `bench`); what they share stays here.

mod bench;
mod chat;
mod echo;
mod exec;
mod files;
mod http;
pub mod launch;
mod netcat;
pub mod output;
mod peer;
mod serve;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use bench::BenchCommand;
use chat::{ChatCommand, ChatServeArgs};
use echo::EchoArgs;
use exec::{ExecCommand, ExecServeArgs};
#[cfg(test)]
use files::{parse_max_age, MaxAge};
use files::{FilesCommand, FilesServeArgs, GetArgs, LsArgs, PutArgs, RecvArgs};
use http::{HttpCommand, HttpServeArgs};
#[cfg(test)]
use launch::Limit;
use launch::{EngineArgs, Note};
use netcat::{ConnectArgs, ListenArgs};
use peer::Peer;
use serve::ServeArgs;

use sockit::net::tls::{Fingerprint, ServerIdentity, ServerTrust, TlsAcceptor, TlsConnector};
use sockit::net::Addr;

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
    /// When to colour output (log levels, chat nicks, help): auto colours a terminal unless
    /// NO_COLOR is set.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t, global = true)]
    pub color: output::ColorWhen,
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
    /// HTTP: serve a directory to browsers and curl (`http serve`).
    #[command(subcommand)]
    Http(HttpCommand),
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
    /// Print a shell completion script (e.g. `sockit completions bash > /etc/bash_completion.d/sockit`).
    Completions(CompletionsArgs),
    /// Print the manual page (roff; `sockit man | man -l -`), or write one per command with --dir.
    Man(ManArgs),
}

/// `sockit completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// `sockit man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write sockit.1 and a sockit-COMMAND.1 page per subcommand into this directory instead.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
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
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 5s, 2m, 7d"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// An error and its causes on one line, `outer: cause: root`, each cause left out when the text
/// before it already says it (many errors quote their source in their own message).
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
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
    /// socket, with no hand-offs between worker threads (measured in docs/benchmarks.md); a
    /// process-mode child serves one connection.
    pub fn single_threaded(&self) -> bool {
        matches!(self.command, Command::Exec(ExecCommand::Run(_))) || sockit::engine::is_child()
    }

    /// The log level with no `-v` or `-q`: `info` for servers, `warn` for the one-shot
    /// netcat and `recv` commands, whose own lines already say what happened (an `info`
    /// session log would repeat them).
    pub fn log_level(&self) -> &'static str {
        let one_shot = matches!(
            self.command,
            Command::Listen(_) | Command::Connect(_) | Command::Recv(_)
        );
        match (self.verbose, self.quiet) {
            (0, 0) if one_shot => "warn",
            (0, 0) => "info",
            (1, _) => "debug",
            (v, _) if v >= 2 => "trace",
            (_, 1) => "warn",
            _ => "error",
        }
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// A [`Failure`] carrying the exit-code class.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let quiet = cli.quiet > 0;
    match cli.command {
        Command::Serve(args) => serve::run_serve(args).await,
        Command::Echo(args) => echo::run_echo(args).await,
        Command::Connect(args) => netcat::run_connect(args, cli.verbose > 0).await,
        Command::Listen(args) => netcat::run_listen(args).await,
        Command::Exec(ExecCommand::Serve(args)) => exec::run_exec_serve(args).await,
        Command::Exec(ExecCommand::Run(args)) => exec::run_exec_run(args).await,
        Command::Exec(ExecCommand::Shell(args)) => exec::run_exec_shell(args).await,
        Command::Files(FilesCommand::Serve(args)) => files::run_files_serve(args).await,
        Command::Http(HttpCommand::Serve(args)) => http::run_http_serve(args).await,
        Command::Put(args) => files::run_put(args, "put", quiet).await,
        Command::Get(args) => files::run_get(args, quiet).await,
        Command::Ls(args) => files::run_ls(args).await,
        Command::Recv(args) => files::run_recv(args, quiet).await,
        Command::Send(args) => files::run_put(args, "send", quiet).await,
        Command::Chat(cmd) => chat::run_chat(cmd, cli.color).await,
        Command::Bench(cmd) => bench::run_bench(cmd).await,
        Command::Completions(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut cmd, "sockit", &mut script);
            output::print_text(&String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::Man(args) => man(args.dir.as_deref()),
    }
}

/// Longest word of the user's repeated in a tip.
const TIP_WORD_CHARS: usize = 80;

/// `e` with a tip for a mistake clap cannot name itself: a word after `exec run ADDR` that is
/// the remote command given without the `--` before it (`exec run ADDR uname -a`).
pub fn with_tips(mut e: clap::Error, args: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let before_dashes = args.iter().take_while(|a| *a != "--");
    let words: Vec<_> = before_dashes.filter_map(|a| a.to_str()).collect();
    let exec_run = words.windows(2).any(|w| w == ["exec", "run"]);
    let stray_word = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) if !arg.starts_with('-') => Some(arg.clone()),
        _ => None,
    };
    if let Some(word) = stray_word.filter(|_| exec_run && e.kind() == ErrorKind::UnknownArgument) {
        let word = sockit::text::escape_one_line(&word, TIP_WORD_CHARS);
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![format!(
                "the remote command goes after `--`: `sockit exec run ADDR -- {word} ...`"
            )
            .into()]),
        );
    }
    e
}

/// Renders the manual: to stdout, or one page per command into `dir`.
fn man(dir: Option<&std::path::Path>) -> Result<(), Failure> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .context("cannot render the manual")?;
        output::print_text(&String::from_utf8_lossy(&page));
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    Ok(())
}

/// A client's TLS flags, the same for every framed service's client.
#[derive(Debug, Args)]
pub struct ClientTlsArgs {
    /// Connect over TLS (never falls back to plaintext); needs --tls-pin or --tls-ca, which
    /// imply it.
    #[arg(long)]
    pub tls: bool,
    /// Connect over TLS and accept only the server certificate with this fingerprint
    /// (sha256:AB:CD:...); implies --tls.
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls_pin: Option<Fingerprint>,
    /// Connect over TLS and accept server certificates issued by a CA in this PEM file;
    /// implies --tls.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS connector these flags ask for, checking the server as `peer` was typed (its
    /// host name, or else its address); `None` for plaintext.
    fn connector(&self, peer: &Peer) -> Result<Option<TlsConnector>, Failure> {
        // A pin or a CA can only mean TLS: either implies --tls (as curl's --cacert does not,
        // but a flag that would otherwise be an error should do the one thing it can mean).
        let trust = match (self.tls, self.tls_pin, &self.tls_ca) {
            (_, Some(pin), _) => ServerTrust::Pin(pin),
            (_, None, Some(ca)) => ServerTrust::CaFile(ca.clone()),
            (false, None, None) => return Ok(None),
            (true, None, None) => {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--tls needs --tls-pin FINGERPRINT or --tls-ca FILE; the fingerprint is the \
                     `tls fingerprint: sha256:...` line the server prints at start"
                )))
            }
        };
        let mut connector = TlsConnector::new(&trust).map_err(|e| Failure::Usage(e.into()))?;
        if let Some(host) = peer.host_name() {
            connector = connector
                .for_host(host)
                .map_err(|e| Failure::Usage(e.into()))?;
        }
        Ok(Some(connector))
    }
}

/// A server's TLS flags, the same for every framed service.
#[derive(Debug, Args)]
pub struct ServerTlsArgs {
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
}

impl ServerTlsArgs {
    /// The TLS acceptor these flags ask for (a self-signed certificate for `addr` without
    /// --cert/--key), its fingerprint added to `notes` for clients' `--tls-pin`; `None` for
    /// plaintext.
    fn acceptor(&self, addr: &Addr, notes: &mut Vec<Note>) -> Result<Option<TlsAcceptor>, Failure> {
        let identity = match (self.tls, &self.cert, &self.key) {
            (false, _, _) => return Ok(None),
            (true, Some(cert), Some(key)) => {
                ServerIdentity::from_pem_files(cert, key).map_err(|e| Failure::Usage(e.into()))?
            }
            (true, _, _) => ServerIdentity::self_signed(addr).context("tls")?,
        };
        let acceptor = TlsAcceptor::new(identity).map_err(|e| Failure::Usage(e.into()))?;
        notes.push(Note::Fingerprint(acceptor.fingerprint().to_string()));
        Ok(Some(acceptor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and subcommand below `cmd`, itself included.
    fn all_commands(cmd: &clap::Command) -> Vec<clap::Command> {
        let mut all = vec![cmd.clone()];
        for sub in cmd.get_subcommands() {
            all.extend(all_commands(sub));
        }
        all
    }

    #[test]
    fn no_help_shows_an_empty_default() {
        let root = <Cli as clap::CommandFactory>::command();
        for mut cmd in all_commands(&root) {
            let help = cmd.render_long_help().to_string();
            assert!(
                !help.contains("[default: ]") && !help.contains("[default: \"\"]"),
                "{}: {help}",
                cmd.get_name()
            );
        }
    }

    fn tip_for(args: &[&str]) -> String {
        let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        let e = <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(&args)
            .expect_err("a usage error");
        with_tips(e, &args).to_string()
    }

    #[test]
    fn a_remote_command_without_the_double_dash_gets_a_tip_and_a_bad_flag_does_not() {
        let tip = "the remote command goes after `--`";
        let out = tip_for(&["sockit", "exec", "run", "127.0.0.1:1", "uname", "-a"]);
        assert!(out.contains(tip) && out.contains("-- uname"), "{out}");
        let out = tip_for(&["sockit", "exec", "run", "127.0.0.1:1", "--tokn-file", "f"]);
        assert!(!out.contains(tip) && out.contains("--token-file"), "{out}");
        let out = tip_for(&["sockit", "ls", "127.0.0.1:1", "a", "b"]);
        assert!(!out.contains(tip), "{out}");
    }

    /// An error that quotes its source in its own message, as many of ours do.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind 127.0.0.1:7: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn an_error_line_names_each_cause_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let quoted = anyhow::Error::new(Quoting { source: io() }).context("echo service");
        assert_eq!(
            error_line(&quoted),
            format!("echo service: cannot bind 127.0.0.1:7: {}", io())
        );
        // A cause that its context does not repeat is still shown.
        let plain = anyhow::Error::new(io()).context("cannot read token.txt");
        assert_eq!(
            error_line(&plain),
            format!("cannot read token.txt: {}", io())
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn a_partial_max_age_is_a_positive_duration_or_never_and_defaults_to_the_library_default() {
        use sockit::service::files::DEFAULT_PARTIAL_MAX_AGE;
        assert_eq!(parse_max_age("never").unwrap(), MaxAge(None));
        assert_eq!(
            parse_max_age("12h").unwrap(),
            MaxAge(Some(Duration::from_secs(12 * 3600)))
        );
        let zero = parse_max_age("0s").unwrap_err();
        assert!(zero.contains("never"), "{zero}");
        assert!(parse_max_age("soon").is_err());
        // The flag's default_value ("7d") is the library's default.
        let args = Cli::try_parse_from(["sockit", "files", "serve", "--dir", "d"]).unwrap();
        let Command::Files(FilesCommand::Serve(serve)) = args.command else {
            panic!("parsed as another command");
        };
        assert_eq!(
            serve.common.partial_max_age,
            MaxAge(Some(DEFAULT_PARTIAL_MAX_AGE))
        );
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
