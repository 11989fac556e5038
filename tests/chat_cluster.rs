//! Chat nodes sharing one Redis (`sockit chat serve --redis`): real `redis-server`s on free
//! ports, real `sockit` processes, line clients over TCP. Each test skips, saying why, when
//! redis-server is missing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Bounds every wait here.
const DEADLINE: Duration = Duration::from_secs(20);
/// The node timeout the fault tests give their nodes (the default is 15 s).
const NODE_TIMEOUT_SECS: u64 = 3;
/// How long a node is kept stopped (SIGSTOP) while the others chat.
const PAUSE: Duration = Duration::from_secs(10);
/// Pace of the messages sent meanwhile.
const PAUSE_PACE: Duration = Duration::from_millis(100);
/// Slowest delivery between two running nodes while a third is stopped.
const PAUSED_DELIVERY_MAX: Duration = Duration::from_secs(2);

fn have_redis(test: &str) -> bool {
    common::have("redis-server", test)
}

/// A redis-server of the test's own, killed (SIGKILL, by pid) when dropped.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Whether something answers PING (or asks for a password) on `port`.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf.starts_with(b"+PONG") || buf.starts_with(b"-NOAUTH")))
}

impl Redis {
    fn start(dir: &Path, args: &[&str]) -> Redis {
        for _ in 0..5 {
            let port = free_port();
            if let Some(redis) = Redis::start_on(port, dir, args) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts redis-server on `port`; `None` if it exited (the port was taken meanwhile).
    fn start_on(port: u16, dir: &Path, args: &[&str]) -> Option<Redis> {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if answers(port) {
                return Some(Redis {
                    child,
                    port,
                    dir: dir.to_owned(),
                    args: args.iter().map(|a| (*a).to_owned()).collect(),
                });
            }
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILLs it; returns what restarts it on the same port and directory.
    fn kill(mut self) -> (u16, PathBuf, Vec<String>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.port, self.dir.clone(), std::mem::take(&mut self.args))
    }
}

/// A `sockit chat serve --redis` node with a line port, killed when dropped.
struct Node {
    child: Child,
    line: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_command(redis_url: &str, extra: &[&str]) -> Command {
    let mut cmd = common::sockit();
    cmd.args(["chat", "serve", "--listen", "127.0.0.1:0"])
        .args([
            "--line-listen",
            "127.0.0.1:0",
            "--rate",
            "10000",
            "--burst",
            "10000",
        ])
        .args(["--redis", redis_url])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Node {
    fn start(redis_url: &str, extra: &[&str]) -> Node {
        let mut child = node_command(redis_url, extra)
            .spawn()
            .expect("spawn sockit");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut seen = String::new();
        let line = loop {
            let mut text = String::new();
            let n = stderr.read_line(&mut text).expect("read stderr");
            assert!(n > 0, "the node exited before listening:\n{seen}");
            seen.push_str(&text);
            if let Some(rest) = text.split("chat line protocol listening on ").nth(1) {
                break rest.split_whitespace().next().expect("addr").to_owned();
            }
        };
        let log = Arc::new(Mutex::new(seen));
        let sink = log.clone();
        thread::spawn(move || {
            for text in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&text);
            }
        });
        Node {
            child,
            line,
            stderr: log,
        }
    }

    /// A node run by `sockit serve --config` with one chat entry whose `redis` key is `url`.
    fn serve(url: &str, dir: &Path) -> Node {
        let config = dir.join(format!("serve-{}.toml", free_port()));
        let text = format!(
            "[[service]]\nkind = \"chat\"\nlisten = \"127.0.0.1:0\"\n\
             line-listen = \"127.0.0.1:0\"\nredis = \"{url}\"\n"
        );
        std::fs::write(&config, text).expect("write config");
        let mut child = common::sockit()
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockit serve");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for text in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&text);
            }
        });
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut seen = String::new();
        let mut line = None;
        for text in stdout.lines().map_while(Result::ok) {
            seen.push_str(&text);
            let words: Vec<&str> = text.split_whitespace().collect();
            if let ["chat", "line", addr] = words[..] {
                line = Some(addr.to_owned());
                break;
            }
        }
        let line = line.unwrap_or_else(|| panic!("no chat line port in the banner: {seen}"));
        Node {
            child,
            line,
            stderr: log,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn join(&self, nick: &str) -> Client {
        Client::join(&self.line, nick).unwrap_or_else(|refusal| {
            panic!(
                "{nick}: {refusal}; node log:\n{}",
                self.stderr.lock().unwrap()
            )
        })
    }
}

/// A line client: a reader thread keeps every line it gets.
#[derive(Debug)]
struct Client {
    stream: TcpStream,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (reader, sink) = (stream.try_clone().expect("clone"), lines.clone());
        thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Client { stream, lines }
    }

    /// Connects and takes `nick`; `Err` with the refusal if the server says it is taken.
    fn join(addr: &str, nick: &str) -> Result<Client, String> {
        let mut client = Client::connect(addr);
        client.send(nick);
        let ready = format!("*** you are {nick} in ");
        let line = client.wait_line(|l| l.starts_with(&ready) || l.starts_with("! "));
        if line.starts_with("! ") {
            return Err(line);
        }
        Ok(client)
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("send");
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (bounded) for a line matching `want`, and returns it.
    fn wait_line(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.snapshot().into_iter().find(|l| want(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such line in time; got {:#?}",
                self.snapshot()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for `line` exactly.
    fn wait_for(&self, line: &str) {
        self.wait_line(|l| l == line);
    }

    /// Asks `/who` until its answer satisfies `want`; returns it.
    fn who_until(&mut self, want: impl Fn(&str) -> bool, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let before = self.snapshot().len();
            self.send("/who");
            let deadline_one = Instant::now() + DEADLINE;
            let answer = loop {
                let got = self.snapshot();
                if let Some(l) = got[before..].iter().find(|l| l.starts_with("*** in #")) {
                    break l.clone();
                }
                assert!(Instant::now() < deadline_one, "no /who answer");
                thread::sleep(Duration::from_millis(10));
            };
            if want(&answer) {
                return answer;
            }
            assert!(Instant::now() < deadline, "/who never satisfied: {answer}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Lines `<nick> nick:N` a client got, per sender, in the order received.
fn numbered(lines: &[String], senders: &[&str]) -> Vec<Vec<u64>> {
    senders
        .iter()
        .map(|s| {
            let prefix = format!("<{s}> {s}:");
            lines
                .iter()
                .filter_map(|l| l.strip_prefix(&prefix)?.parse().ok())
                .collect()
        })
        .collect()
}

#[test]
fn users_on_three_nodes_share_rooms_private_messages_who_and_history() {
    if !have_redis("users_on_three_nodes_share_rooms_private_messages_who_and_history") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path(), &[]);
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&redis.url(), &[])).collect();
    let mut alice = nodes[0].join("alice");
    alice.send("said before anyone else came");
    alice.wait_for("<alice> said before anyone else came");
    let mut bob = nodes[1].join("bob");
    bob.wait_for("<alice> said before anyone else came");
    alice.wait_for("*** bob joined #lobby");
    let mut carol = nodes[2].join("carol");
    carol.wait_for("<alice> said before anyone else came");
    bob.send("hello from node two");
    for c in [&alice, &carol] {
        c.wait_for("<bob> hello from node two");
    }
    let who = carol.who_until(|w| w.contains("alice") && w.contains("bob"), DEADLINE);
    assert!(who.contains("carol"), "{who}");
    carol.send("/rooms");
    carol.wait_for("*** rooms: #lobby (3)");

    carol.send("/msg ALICE psst, from node three");
    alice.wait_for("*carol -> alice* psst, from node three");
    carol.wait_for("*carol -> alice* psst, from node three");
    assert!(!bob.snapshot().iter().any(|l| l.contains("psst")));

    bob.send("/join dev");
    alice.wait_for("*** bob left #lobby");
    bob.send("only in dev");
    alice.send("/rooms");
    alice.wait_for("*** rooms: #dev (1), #lobby (2)");
    bob.send("/nick robert");
    bob.wait_for("*** you are robert in #dev");
    let taken = Client::join(&nodes[0].line, "R0BERT").expect_err("robert is taken");
    assert!(
        taken.contains("is taken (too close to robert); try R0BERT_2"),
        "{taken}"
    );

    // A node restarted (here: a new one) has the rooms' history from Redis.
    drop(nodes);
    let fresh = Node::start(&redis.url(), &[]);
    let dave = fresh.join("dave");
    dave.wait_for("<bob> hello from node two");
    let history = dave.snapshot();
    let first = history
        .iter()
        .position(|l| l == "<alice> said before anyone else came");
    let second = history
        .iter()
        .position(|l| l == "<bob> hello from node two");
    assert!(first < second && first.is_some(), "{history:#?}");
    assert!(!history.iter().any(|l| l.contains("only in dev")));
}

#[test]
fn a_serve_config_chat_entry_joins_the_cluster_with_its_redis_key() {
    if !have_redis("a_serve_config_chat_entry_joins_the_cluster_with_its_redis_key") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path(), &[]);
    let served = Node::serve(&redis.url(), dir.path());
    let alone = Node::start(&redis.url(), &[]);
    let mut alice = served.join("alice");
    let bob = alone.join("bob");
    alice.who_until(|w| w.contains("bob"), DEADLINE);
    alice.send("from a serve set");
    bob.wait_for("<alice> from a serve set");
}

#[test]
fn each_sender_on_each_node_is_delivered_once_in_order_everywhere() {
    if !have_redis("each_sender_on_each_node_is_delivered_once_in_order_everywhere") {
        return;
    }
    const COUNT: u64 = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path(), &[]);
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&redis.url(), &[])).collect();
    let senders = ["s0", "s1", "s2"];
    let mut sending: Vec<Client> = nodes.iter().zip(senders).map(|(n, s)| n.join(s)).collect();
    let mut receivers: Vec<Client> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| n.join(&format!("r{i}")))
        .collect();
    for r in &mut receivers {
        for s in senders {
            r.who_until(|w| w.contains(s), DEADLINE);
        }
    }
    for i in 1..=COUNT {
        for (client, nick) in sending.iter_mut().zip(senders) {
            client.send(&format!("{nick}:{i}"));
        }
    }
    let want: Vec<u64> = (1..=COUNT).collect();
    for r in &receivers {
        for s in senders {
            r.wait_for(&format!("<{s}> {s}:{COUNT}"));
        }
        for (per_sender, s) in numbered(&r.snapshot(), &senders).iter().zip(senders) {
            assert_eq!(per_sender, &want, "what a receiver got from {s}");
        }
    }
}

#[test]
fn the_same_nick_claimed_on_two_nodes_at_once_goes_to_exactly_one() {
    if !have_redis("the_same_nick_claimed_on_two_nodes_at_once_goes_to_exactly_one") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path(), &[]);
    let nodes: Vec<Node> = (0..2).map(|_| Node::start(&redis.url(), &[])).collect();
    for round in 0..5 {
        let nick = format!("zed{round}");
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let tries: Vec<_> = nodes
            .iter()
            .map(|n| {
                let (addr, nick, barrier) = (n.line.clone(), nick.clone(), barrier.clone());
                thread::spawn(move || {
                    let mut client = Client::connect(&addr);
                    client.wait_line(|l| l.contains("send your nick"));
                    barrier.wait();
                    client.send(&nick);
                    let ready = format!("*** you are {nick} in ");
                    let line = client.wait_line(|l| l.starts_with(&ready) || l.starts_with("! "));
                    (line, client)
                })
            })
            .collect();
        let results: Vec<(String, Client)> =
            tries.into_iter().map(|t| t.join().expect("try")).collect();
        let won = results
            .iter()
            .filter(|(l, _)| l.starts_with("*** you are"))
            .count();
        assert_eq!(
            won,
            1,
            "round {round}: {:?}",
            results.iter().map(|r| &r.0).collect::<Vec<_>>()
        );
        let lost = &results
            .iter()
            .find(|(l, _)| l.starts_with("! "))
            .expect("a loser")
            .0;
        assert!(lost.contains(&format!("nick {nick} is taken")), "{lost}");
        assert!(lost.contains(&format!("try {nick}_2")), "{lost}");
    }
}

#[test]
fn redis_killed_for_seconds_while_messages_flow_loses_and_repeats_nothing() {
    if !have_redis("redis_killed_for_seconds_while_messages_flow_loses_and_repeats_nothing") {
        return;
    }
    const COUNT: u64 = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(
        dir.path(),
        &["--appendonly", "yes", "--appendfsync", "always"],
    );
    let url = redis.url();
    let nodes: Vec<Node> = (0..2).map(|_| Node::start(&url, &[])).collect();
    let senders = ["s0", "s1"];
    let mut a = nodes[0].join("s0");
    let mut b = nodes[1].join("s1");
    a.who_until(|w| w.contains("s1"), DEADLINE);
    b.who_until(|w| w.contains("s0"), DEADLINE);
    let mut redis = Some(redis);
    let mut restarted = None;
    for i in 1..=COUNT {
        a.send(&format!("s0:{i}"));
        b.send(&format!("s1:{i}"));
        if i == COUNT / 3 {
            let (port, dir, args) = redis.take().expect("running").kill();
            a.wait_line(|l| l.starts_with("*** the link to the other chat nodes is down"));
            b.wait_line(|l| l.starts_with("*** the link to the other chat nodes is down"));
            restarted = Some((port, dir, args));
        }
        if i == 2 * COUNT / 3 {
            // The outage: about five seconds of messages queued on each node.
            let (port, dir, args) = restarted.take().expect("killed");
            thread::sleep(Duration::from_secs(5));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            redis = Some(Redis::start_on(port, &dir, &args).expect("redis restarts on its port"));
        }
        thread::sleep(Duration::from_millis(5));
    }
    let want: Vec<u64> = (1..=COUNT).collect();
    for c in [&a, &b] {
        c.wait_line(|l| l == "*** the link to the other chat nodes is back");
        for s in senders {
            c.wait_for(&format!("<{s}> {s}:{COUNT}"));
        }
        let lines = c.snapshot();
        for (per_sender, s) in numbered(&lines, &senders).iter().zip(senders) {
            assert_eq!(per_sender, &want, "what a client got from {s}");
        }
        let downs = lines
            .iter()
            .filter(|l| l.contains("link to the other chat nodes is down"))
            .count();
        assert_eq!(downs, 1, "told once: {lines:#?}");
    }
}

#[test]
fn a_killed_node_leaves_who_and_frees_its_nicks_within_the_timeout() {
    if !have_redis("a_killed_node_leaves_who_and_frees_its_nicks_within_the_timeout") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path(), &[]);
    let timeout = format!("{NODE_TIMEOUT_SECS}s");
    let extra = ["--redis-node-timeout", timeout.as_str()];
    let doomed = Node::start(&redis.url(), &extra);
    let survivor = Node::start(&redis.url(), &extra);
    let _bob = doomed.join("bob");
    let mut alice = survivor.join("alice");
    alice.who_until(|w| w.contains("bob"), DEADLINE);
    let mut doomed = doomed;
    let _ = doomed.child.kill(); // SIGKILL: no goodbye reaches Redis
    let _ = doomed.child.wait();
    let killed = Instant::now();
    let limit = Duration::from_secs(NODE_TIMEOUT_SECS + NODE_TIMEOUT_SECS / 3 + 2);
    alice.who_until(|w| !w.contains("bob"), limit);
    alice.wait_for("*** bob left #lobby (node lost)");
    let deadline = killed + limit;
    loop {
        match Client::join(&survivor.line, "bob") {
            Ok(_) => break,
            Err(refusal) => {
                assert!(
                    Instant::now() < deadline,
                    "bob's nick never freed: {refusal}"
                );
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert!(killed.elapsed() <= limit, "took {:?}", killed.elapsed());
}

#[test]
fn a_node_stopped_cleanly_frees_its_nicks_at_once() {
    if !have_redis("a_node_stopped_cleanly_frees_its_nicks_at_once") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path(), &[]);
    // The default 15 s node timeout: only a clean leave frees the nick this soon.
    let mut stopping = Node::start(&redis.url(), &[]);
    let staying = Node::start(&redis.url(), &[]);
    let _bob = stopping.join("bob");
    let mut alice = staying.join("alice");
    alice.who_until(|w| w.contains("bob"), DEADLINE);
    kill(stopping.pid(), Signal::SIGTERM).expect("SIGTERM");
    let _ = stopping.child.wait();
    let stopped = Instant::now();
    alice.wait_line(|l| l.starts_with("*** bob left #lobby ("));
    let limit = Duration::from_secs(5);
    loop {
        match Client::join(&staying.line, "bob") {
            Ok(_) => break,
            Err(refusal) => {
                assert!(
                    stopped.elapsed() < limit,
                    "bob's nick still held: {refusal}"
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_paused_node_does_not_stall_the_others() {
    if !have_redis("a_paused_node_does_not_stall_the_others") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path(), &[]);
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&redis.url(), &[])).collect();
    let mut alice = nodes[0].join("alice");
    let bob = nodes[1].join("bob");
    let carol = nodes[2].join("carol");
    alice.who_until(|w| w.contains("bob") && w.contains("carol"), DEADLINE);
    kill(nodes[2].pid(), Signal::SIGSTOP).expect("SIGSTOP");
    let paused = Instant::now();
    // Node three stays stopped for PAUSE (the 10 s, longer than the node timeout)
    // while alice sends at a steady pace: each message still reaches bob, one after the
    // other, so the pair keeps its rate (the pacing is the load's, not a wait for anything).
    let mut sent = 0;
    while paused.elapsed() < PAUSE {
        sent += 1;
        let line = format!("during:{sent}");
        let one = Instant::now();
        alice.send(&line);
        bob.wait_for(&format!("<alice> {line}"));
        assert!(
            one.elapsed() < PAUSED_DELIVERY_MAX,
            "message {sent} took {:?} with a node stopped",
            one.elapsed()
        );
        thread::sleep(PAUSE_PACE);
    }
    kill(nodes[2].pid(), Signal::SIGCONT).expect("SIGCONT");
    carol.wait_for(&format!("<alice> during:{sent}"));
    let got: Vec<String> = carol
        .snapshot()
        .into_iter()
        .filter(|l| l.starts_with("<alice> during:"))
        .collect();
    assert_eq!(got.len(), sent, "{got:#?}");
}

#[test]
fn a_redis_password_works_from_a_file_and_a_wrong_one_is_a_clear_error() {
    if !have_redis("a_redis_password_works_from_a_file_and_a_wrong_one_is_a_clear_error") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(dir.path(), &["--requirepass", "right-horse-battery"]);
    let file = dir.path().join("redis.pass");
    std::fs::write(&file, "right-horse-battery\n").expect("write");
    let open_to_all = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(&file, open_to_all).expect("chmod");
    let file = file.to_str().expect("utf-8");
    let refused = node_command(&redis.url(), &["--redis-password-file", file])
        .output()
        .expect("run");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{why}");
    assert!(why.contains("chmod 600"), "{why}");
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let one = Node::start(&redis.url(), &["--redis-password-file", file]);
    let url = format!("redis://:right-horse-battery@127.0.0.1:{}/", redis.port);
    let two = Node::start(&url, &[]);
    let alice = one.join("alice");
    let mut bob = two.join("bob");
    bob.send("over the password link");
    alice.wait_for("<bob> over the password link");

    let wrong = format!("redis://:wrong-staple@127.0.0.1:{}/", redis.port);
    let out = node_command(&wrong, &[])
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the password"), "{stderr}");
    assert!(
        !stderr.contains("wrong-staple"),
        "the password is shown: {stderr}"
    );
    assert!(stderr.contains("redis://:***@127.0.0.1"), "{stderr}");
    let missing = node_command(&redis.url(), &[]).output().expect("run");
    assert_eq!(missing.status.code(), Some(1));
}
