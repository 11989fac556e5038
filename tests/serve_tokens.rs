//! One token rule for every service, through the built binary: the README's `sockit serve`
//! flow (one generated token, then every client with `SOCKIT_TOKEN` reaches every service),
//! the token never reaching a remote command, and short tokens refused beyond loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{address_of, read_banner, run_with_input, sockit, token_file, Proc};

#[test]
fn the_readme_serve_flow_reaches_every_service_with_the_printed_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    let files_dir = dir.path().join("shared");
    std::fs::write(
        &config,
        format!(
            "[[service]]\nkind = \"exec\"\nlisten = \"127.0.0.1:0\"\n\n\
             [[service]]\nkind = \"files\"\nlisten = \"127.0.0.1:0\"\ndir = {:?}\n\n\
             [[service]]\nkind = \"chat\"\nlisten = \"127.0.0.1:0\"\n",
            files_dir.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = sockit();
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env_remove("SOCKIT_TOKEN")
        .stdout(Stdio::piped());
    let mut server = Proc::spawn(cmd);
    let mut stdout = BufReader::new(server.child.stdout.take().unwrap());
    let banner = read_banner(&mut stdout);
    let tokens: Vec<_> = banner
        .iter()
        .filter(|l| l.trim_start().starts_with("token: "))
        .collect();
    assert_eq!(tokens.len(), 3, "one token line per service: {banner:?}");
    let token = tokens[0].split_whitespace().nth(1).unwrap().to_owned();
    assert!(tokens[0].contains("generated"), "{banner:?}");
    assert!(
        tokens[1..].iter().all(|l| l.contains("the same as above")),
        "printed once: {banner:?}"
    );

    // As the README says: export SOCKIT_TOKEN, then every client works.
    let exec = address_of(&banner, "exec", "tcp");
    let files = address_of(&banner, "files", "tcp");
    let chat = address_of(&banner, "chat", "tcp");
    let upload = dir.path().join("notes.txt");
    std::fs::write(&upload, b"one token for the set\n").unwrap();
    // (The token reaches the client through `env`, as an exported variable would; the
    // helper drops an inherited SOCKIT_TOKEN from the command it runs.)
    let client = |args: &[&str], input: &[u8]| {
        let mut cmd = std::process::Command::new("env");
        cmd.arg(format!("SOCKIT_TOKEN={token}"))
            .arg(env!("CARGO_BIN_EXE_sockit"))
            .args(args);
        let (code, out, err) = run_with_input(cmd, input);
        assert_eq!(code, 0, "{args:?}: {err}");
        String::from_utf8_lossy(&out).into_owned()
    };
    assert_eq!(
        client(&["exec", "run", &exec, "--", "echo", "ran"], b""),
        "ran\n"
    );
    client(&["put", &files, upload.to_str().unwrap()], b"");
    assert_eq!(
        std::fs::read(files_dir.join("notes.txt")).unwrap(),
        b"one token for the set\n"
    );
    assert!(client(&["ls", &files], b"").contains("notes.txt"));
    client(&["chat", "join", &chat, "--nick", "reader"], b"hello\n");
    server.terminate();
}

#[test]
fn the_servers_token_never_reaches_the_commands_it_runs() {
    let token = "a-server-token-from-the-environment";
    let mut cmd = sockit();
    cmd.args(["exec", "serve", "--listen", "127.0.0.1:0"])
        .env("SOCKIT_TOKEN", token)
        .stdout(Stdio::null());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();
    let file = token_file(token);
    let out = sockit()
        .args(["exec", "run", &addr, "--token-file"])
        .arg(file.path())
        .args(["--", "env"])
        .env_remove("SOCKIT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let env = String::from_utf8_lossy(&out.stdout);
    assert!(
        env.contains("SOCKIT_REMOTE_ADDR="),
        "the command ran: {env}"
    );
    assert!(!env.contains(token), "the token leaked: {env}");
    server.terminate();
}

#[test]
fn a_short_token_is_refused_beyond_loopback_but_not_on_it() {
    let short = token_file("short");
    for (service, listen) in [
        (&["exec", "serve"][..], "0.0.0.0:0"),
        (&["files", "serve", "--dir", "."][..], "0.0.0.0:0"),
        (&["chat", "serve"][..], "0.0.0.0:0"),
    ] {
        let out = sockit()
            .args(service)
            .args(["--listen", listen, "--token-file"])
            .arg(short.path())
            .env_remove("SOCKIT_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{service:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("too short"), "{service:?}: {err}");
    }
    // On loopback a short token is the operator's business.
    let mut cmd = sockit();
    cmd.args(["exec", "serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(short.path())
        .stdout(Stdio::null());
    let mut server = Proc::spawn(cmd);
    server.listening_addr();
    server.terminate();
}

#[test]
fn a_file_server_beyond_loopback_without_a_token_generates_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sockit();
    cmd.args(["files", "serve", "--listen", "0.0.0.0:0", "--dir"])
        .arg(dir.path())
        .env_remove("SOCKIT_TOKEN")
        .stdout(Stdio::piped());
    let mut server = Proc::spawn(cmd);
    server.listening_addr();
    let mut stdout = BufReader::new(server.child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("token: "), "printed for clients: {line}");
    server.terminate();
}
