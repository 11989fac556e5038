//! `sockit serve`: a set of services from a TOML file or the embedded loopback-only default.
//!
//! Each `[[service]]` entry names its `kind` and then takes exactly the flags of that kind's
//! own command, spelled the same (`max-conns = 100`, `idle-timeout = "5m"`, `tls = true`):
//! an entry is parsed by the command's own clap definition, so defaults, checks and help are
//! one and the same, and an entry binds through the same code as the command.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, FromArgMatches};
use tokio_util::sync::CancellationToken;

use super::chat::LentChat;
use super::launch::{run_all, Bound, Note, Tokens, SAME_TOKEN};
use super::output::{print_text, say};
use super::{ChatServeArgs, EchoArgs, ExecServeArgs, Failure, FilesServeArgs, HttpServeArgs};
use sockit::engine;
use sockit::net::Addr;

/// The default service set: loopback only.
pub const DEFAULT_CONFIG: &str = r#"# sockit serve: the default service set. Everything binds loopback.
# Copy this file, edit it, and pass it with --config. Each entry takes the flags of its kind's
# command under the same names (`sockit echo --help`, `sockit exec serve --help`, ...); the
# keys and defaults of every kind are listed at the end of `sockit serve --print-config`.

[[service]]
kind = "echo"            # TCP echo
listen = "127.0.0.1:7007"

[[service]]
kind = "echo"            # UDP echo
listen = "127.0.0.1:7007"
udp = true

# exec, files and chat share one token: an entry's token-file, else SOCKIT_TOKEN, else one
# generated at start and printed once below the first banner line. Clients set SOCKIT_TOKEN.

[[service]]
kind = "exec"            # remote commands
listen = "127.0.0.1:7008"

[[service]]
kind = "files"           # put / get / ls
listen = "127.0.0.1:7009"
dir = "sockit-files"     # created if missing

[[service]]
kind = "chat"            # chat: `sockit chat join` on listen,
listen = "127.0.0.1:7010" # plain text for nc/telnet on line-listen (no auth: loopback)
line-listen = "127.0.0.1:7011"

[[service]]
kind = "http"            # the files directory for browsers and curl (read-only),
listen = "127.0.0.1:7012" # and the chat's page: http://127.0.0.1:7012/chat/
dir = "sockit-files"
chat = true
"#;

/// `sockit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML service set (see --print-config for the format).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the embedded default service set, and every kind's keys with their defaults,
    /// and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// One `[[service]]` entry, parsed by its kind's command.
#[derive(Debug)]
pub enum Entry {
    /// `sockit echo`.
    Echo(EchoArgs),
    /// `sockit exec serve`.
    Exec(ExecServeArgs),
    /// `sockit files serve`.
    Files(FilesServeArgs),
    /// `sockit chat serve`.
    Chat(ChatServeArgs),
    /// `sockit http serve`.
    Http(HttpServeArgs),
}

/// The kinds an entry may name, and the command whose flags it takes.
const KINDS: [(&str, &str); 5] = [
    ("echo", "sockit echo"),
    ("exec", "sockit exec serve"),
    ("files", "sockit files serve"),
    ("chat", "sockit chat serve"),
    ("http", "sockit http serve"),
];

fn kind_command(kind: &str) -> Option<clap::Command> {
    let cmd = clap::Command::new("entry").no_binary_name(true);
    match kind {
        "echo" => Some(EchoArgs::augment_args(cmd)),
        "exec" => Some(ExecServeArgs::augment_args(cmd)),
        "files" => Some(FilesServeArgs::augment_args(cmd)),
        "chat" => Some(ChatServeArgs::augment_args(cmd)),
        "http" => Some(HttpServeArgs::augment_args(cmd)),
        _ => None,
    }
}

/// The keys an entry of `kind` takes: its command's visible long flags.
fn keys(cmd: &clap::Command) -> Vec<&str> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .collect()
}

/// Why a service set cannot run.
fn invalid(message: String) -> Failure {
    Failure::Usage(anyhow::anyhow!("invalid service configuration: {message}"))
}

impl Entry {
    /// Parses the `index`th entry (counting from 1) through its kind's command.
    fn parse(index: usize, table: &toml::Table) -> Result<Entry, Failure> {
        let kind = match table.get("kind") {
            Some(toml::Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(invalid(format!("entry {index}: kind must be a string"))),
            None => return Err(invalid(format!("entry {index}: no kind"))),
        };
        let Some(mut cmd) = kind_command(kind) else {
            let names: Vec<_> = KINDS.iter().map(|(k, _)| *k).collect();
            return Err(invalid(format!(
                "entry {index}: unknown kind {kind:?} (one of {})",
                names.join(", ")
            )));
        };
        let entry = format!("entry {index} (kind = {kind:?})");
        let known = keys(&cmd);
        let mut argv = Vec::new();
        for (key, value) in table {
            if key == "kind" {
                continue;
            }
            if !known.contains(&key.as_str()) {
                return Err(invalid(format!("{entry}: {}", unknown_key(kind, key))));
            }
            push_flag(&mut argv, key, value).map_err(|why| invalid(format!("{entry}: {why}")))?;
        }
        let matches = cmd
            .try_get_matches_from_mut(&argv)
            .map_err(|e| invalid(format!("{entry}: {}", clap_reason(&e))))?;
        let parsed = match kind {
            "echo" => EchoArgs::from_arg_matches(&matches).map(Entry::Echo),
            "exec" => ExecServeArgs::from_arg_matches(&matches).map(Entry::Exec),
            "files" => FilesServeArgs::from_arg_matches(&matches).map(Entry::Files),
            "http" => HttpServeArgs::from_arg_matches(&matches).map(Entry::Http),
            _ => ChatServeArgs::from_arg_matches(&matches).map(Entry::Chat),
        };
        parsed.map_err(|e| invalid(format!("{entry}: {}", clap_reason(&e))))
    }

    /// The addresses the entry binds, with whether each is a datagram socket.
    fn addrs(&self) -> Vec<(Addr, bool)> {
        match self {
            Entry::Echo(a) => vec![(a.listen.clone(), a.udp)],
            Entry::Exec(a) => vec![(a.listen.clone(), false)],
            Entry::Files(a) => vec![(a.listen.clone(), false)],
            Entry::Http(a) => vec![(a.listen.clone(), false)],
            Entry::Chat(a) => std::iter::once(a.listen.clone())
                .chain(a.line_listen.clone())
                .chain(a.web_listen.clone())
                .map(|addr| (addr, false))
                .collect(),
        }
    }

    /// Whether the entry's service needs a token: exec always (unless it speaks a lesson's
    /// unauthenticated protocol), files and chat beyond loopback. A set with such an entry
    /// has one token that its other token-taking services accept too.
    fn needs_token(&self) -> bool {
        match self {
            Entry::Echo(_) => false,
            Entry::Exec(a) => a.compat.is_none(),
            Entry::Files(_) | Entry::Chat(_) => self.addrs().iter().any(|(a, _)| !a.is_local()),
            Entry::Http(a) => a.needs_token(),
        }
    }

    /// Binds the entry's services; they serve until `shutdown` fires. An `http` entry with
    /// `chat = true` carries `chat`, which a chat entry returns.
    async fn bind(
        self,
        shutdown: &CancellationToken,
        tokens: &Tokens,
        chat: Option<&LentChat>,
    ) -> Result<(Vec<Bound>, Option<LentChat>), Failure> {
        let one = |b| (vec![b], None);
        match self {
            Entry::Echo(a) => a.bind(shutdown).await.map(one),
            Entry::Exec(a) => a.bind(shutdown, tokens).await.map(one),
            Entry::Files(a) => a.bind(shutdown, tokens).await.map(one),
            Entry::Chat(a) => {
                let (bound, lent) = a.bind_lending(shutdown, tokens).await?;
                Ok((bound, Some(lent)))
            }
            Entry::Http(a) => a.bind(shutdown, tokens, chat).await.map(one),
        }
    }
}

/// An unknown key, and the kind it belongs to if it is another kind's.
fn unknown_key(kind: &str, key: &str) -> String {
    let owner = KINDS.iter().find(|(other, _)| {
        *other != kind && kind_command(other).is_some_and(|c| keys(&c).contains(&key))
    });
    match owner {
        Some((other, _)) => {
            format!("`{key}` is not a key of {kind} entries (it is one of {other}'s)")
        }
        None => format!("unknown key `{key}`"),
    }
}

/// The flag a key and its value stand for: `--key=value`, `--key` for `true`, nothing for
/// `false`, the flag once per item for an array.
fn push_flag(argv: &mut Vec<String>, key: &str, value: &toml::Value) -> Result<(), String> {
    match value {
        toml::Value::Boolean(true) => argv.push(format!("--{key}")),
        toml::Value::Boolean(false) => {}
        toml::Value::String(s) => argv.push(format!("--{key}={s}")),
        toml::Value::Integer(n) => argv.push(format!("--{key}={n}")),
        toml::Value::Float(f) => argv.push(format!("--{key}={f}")),
        toml::Value::Array(items) => {
            for item in items {
                if matches!(item, toml::Value::Array(_) | toml::Value::Table(_)) {
                    return Err(format!("`{key}` takes a list of plain values"));
                }
                push_flag(argv, key, item)?;
            }
        }
        toml::Value::Datetime(_) | toml::Value::Table(_) => {
            return Err(format!("`{key}` takes a string, a number or a boolean"))
        }
    }
    Ok(())
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.trim_start_matches("error: ").to_owned()
}

/// Parses a service set: every entry checked before anything binds, and no address bound
/// twice.
///
/// # Errors
/// A usage error naming the entry, the key and the reason.
pub fn parse_config(text: &str) -> Result<Vec<Entry>, Failure> {
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(e.message().to_owned()))?;
    if let Some(key) = doc.keys().find(|k| *k != "service") {
        return Err(invalid(format!(
            "unknown top-level key `{key}` (entries are [[service]] tables)"
        )));
    }
    let tables = match doc.get("service") {
        Some(toml::Value::Array(tables)) if !tables.is_empty() => tables,
        Some(_) => return Err(invalid("`service` must be [[service]] tables".into())),
        None => return Err(invalid("no [[service]] entries".into())),
    };
    let mut entries = Vec::with_capacity(tables.len());
    for (i, value) in tables.iter().enumerate() {
        let toml::Value::Table(table) = value else {
            return Err(invalid(format!("entry {} is not a table", i + 1)));
        };
        entries.push(Entry::parse(i + 1, table)?);
    }
    check_no_shared_address(&entries)?;
    check_one_chat_to_carry(&entries)?;
    Ok(entries)
}

/// An `http` entry with `chat = true` carries the set's chat entry (or, with none, a chat of
/// its own); with two chat entries it could not say which.
fn check_one_chat_to_carry(entries: &[Entry]) -> Result<(), Failure> {
    let chats = entries
        .iter()
        .filter(|e| matches!(e, Entry::Chat(_)))
        .count();
    let carrier = entries
        .iter()
        .position(|e| matches!(e, Entry::Http(a) if a.chat));
    match carrier {
        Some(i) if chats > 1 => Err(invalid(format!(
            "entry {} (kind = \"http\"): chat = true carries the set's chat entry, but the set \
             has {chats}; keep one, or give each chat a web-listen of its own instead",
            i + 1
        ))),
        _ => Ok(()),
    }
}

/// Two entries on one address (port 0 aside) could never both bind; say which.
fn check_no_shared_address(entries: &[Entry]) -> Result<(), Failure> {
    let mut seen: Vec<((Addr, bool), usize)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        for addr in entry.addrs() {
            let any_port = matches!(&addr.0, Addr::Inet(sa) if sa.port() == 0);
            if any_port {
                continue;
            }
            if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
                return Err(invalid(format!(
                    "entries {} and {} both listen on {}{}",
                    first + 1,
                    i + 1,
                    addr.0,
                    match addr {
                        (Addr::Inet(_), true) => " (udp)",
                        (Addr::Unix(_), true) => " (datagram)",
                        (_, false) => "",
                    }
                )));
            }
            seen.push((addr, i));
        }
    }
    Ok(())
}

/// The default set, then every kind's keys with their defaults, as comments.
pub fn print_config() -> String {
    let mut out = String::from(DEFAULT_CONFIG);
    out.push_str(
        "\n# Every kind's keys, with their defaults (a key left out takes its default):\n",
    );
    for (kind, command) in KINDS {
        let Some(cmd) = kind_command(kind) else {
            continue;
        };
        out.push_str(&format!("#\n# kind = \"{kind}\"  ({command})\n"));
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else {
                continue;
            };
            let defaults: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            let value = match (takes_value, defaults.as_slice()) {
                (false, _) => "false".to_owned(),
                (true, []) => "(none)".to_owned(),
                (true, [one]) => format!("{one:?}"),
                (true, many) => format!("{many:?}"),
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let help = help.split(". ").next().unwrap_or_default();
            out.push_str(&format!("#   {long} = {value}    # {help}\n"));
        }
    }
    out
}

pub(super) async fn run_serve(args: ServeArgs) -> Result<(), Failure> {
    if args.print_config {
        print_text(&print_config());
        return Ok(());
    }
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(Failure::Usage)?,
        None => DEFAULT_CONFIG.to_string(),
    };
    let entries = parse_config(&text)?;
    // One token for the whole set, so a client given SOCKIT_TOKEN reaches every service.
    let tokens = Tokens::for_set(entries.iter().any(Entry::needs_token))?;
    let shutdown = engine::shutdown_on_signals().context("cannot install signal handlers")?;
    // The chat entry first, so that an http entry can carry it; banners in the file's order.
    let (chats, others): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .enumerate()
        .partition(|(_, e)| matches!(e, Entry::Chat(_)));
    let mut lent = None;
    let mut in_order = Vec::new();
    for (i, entry) in chats.into_iter().chain(others) {
        let (bound, chat) = entry.bind(&shutdown, &tokens, lent.as_ref()).await?;
        lent = lent.or(chat);
        in_order.push((i, bound));
    }
    in_order.sort_by_key(|(i, _)| *i);
    let mut bound: Vec<Bound> = in_order.into_iter().flat_map(|(_, b)| b).collect();
    announce_token_first(&mut bound);
    for b in &bound {
        say(&banner_line(b));
    }
    let services = match bound.len() {
        1 => "1 service".to_owned(),
        n => format!("{n} services"),
    };
    say(&format!("serving {services}; Ctrl-C to stop"));
    run_all(bound, shutdown)
        .await
        .map_err(|e| Failure::Runtime(anyhow::Error::from(e).context("a service failed")))
}

/// Shows a generated token on the first banner line that takes it, and "the same as above"
/// on the later ones, whichever entry was bound first (the chat entry is bound before the
/// others).
fn announce_token_first(bound: &mut [Bound]) {
    let mut generated = bound.iter().flat_map(|b| &b.notes).filter_map(|n| match n {
        Note::Token(token) => Some(token.clone()),
        _ => None,
    });
    let (Some(token), None) = (generated.next(), generated.next()) else {
        return;
    };
    let mut first = true;
    for note in bound.iter_mut().flat_map(|b| b.notes.iter_mut()) {
        let takes = match note {
            Note::Token(_) => true,
            Note::Text(text) => text == SAME_TOKEN,
            Note::Fingerprint(_) => false,
        };
        if takes {
            *note = if first {
                Note::Token(token.clone())
            } else {
                Note::Text(SAME_TOKEN.into())
            };
            first = false;
        }
    }
}

/// One service's banner: what runs where, and what a client needs to know.
fn banner_line(b: &Bound) -> String {
    let mut line = format!("{:<8} {:<8} {}", b.service, b.transport, b.addr);
    for note in &b.notes {
        let text = match note {
            Note::Token(token) => format!("token: {token} (generated; clients set SOCKIT_TOKEN)"),
            Note::Fingerprint(fp) => format!("tls fingerprint: {fp}"),
            Note::Text(text) => text.clone(),
        };
        line.push_str(&format!("\n         {text}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        match parse_config(text) {
            Err(Failure::Usage(e)) => e.to_string(),
            Err(other) => panic!("not a usage error: {other:?}"),
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn the_default_config_parses_and_binds_loopback_only() {
        let entries = parse_config(DEFAULT_CONFIG).unwrap();
        assert_eq!(entries.len(), 6);
        for entry in &entries {
            for (addr, _) in entry.addrs() {
                assert!(addr.is_local(), "{addr}");
            }
        }
        // The http entry carries the chat's page (issue 15), and nothing else serves it.
        assert!(entries
            .iter()
            .any(|e| matches!(e, Entry::Http(a) if a.chat)));
        assert!(entries
            .iter()
            .all(|e| !matches!(e, Entry::Chat(a) if a.web_listen.is_some())));
    }

    #[test]
    fn an_http_entry_carrying_the_chat_needs_no_more_than_one_chat_entry() {
        let http = "[[service]]\nkind = \"http\"\nlisten = \"127.0.0.1:0\"\nchat = true\n";
        let chat = "[[service]]\nkind = \"chat\"\nlisten = \"127.0.0.1:0\"\n";
        parse_config(http).unwrap();
        parse_config(&format!("{http}\n{chat}")).unwrap();
        let two = refusal(&format!("{http}\n{chat}\n{chat}"));
        assert!(
            two.contains("entry 1") && two.contains("has 2") && two.contains("web-listen"),
            "{two}"
        );
        // Without an http entry carrying it, two chats are fine.
        parse_config(&format!("{chat}\n{chat}")).unwrap();
    }

    #[test]
    fn entries_take_their_commands_flags_with_the_same_defaults() {
        let entries = parse_config(
            "[[service]]\nkind = \"files\"\nlisten = \"127.0.0.1:0\"\ndir = \"d\"\n\
             max-conns = 7\nidle-timeout = \"5m\"\npartial-max-age = \"never\"\nallow = [\"10.0.0.0/8\", \"::1\"]\n",
        )
        .unwrap();
        let Entry::Files(files) = &entries[0] else {
            panic!("parsed as another kind");
        };
        let engine = &files.common.engine;
        assert_eq!(engine.max_conns, Some(7));
        assert_eq!(
            engine.idle_timeout,
            Some(super::super::Limit(Some(std::time::Duration::from_secs(
                300
            ))))
        );
        assert_eq!(engine.allow.len(), 2);
        assert_eq!(files.common.partial_max_age.0, None);
        // Left out, a key takes the command's default.
        assert_eq!(engine.max_pending, sockit::session::DEFAULT_MAX_PENDING);
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry_the_key_and_the_reason() {
        let echo = "[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:0\"\n";
        let unknown = refusal(&format!("{echo}lisen = 1\n"));
        assert!(
            unknown.contains("entry 1") && unknown.contains("`lisen`"),
            "{unknown}"
        );
        let foreign = refusal(&format!("{echo}dir = \"x\"\n"));
        assert!(
            foreign.contains("`dir` is not a key of echo") && foreign.contains("files"),
            "{foreign}"
        );
        let negative = refusal(&format!("{echo}idle-timeout = \"-1s\"\n"));
        assert!(
            negative.contains("entry 1") && negative.contains("idle-timeout"),
            "{negative}"
        );
        let negative_number = refusal(&format!("{echo}max-conns = -1\n"));
        assert!(negative_number.contains("max-conns"), "{negative_number}");
        let zero = refusal(&format!("{echo}idle-timeout = \"0\"\n"));
        assert!(zero.contains("never"), "{zero}");
        let mode = refusal(&format!("{echo}mode = \"forking\"\n"));
        assert!(mode.contains("mode"), "{mode}");
        let kind = refusal("[[service]]\nkind = \"nope\"\nlisten = \"127.0.0.1:0\"\n");
        assert!(kind.contains("unknown kind"), "{kind}");
        let shared = refusal(
            "[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:7107\"\n\n\
             [[service]]\nkind = \"exec\"\nlisten = \"127.0.0.1:7107\"\n",
        );
        assert!(
            shared.contains("entries 1 and 2") && shared.contains("127.0.0.1:7107"),
            "{shared}"
        );
        let web = refusal(
            "[[service]]\nkind = \"chat\"\nlisten = \"127.0.0.1:7110\"\n\
             web-listen = \"127.0.0.1:7112\"\n\n\
             [[service]]\nkind = \"http\"\nlisten = \"127.0.0.1:7112\"\n",
        );
        assert!(
            web.contains("entries 1 and 2") && web.contains("127.0.0.1:7112"),
            "{web}"
        );
        // TCP and UDP on one port are two sockets, not a clash.
        parse_config(&format!(
            "{echo}\n[[service]]\nkind = \"echo\"\nlisten = \"127.0.0.1:7107\"\nudp = true\n"
        ))
        .unwrap();
        assert!(refusal("").contains("no [[service]]"));
        assert!(refusal("drain_timeout_secs = 5\n").contains("drain_timeout_secs"));
    }

    #[test]
    fn print_config_lists_every_kind_with_every_engine_key() {
        let text = print_config();
        for (kind, _) in KINDS {
            assert!(text.contains(&format!("# kind = \"{kind}\"")), "{kind}");
        }
        let engine = clap::Command::new("x");
        let engine = super::super::EngineArgs::augment_args(engine);
        for key in keys(&engine) {
            let listed = text.matches(&format!("#   {key} = ")).count();
            assert_eq!(listed, KINDS.len(), "{key} is listed for every kind");
        }
    }
}
