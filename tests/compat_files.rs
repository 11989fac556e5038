//! `recv --compat tutorial` and `send --compat tutorial`: files in the lessons' header format
//! (`struct.pack("i", len(header))`, `{"filename", "total_size", "hash"}`, the bytes), against
//! a lesson-style Python sender and receiver written here (issue 16 item 6).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{have, run_with_input, sockit, Proc};

/// A lesson-style sender: argv is HOST PORT then NAME:HASHKIND:TEXT triples, each sent as one
/// file (`md5`, `sha256` or a placeholder hash), all over one connection.
const SENDER: &str = r#"
import hashlib, json, socket, struct, sys
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
c.connect((sys.argv[1], int(sys.argv[2])))
for spec in sys.argv[3:]:
    name, kind, text = spec.split(":", 2)
    body = text.encode()
    if kind == "md5":
        digest = hashlib.md5(body).hexdigest()
    elif kind == "sha256":
        digest = hashlib.sha256(body).hexdigest()
    elif kind == "badmd5":
        digest = hashlib.md5(body + b"x").hexdigest()
    else:
        digest = "xasf123213123"
    header = json.dumps({"filename": name, "total_size": len(body), "hash": digest}).encode()
    c.send(struct.pack("i", len(header)))
    c.send(header)
    c.sendall(body)
c.close()
"#;

/// A lesson-style receiver: one connection; prints each file as a JSON line
/// (name, size, hash, and whether the body's SHA-256 matched).
const RECEIVER: &str = r#"
import hashlib, json, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(5)
print(s.getsockname()[1], flush=True)
conn, _ = s.accept()
def exactly(n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(min(1024, n - len(data)))
        if not chunk:
            return None
        data += chunk
    return data
while True:
    head = exactly(4)
    if head is None:
        break
    header = json.loads(exactly(struct.unpack("i", head)[0]).decode())
    body = exactly(header["total_size"])
    ok = hashlib.sha256(body).hexdigest() == header["hash"]
    print(json.dumps({"name": header["filename"], "size": len(body), "ok": ok}), flush=True)
"#;

fn python(test: &str) -> bool {
    have("python3", test)
}

#[test]
fn recv_compat_stores_a_lesson_style_upload_and_checks_md5_or_sha256() {
    if !python("recv_compat_stores_a_lesson_style_upload_and_checks_md5_or_sha256") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sockit();
    cmd.args([
        "recv",
        "--compat",
        "tutorial",
        "--listen",
        "127.0.0.1:0",
        "--dir",
    ])
    .arg(dir.path());
    let mut recv = Proc::spawn(cmd);
    let addr = recv.listening_addr();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut sender = Command::new("python3");
    sender.args(["-c", SENDER, host, port]).args([
        "a.txt:md5:alpha",
        "b.txt:sha256:beta",
        "c.txt:none:gamma",
        "d.txt:badmd5:delta",
        "../escape.txt:md5:no",
    ]);
    let (code, _, stderr) = run_with_input(sender, b"");
    assert_eq!(code, 0, "{stderr}");
    let stored_md5 = recv.wait_for_stderr("stored a.txt");
    assert!(stored_md5.contains("md5 verified"), "{stored_md5}");
    assert!(recv
        .wait_for_stderr("stored b.txt")
        .contains("sha256 verified"));
    assert!(recv.wait_for_stderr("stored c.txt").contains("not checked"));
    assert!(recv.wait_for_stderr("refused d.txt").contains("MD5"));
    recv.wait_for_stderr("refused ../escape.txt");
    let status = recv.wait_exit();
    assert_eq!(status.code(), Some(1), "a refused file makes recv fail");
    assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(dir.path().join("c.txt")).unwrap(), b"gamma");
    assert!(!dir.path().join("d.txt").exists());
    assert!(!dir.path().parent().unwrap().join("escape.txt").exists());
}

#[test]
fn send_compat_reaches_a_lesson_style_receiver_with_several_files() {
    if !python("send_compat_reaches_a_lesson_style_receiver_with_several_files") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let (one, two) = (src.path().join("one.txt"), src.path().join("two.bin"));
    std::fs::write(&one, b"first file\n").unwrap();
    std::fs::write(&two, vec![0xa5u8; 200_000]).unwrap();
    let mut cmd = Command::new("python3");
    cmd.args(["-c", RECEIVER]).stdout(Stdio::piped());
    let mut receiver = Proc::spawn(cmd);
    let mut lines = BufReader::new(receiver.child.stdout.take().unwrap()).lines();
    let port = lines.next().unwrap().unwrap();
    let mut send = sockit();
    send.args(["send", "--compat", "tutorial", &format!("127.0.0.1:{port}")])
        .args([&one, &two]);
    let (code, _, stderr) = run_with_input(send, b"");
    assert_eq!(code, 0, "{stderr}");
    let got: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0],
        serde_json::json!({"name": "one.txt", "size": 11, "ok": true})
    );
    assert_eq!(
        got[1],
        serde_json::json!({"name": "two.bin", "size": 200_000, "ok": true})
    );
}

#[test]
fn recv_compat_is_refused_beyond_loopback() {
    let out = sockit()
        .args(["recv", "--compat", "tutorial", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no authentication"), "{stderr}");
}

#[test]
fn recv_compat_ends_a_connection_with_a_broken_header_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sockit();
    cmd.args([
        "recv",
        "--compat",
        "tutorial",
        "--listen",
        "127.0.0.1:0",
        "--dir",
    ])
    .arg(dir.path());
    let mut recv = Proc::spawn(cmd);
    let addr = recv.listening_addr();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut conn, &(-5i32).to_ne_bytes()).unwrap();
    std::io::Write::write_all(&mut conn, b"{\"filename\": \"x\"}").unwrap();
    let line = recv.wait_for_stderr("connection ended");
    assert!(line.contains("bad file header"), "{line}");
    assert_eq!(recv.wait_exit().code(), Some(1));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
