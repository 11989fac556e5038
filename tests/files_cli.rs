//! The file commands through the built binary: put/get/ls/send/recv and their exit codes,
//! collision policies, the loopback rule, and a disk that fills up (a file-size rlimit).

mod common;

use std::fs;
use std::path::Path;

use common::{age_by, have, run_with_input, snapshot, sockit, Proc};

/// Starts `sockit files serve --dir DIR` on port 0 with `extra` flags.
fn files_serve(dir: &Path, extra: &[&str]) -> (Proc, String) {
    let mut cmd = sockit();
    cmd.args(["files", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .args(extra)
        .env_remove("SOCKIT_TOKEN");
    let mut proc = Proc::spawn(cmd);
    let addr = proc.listening_addr();
    (proc, addr)
}

/// Runs `sockit ARGS...`; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let mut cmd = sockit();
    cmd.args(args);
    let (code, out, err) = run_with_input(cmd, b"");
    (code, String::from_utf8_lossy(&out).into_owned(), err)
}

/// Stderr is not a terminal here: only lines, no bar redrawn with `\r` or escapes.
fn assert_no_progress_bar(stderr: &str) {
    assert!(!stderr.contains(['\r', '\x1b']), "{stderr:?}");
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn put_ls_and_get_through_the_binary_exit_0_and_1_on_a_refusal() {
    let (src, root, out) = (tempdir(), tempdir(), tempdir());
    fs::create_dir(src.path().join("docs")).unwrap();
    fs::write(src.path().join("docs/a.txt"), b"alpha").unwrap();
    fs::write(src.path().join("b.txt"), b"beta").unwrap();
    let (_server, addr) = files_serve(root.path(), &[]);

    let docs = src.path().join("docs");
    let b = src.path().join("b.txt");
    let (code, _, err) = run(&["put", &addr, path_str(&docs), path_str(&b)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("put: 2 files (9 bytes) and 1 directory done;")
            && err.contains("verified blake3"),
        "{err}"
    );
    assert_no_progress_bar(&err);

    let (code, listing, err) = run(&["ls", &addr]);
    assert_eq!(code, 0, "{err}");
    assert!(
        listing.contains("b.txt") && listing.contains("docs/"),
        "{listing}"
    );

    let o = path_str(out.path());
    let (code, _, err) = run(&["get", &addr, "docs", "b.txt", "-o", o]);
    assert_eq!(code, 0, "{err}");
    assert_no_progress_bar(&err);
    assert_eq!(fs::read(out.path().join("docs/a.txt")).unwrap(), b"alpha");

    // Local bytes other than the server's under the name: refused, or renamed on request.
    fs::write(out.path().join("b.txt"), b"BETA").unwrap();
    let (code, _, err) = run(&["get", &addr, "b.txt", "-o", o]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("b.txt") && err.contains("exists"), "{err}");
    let (code, _, err) = run(&["get", &addr, "b.txt", "-o", o, "--rename"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(out.path().join("b (1).txt")).unwrap(), b"beta");

    fs::write(&b, b"BETA").unwrap();
    let (code, _, err) = run(&["put", &addr, path_str(&b)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("b.txt") && err.contains("exists"), "{err}");
    let (code, _, err) = run(&["ls", &addr, "nowhere"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn the_server_policy_flags_overwrite_or_rename() {
    let src = tempdir();
    let file = src.path().join("p.txt");
    for (flag, expect) in [
        ("--overwrite", vec!["p.txt"]),
        ("--rename", vec!["p (1).txt", "p.txt"]),
    ] {
        let root = tempdir();
        let (_server, addr) = files_serve(root.path(), &[flag]);
        fs::write(&file, b"one").unwrap();
        assert_eq!(run(&["put", &addr, path_str(&file)]).0, 0);
        fs::write(&file, b"two").unwrap();
        assert_eq!(run(&["put", &addr, path_str(&file)]).0, 0, "{flag}");
        let names: Vec<_> = snapshot(root.path()).into_keys().collect();
        let expect: Vec<_> = expect.iter().map(std::path::PathBuf::from).collect();
        assert_eq!(names, expect, "{flag}");
        assert_eq!(
            fs::read(root.path().join("p.txt")).unwrap(),
            match flag {
                "--overwrite" => b"two",
                _ => b"one",
            }
        );
    }
}

#[test]
fn put_and_get_say_the_name_the_rename_policy_stored_under() {
    let (src, root, out) = (tempdir(), tempdir(), tempdir());
    let file = src.path().join("p.txt");
    let (_server, addr) = files_serve(root.path(), &["--rename"]);
    fs::write(&file, b"one").unwrap();
    let (code, _, err) = run(&["put", &addr, path_str(&file)]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("stored as"), "{err}");
    fs::write(&file, b"two").unwrap();
    let (code, _, err) = run(&["put", &addr, path_str(&file)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("put: p.txt stored as p (1).txt"), "{err}");

    let o = path_str(out.path());
    fs::write(out.path().join("p.txt"), b"mine").unwrap();
    let (code, _, err) = run(&["get", &addr, "p.txt", "-o", o, "--rename"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("get: p.txt stored as p (1).txt"), "{err}");
    assert_eq!(fs::read(out.path().join("p (1).txt")).unwrap(), b"one");
}

#[test]
fn a_second_identical_put_exits_0_and_a_failed_file_is_one_line() {
    let (src, root) = (tempdir(), tempdir());
    let file = src.path().join("q.txt");
    fs::write(&file, b"same").unwrap();
    let (_server, addr) = files_serve(root.path(), &[]);
    assert_eq!(run(&["put", &addr, path_str(&file)]).0, 0);
    let (code, _, err) = run(&["put", &addr, path_str(&file)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("put: 1 file (4 bytes, 1 unchanged)"), "{err}");

    fs::write(&file, b"diff").unwrap();
    let (code, _, err) = run(&["put", &addr, path_str(&file)]);
    assert_eq!(code, 1, "{err}");
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(&format!("sockit: put: {}: already exists", path_str(&file))),
        "{err}"
    );
    assert!(!lines[0].contains("(exists)"), "no wire code: {err}");
    assert_eq!(fs::read(root.path().join("q.txt")).unwrap(), b"same");
}

#[test]
fn send_and_recv_move_files_once_and_report_through_the_exit_status() {
    let (src, dest) = (tempdir(), tempdir());
    let file = src.path().join("hello.txt");
    fs::write(&file, b"hello").unwrap();
    for (expect_send, expect_recv) in [(0, 0), (1, 1)] {
        let mut cmd = sockit();
        cmd.args([
            "recv",
            "--listen",
            "127.0.0.1:0",
            "--dir",
            path_str(dest.path()),
        ])
        .env_remove("SOCKIT_TOKEN");
        let mut recv = Proc::spawn(cmd);
        let addr = recv.listening_addr();
        // The second round sends other bytes under a name the directory already holds:
        // refused on both ends.
        if expect_send == 1 {
            fs::write(&file, b"HELLO").unwrap();
        }
        let (code, _, err) = run(&["send", &addr, path_str(&file)]);
        assert_eq!(code, expect_send, "{err}");
        assert_no_progress_bar(&err);
        assert_eq!(recv.wait_exit().code(), Some(expect_recv));
        assert_eq!(fs::read(dest.path().join("hello.txt")).unwrap(), b"hello");
    }
}

#[test]
fn a_second_sender_to_a_busy_recv_is_told_it_is_busy_while_the_first_goes_on() {
    use sockit::service::files::{ClientMessage, ServerMessage};
    let (src, dest) = (tempdir(), tempdir());
    let file = src.path().join("late.txt");
    fs::write(&file, b"late").unwrap();
    let mut cmd = sockit();
    cmd.args(["recv", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dest.path())
        .env_remove("SOCKIT_TOKEN");
    let mut recv = Proc::spawn(cmd);
    let addr = recv.listening_addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The first sender: authenticated and holding its session open.
    let mut first = runtime.block_on(common::raw_files(&addr.parse().unwrap()));

    let (code, _, err) = run(&["send", &addr, path_str(&file)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the receiver is busy"), "{err}");
    assert!(!dest.path().join("late.txt").exists());

    // The first sender is still served, and recv ends with its session.
    let stored = runtime.block_on(async {
        let mkdir = ClientMessage::Mkdir {
            path: "d".into(),
            mode: 0o755,
        };
        first.write_frame(&mkdir, &[]).await.unwrap();
        first.read_frame::<ServerMessage>().await.unwrap()
    });
    assert!(
        matches!(stored, Some(ServerMessage::Stored { .. })),
        "{stored:?}"
    );
    drop(first);
    assert_eq!(recv.wait_exit().code(), Some(0));
    assert!(dest.path().join("d").is_dir());
}

#[test]
fn recv_off_a_terminal_prints_one_line_per_stored_file_with_its_size() {
    let (src, dest) = (tempdir(), tempdir());
    let (a, b) = (src.path().join("a.txt"), src.path().join("b.bin"));
    fs::write(&a, b"alpha").unwrap();
    fs::write(&b, vec![9u8; 70_000]).unwrap();
    let d = src.path().join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("c.txt"), b"c").unwrap();
    let mut cmd = sockit();
    cmd.args(["recv", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dest.path())
        .env_remove("SOCKIT_TOKEN")
        .stdout(std::process::Stdio::null());
    let mut recv = Proc::spawn(cmd);
    let addr = recv.listening_addr();
    let (code, _, err) = run(&["send", &addr, path_str(&a), path_str(&b), path_str(&d)]);
    assert_eq!(code, 0, "{err}");
    let mut stderr = String::new();
    let lines = recv.stderr.take().unwrap();
    for line in std::io::BufRead::lines(lines) {
        let line = line.unwrap();
        stderr.push_str(&line);
        stderr.push('\n');
    }
    assert_eq!(recv.wait_exit().code(), Some(0), "{stderr}");
    assert_no_progress_bar(&stderr);
    for (name, size) in [("a.txt", 5), ("b.bin", 70_000)] {
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("recv: stored {name} ")))
            .unwrap_or_else(|| panic!("no line for {name}: {stderr}"));
        assert!(line.contains(&format!("({size} bytes)")), "{line}");
        assert!(line.contains("B/s); verified blake3"), "{line}");
    }
    // recv's own lines say it all: no info-level session log repeats them.
    assert!(!stderr.contains(" INFO "), "{stderr}");
    // The last line counts files and directories apart.
    assert!(
        stderr.contains("recv: 3 files and 1 directory stored, 70006 bytes"),
        "{stderr}"
    );
}

#[test]
fn partial_max_total_drops_the_oldest_partials_a_starting_server_finds_over_it() {
    let root = tempdir();
    let partials = root.path().join(".sockit-partial");
    fs::create_dir(&partials).unwrap();
    let old = partials.join("0123456789abcdef0123456789abcdef.part");
    let new = partials.join("fedcba9876543210fedcba9876543210.part");
    fs::write(&old, vec![1u8; 3000]).unwrap();
    fs::write(&new, vec![2u8; 3000]).unwrap();
    age_by(&old, std::time::Duration::from_secs(60));

    let (proc, _) = files_serve(root.path(), &[]);
    drop(proc);
    assert!(
        old.exists() && new.exists(),
        "6 kB is far within the default"
    );
    let (proc, _) = files_serve(root.path(), &["--partial-max-total", "4k"]);
    drop(proc);
    assert!(!old.exists(), "the least recently written went");
    assert!(new.exists(), "3000 bytes fit in 4k");
}

#[test]
fn partial_max_age_sets_how_long_a_starting_server_keeps_partial_files() {
    let root = tempdir();
    let partials = root.path().join(".sockit-partial");
    fs::create_dir(&partials).unwrap();
    let partial = partials.join("0123456789abcdef0123456789abcdef.part");
    fs::write(&partial, b"the first half of a file").unwrap();
    age_by(&partial, std::time::Duration::from_secs(2 * 3600));

    // The default (7 days) and `never` keep a partial untouched for two hours...
    for extra in [&[][..], &["--partial-max-age", "never"][..]] {
        let (proc, _) = files_serve(root.path(), extra);
        drop(proc);
        assert!(partial.exists(), "{extra:?} keeps it");
    }
    // ...an hour's limit removes it before the server listens.
    let (proc, _) = files_serve(root.path(), &["--partial-max-age", "1h"]);
    assert!(!partial.exists(), "--partial-max-age 1h removed it");
    drop(proc);

    let dir = path_str(root.path());
    let args = ["files", "serve", "--listen", "127.0.0.1:0", "--dir", dir];
    let (code, _, err) = run(&[&args[..], &["--partial-max-age", "0"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("use `never`"), "{err}");
}

#[test]
fn a_disk_that_fills_up_mid_file_is_a_clear_error_and_leaves_nothing() {
    if !have(
        "prlimit",
        "a_disk_that_fills_up_mid_file_is_a_clear_error_and_leaves_nothing",
    ) {
        return;
    }
    let (src, root) = (tempdir(), tempdir());
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--fsize=1048576", "--"])
        .arg(env!("CARGO_BIN_EXE_sockit"))
        .args(["files", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(root.path())
        .env_remove("SOCKIT_TOKEN");
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    let big = src.path().join("big.bin");
    fs::write(&big, vec![7u8; 3 * 1024 * 1024]).unwrap();
    let (code, _, err) = run(&["put", &addr, path_str(&big)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("big.bin") && err.contains("no space left"),
        "{err}"
    );
    assert!(snapshot(root.path()).is_empty());
    let partials = root.path().join(".sockit-partial");
    let leftover: u64 = fs::read_dir(&partials)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(leftover, 0, "the partial data is removed");
    let small = src.path().join("small.txt");
    fs::write(&small, b"fits").unwrap();
    let (code, _, err) = run(&["put", &addr, path_str(&small)]);
    assert_eq!(code, 0, "the server survives: {err}");
    assert!(server.child.try_wait().unwrap().is_none());
}

#[test]
fn put_to_a_closed_port_exits_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let src = tempdir();
    let file = src.path().join("x");
    fs::write(&file, b"x").unwrap();
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) = run(&["put", &addr, path_str(&file)]);
    assert_eq!(code, 1, "{err}");
    // One line naming the address and the reason, each said once.
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("cannot connect").count(), 1, "{err}");
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn a_file_server_rooted_at_a_regular_file_says_it_is_not_a_directory() {
    let src = tempdir();
    let file = src.path().join("notes.txt");
    fs::write(&file, b"keep me").unwrap();
    let (code, _, err) = run(&[
        "files",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dir",
        path_str(&file),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"keep me");
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn sockit_serve_runs_a_file_service_from_its_config() {
    let (conf_dir, root, src) = (tempdir(), tempdir(), tempdir());
    let config = conf_dir.path().join("serve.toml");
    let toml = format!(
        "[[service]]\nkind = \"files\"\nlisten = \"127.0.0.1:0\"\ndir = {:?}\nrename = true\n",
        path_str(root.path())
    );
    fs::write(&config, toml).unwrap();
    let mut cmd = sockit();
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env_remove("SOCKIT_TOKEN")
        .stdout(std::process::Stdio::piped());
    let mut proc = Proc::spawn(cmd);
    let mut stdout = std::io::BufReader::new(proc.child.stdout.take().unwrap());
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut banner).unwrap();
    assert!(banner.starts_with("files"), "{banner}");
    let addr = banner.split_whitespace().last().unwrap().to_string();
    let file = src.path().join("s.txt");
    for content in ["served", "SERVED"] {
        fs::write(&file, content).unwrap();
        let (code, _, err) = run(&["put", &addr, path_str(&file)]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(fs::read(root.path().join("s (1).txt")).unwrap(), b"SERVED");
    assert_eq!(proc.terminate().code(), Some(0));
}

#[test]
fn a_dot_file_is_refused_with_the_flag_that_allows_it() {
    let (src, root) = (tempdir(), tempdir());
    let file = src.path().join(".bashrc");
    fs::write(&file, b"alias ls='rm -rf ~'\n").unwrap();
    let (mut server, addr) = files_serve(root.path(), &[]);
    let (code, _, err) = run(&["put", &addr, path_str(&file)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--allow-hidden-names"), "{err}");
    assert!(!root.path().join(".bashrc").exists());
    server.terminate();

    let (mut server, addr) = files_serve(root.path(), &["--allow-hidden-names"]);
    let (code, _, err) = run(&["put", &addr, path_str(&file)]);
    assert_eq!(code, 0, "{err}");
    assert!(root.path().join(".bashrc").exists());
    server.terminate();
}

/// Polls `what` until it holds or [`common::TEST_TIMEOUT`] passes.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + common::TEST_TIMEOUT;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Bytes in the partial files under `root`.
fn partial_bytes(root: &Path) -> u64 {
    fs::read_dir(root.join(".sockit-partial"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn ctrl_c_during_a_put_says_in_one_line_what_the_server_kept_and_a_rerun_resumes() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let (src, root) = (tempdir(), tempdir());
    let big = src.path().join("big.bin");
    let data = common::pattern(64 * 1024 * 1024, 5);
    fs::write(&big, &data).unwrap();
    let (server, addr) = files_serve(root.path(), &[]);
    let server_pid = Pid::from_raw(server.child.id() as i32);

    let mut put = sockit();
    put.args(["put", &addr, path_str(&big)])
        .env_remove("SOCKIT_TOKEN")
        .stdout(std::process::Stdio::null());
    let mut put = Proc::spawn(put);
    // Once the server holds some of it, freeze the server so the transfer is surely mid-body
    // when Ctrl-C comes (the client then blocks on a full socket).
    wait_until("the server holds part of the file", || {
        partial_bytes(root.path()) > 0
    });
    kill(server_pid, Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(put.child.id() as i32), Signal::SIGINT).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(put.stderr.as_mut().unwrap(), &mut err).unwrap();
    let status = put.wait_exit();
    kill(server_pid, Signal::SIGCONT).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("sockit: put: interrupted: big.bin was cut off after "),
        "{err}"
    );
    assert!(
        lines[0].contains("the server keeps what it received"),
        "{err}"
    );
    assert!(!root.path().join("big.bin").exists());

    // The server notices the cut and keeps the partial: the same put resumes from it.
    wait_until("the server settles the partial", || {
        let (code, _, err) = run(&["put", &addr, path_str(&big)]);
        assert!(code == 0 || err.contains("busy"), "{err}");
        code == 0
    });
    assert_eq!(fs::read(root.path().join("big.bin")).unwrap(), data);
}
