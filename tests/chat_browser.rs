//! The chat in a real browser, as `sockit serve`'s default set offers it (the chat page on the
//! `http` entry, which carries the chat entry's rooms): two headless Chromium pages, a plain
//! TCP line client (as `nc`) and `sockit chat join` (stdin a pipe) in one room. Every message
//! reaches everyone, markup sent as a message shows as text, a taken nick is refused with a
//! suggestion, and after the server restarts the pages reconnect on their own. (The chat's
//! own `--web-listen` serves the same routes; tests/chat_web.rs covers it.)
//!
//! Needs `node`, `chromium` and `playwright-core` (see `common::browser`); says plainly that
//! it was skipped otherwise. Takes a screenshot, `chat.png`, in its temp dir, copied to
//! `$SOCKIT_CHAT_SCREENSHOT` when that is set.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::browser::browser_tools;
use common::{sockit, Proc};

/// Bounds each wait on the browser side: Chromium starts slowly on a busy machine.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// Markup a page must show as text, never as an element or a script.
const HOSTILE: &str = "<img src=x onerror=document.title='pwned'>";

const SCRIPT: &str = r#"
const { chromium } = require('playwright-core');
const readline = require('readline');
const [url, shot, executablePath, hostile] = process.argv.slice(2);
const TIMEOUT = 60000;
const input = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function waitLine(want) {
  for (;;) {
    const { value, done } = await input.next();
    if (done) throw new Error('stdin closed before ' + want);
    if (value.trim() === want) return;
  }
}
const logHas = (page, texts) => page.waitForFunction(
  (texts) => texts.every((t) => document.getElementById('log').textContent.includes(t)),
  texts, { timeout: TIMEOUT });
const countIn = (page, text) => page.evaluate((text) =>
  [...document.querySelectorAll('#log li')].filter((li) => li.textContent.includes(text)).length, text);
async function typeLine(page, text) {
  await page.focus('#line');
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}
async function pickNick(page, nick) {
  // Keyboard only: the nick field has focus on load; Enter submits.
  await page.keyboard.press('Control+A');
  await page.keyboard.type(nick);
  await page.keyboard.press('Enter');
}
(async () => {
  const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
  try {
    const a = await browser.newPage({ viewport: { width: 1000, height: 640 } });
    const b = await browser.newPage({ viewport: { width: 1000, height: 640 } });
    let dialogs = 0;
    for (const p of [a, b]) p.on('dialog', (d) => { dialogs += 1; d.dismiss(); });
    for (const p of [a, b]) {
      await p.goto(url);
      await p.waitForFunction(() => document.getElementById('status').textContent === 'connected',
        null, { timeout: TIMEOUT });
    }
    await pickNick(a, 'pageA');
    await a.waitForSelector('#line', { state: 'visible', timeout: TIMEOUT });
    // The same nick from the second page: refused, with a free one suggested.
    await pickNick(b, 'pagea');
    await b.waitForFunction(() => document.getElementById('login-error').textContent !== '',
      null, { timeout: TIMEOUT });
    const taken = await b.textContent('#login-error');
    await b.focus('#nick');
    await pickNick(b, 'pageB');
    await b.waitForSelector('#line', { state: 'visible', timeout: TIMEOUT });
    console.log('JOINED');
    await typeLine(a, 'hello from pageA');
    await typeLine(b, 'hello from pageB');
    await typeLine(a, hostile);
    const everything = ['hello from pageA', 'hello from pageB', 'hello from nc', 'hello from cli', hostile];
    await logHas(a, everything);
    await logHas(b, everything);
    const who = await b.textContent('#who');
    const rooms = await b.textContent('#rooms');
    console.log('SEEN');
    await waitLine('RESTARTED');
    // Each page sees its own join again once it is back.
    await a.waitForFunction(() => [...document.querySelectorAll('#log li')]
      .filter((li) => li.textContent.includes('pageA joined #lobby')).length >= 2, null, { timeout: TIMEOUT });
    await b.waitForFunction(() => [...document.querySelectorAll('#log li')]
      .filter((li) => li.textContent.includes('pageB joined #lobby')).length >= 2, null, { timeout: TIMEOUT });
    await typeLine(a, 'back after the restart');
    await logHas(b, ['back after the restart']);
    await b.waitForFunction(() => document.getElementById('who').textContent.includes('pageA'),
      null, { timeout: TIMEOUT });
    await b.screenshot({ path: shot });
    const markup = await Promise.all([a, b].map((p) => p.evaluate(() => ({
      images: document.querySelectorAll('#log img').length,
      title: document.title,
    }))));
    const shown = await Promise.all([a, b].map((p) => countIn(p, hostile)));
    const notices = await b.$$eval('#log li.notice', (xs) => xs.length);
    const status = await b.textContent('#status');
    const loginShown = await b.isVisible('#login');
    console.log(JSON.stringify({ dialogs, taken, who, rooms, markup, shown, notices, status, loginShown }));
  } finally {
    await browser.close();
  }
  process.exit(0); // stdin is still open; do not wait on it
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// Lines a reader produces, through a channel, so waits can be bounded.
fn lines_of(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; panics with what was seen otherwise.
fn wait_line(lines: &Receiver<String>, needle: &str, what: &str) -> String {
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("{what}: no line with {needle:?}; saw {seen:#?}"),
        }
    }
}

/// Waits until a line containing each of `needles` has come, in any order.
fn wait_all(lines: &Receiver<String>, needles: &[&str], what: &str) {
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let mut missing: Vec<&str> = needles.to_vec();
    let mut seen = Vec::new();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                missing.retain(|n| !line.contains(n));
                seen.push(line);
            }
            Err(_) => panic!("{what}: never saw {missing:?}; saw {seen:#?}"),
        }
    }
}

/// A child killed (and reaped) when the test ends, passing or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The three addresses `sockit serve` printed: the chat's framed and line ports, and the
/// http entry carrying the page.
struct Ports {
    framed: String,
    web: String,
    line: String,
}

/// `sockit serve` with the default set's chat and http entries, on `ports` (else free ones),
/// its config in `dir`.
fn start_server(dir: &std::path::Path, ports: Option<&Ports>) -> (Proc, Ports) {
    let (framed, web, line) = match ports {
        Some(p) => (p.framed.as_str(), p.web.as_str(), p.line.as_str()),
        None => ("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"),
    };
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[[service]]\nkind = \"chat\"\nlisten = \"{framed}\"\nline-listen = \"{line}\"\n\n\
             [[service]]\nkind = \"http\"\nlisten = \"{web}\"\ndir = {:?}\nchat = true\n",
            dir.display().to_string()
        ),
    )
    .expect("config");
    let mut cmd = sockit();
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env_remove("SOCKIT_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut server = Proc::spawn(cmd);
    let mut stdout = BufReader::new(server.child.stdout.take().expect("stdout"));
    let banner = common::read_banner(&mut stdout);
    // Whatever else it prints is read, so it never meets a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let ports = Ports {
        framed: common::address_of(&banner, "chat", "tcp"),
        web: common::address_of(&banner, "http", "tcp"),
        line: common::address_of(&banner, "chat", "line"),
    };
    (server, ports)
}

/// The `nc` of the test: a TCP line client.
fn line_client(addr: &str) -> (TcpStream, Receiver<String>) {
    let stream = TcpStream::connect(addr).expect("connect to the line port");
    let lines = lines_of(stream.try_clone().expect("clone"));
    (stream, lines)
}

fn chat_join(addr: &str) -> (Child, ChildStdin, Receiver<String>) {
    let mut child = sockit()
        .args(["chat", "join", addr, "--nick", "cli"])
        .env_remove("SOCKIT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chat join");
    let stdin = child.stdin.take().expect("stdin");
    let lines = lines_of(child.stdout.take().expect("stdout"));
    (child, stdin, lines)
}

#[test]
fn two_pages_a_line_client_and_chat_join_share_a_room_and_the_pages_survive_a_restart() {
    let test = "two_pages_a_line_client_and_chat_join_share_a_room_and_the_pages_survive_a_restart";
    let Some((browser, modules)) = browser_tools(test) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, ports) = start_server(dir.path(), None);
    let (mut nc, nc_lines) = line_client(&ports.line);
    nc.write_all(b"nc\n").expect("nick");
    wait_line(&nc_lines, "*** you are nc in #lobby", "nc");
    let (cli, mut cli_in, cli_lines) = chat_join(&ports.framed);
    let _cli = KillOnDrop(cli);
    wait_line(&nc_lines, "*** cli joined #lobby", "nc");

    let script = dir.path().join("chat.js");
    std::fs::write(&script, SCRIPT).expect("script");
    let shot = dir.path().join("chat.png");
    let mut node = KillOnDrop(
        Command::new("node")
            .arg(&script)
            .arg(format!("http://{}/chat/", ports.web))
            .arg(&shot)
            .arg(&browser)
            .arg(HOSTILE)
            .env("NODE_PATH", modules.join("node_modules"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node"),
    );
    let mut node_in = node.0.stdin.take().expect("stdin");
    let node_out = lines_of(node.0.stdout.take().expect("stdout"));
    wait_line(&node_out, "JOINED", "node");
    wait_line(&nc_lines, "*** pageB joined #lobby", "nc");
    nc.write_all(b"hello from nc\n").expect("say");
    cli_in.write_all(b"hello from cli\n").expect("say");
    let hostile = format!("<pageA> {HOSTILE}");
    let from_pages = [
        "<pageA> hello from pageA",
        "<pageB> hello from pageB",
        &hostile,
    ];
    let nc_wants = [&from_pages[..], &["<cli> hello from cli"]].concat();
    wait_all(&nc_lines, &nc_wants, "nc");
    let cli_wants = [&from_pages[..], &["<nc> hello from nc"]].concat();
    wait_all(&cli_lines, &cli_wants, "chat join");
    wait_line(&node_out, "SEEN", "node");

    // A restart: the pages reconnect by themselves; the line client and chat join end.
    assert!(server.terminate().success(), "the server stops cleanly");
    drop(server);
    let (server, _) = start_server(dir.path(), Some(&ports));
    node_in.write_all(b"RESTARTED\n").expect("tell node");
    let result = wait_line(&node_out, "{", "node");
    drop(node_in);
    let status = node.0.wait().expect("node exits");
    assert!(status.success(), "node failed: {result}");
    let seen: serde_json::Value = serde_json::from_str(&result).expect("JSON");
    assert_eq!(seen["dialogs"], 0, "a message ran a script: {seen}");
    for page in seen["markup"].as_array().expect("pages") {
        assert_eq!(page["images"], 0, "a message became an element: {seen}");
        assert_eq!(page["title"], "#lobby — sockit chat", "{seen}");
    }
    assert_eq!(seen["shown"], serde_json::json!([1, 1]), "{seen}");
    let taken = seen["taken"].as_str().expect("text");
    assert!(
        taken.starts_with("nick pagea is taken (too close to pageA); try "),
        "{taken}"
    );
    assert!(
        seen["who"]
            .as_str()
            .is_some_and(|w| w.contains("pageA") && w.contains("pageB")),
        "{seen}"
    );
    assert!(
        seen["rooms"].as_str().is_some_and(|r| r.contains("#lobby")),
        "{seen}"
    );
    assert!(seen["notices"].as_u64().is_some_and(|n| n > 0), "{seen}");
    assert_eq!(
        seen["loginShown"], false,
        "the nick form stays after joining: {seen}"
    );
    assert_eq!(seen["status"], "you are pageB in #lobby", "{seen}");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot"
    );
    println!("{test}: screenshot at {}", shot.display());
    if let Ok(copy) = std::env::var("SOCKIT_CHAT_SCREENSHOT") {
        let _ = std::fs::copy(&shot, copy);
    }
    drop(server);
}
