//! Exec's stdin flow control: a command that stops reading holds back the client's input,
//! never its signals, and the server holds no more than the window for it.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};

use common::{authenticated_exec as authenticated, start_exec, TEST_TIMEOUT};
use sockit::service::exec::{
    client_options, run, ClientMessage, ExecConfig, LocalIo, RemoteExit, RunRequest, ServerMessage,
    SignalName, STDIN_WINDOW_BYTES,
};
use sockit::stdio::Output;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

/// Stdin offered to a command that never reads it: far more than a pipe and the window.
const OFFERED_STDIN_BYTES: u64 = 8 * 1024 * 1024;

/// What the command's stdin pipe and the server's writer may take beyond the window.
const PIPE_SLACK_BYTES: u64 = 1024 * 1024;

/// Endless stdin that reports how much the client has read from it.
struct CountedStdin {
    read: watch::Sender<u64>,
}

impl AsyncRead for CountedStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining();
        buf.put_slice(&vec![b'x'; n]);
        self.read.send_modify(|total| *total += n as u64);
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn ctrl_c_reaches_a_command_that_never_reads_the_stdin_being_pushed_at_it() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let (read, mut read_so_far) = watch::channel(0u64);
    let (stdout, from_stdout) = tokio::io::duplex(64 * 1024);
    let (signals_tx, signals) = mpsc::channel(1);
    let request = RunRequest {
        argv: vec![
            "sh".into(),
            "-c".into(),
            // `sleep` starts before `ready`: a foreground `sleep` forked after it could take the
            // signal between fork and exec, and sh defers its trap until that sleep ends.
            // `wait` is interrupted by the trapped signal at once.
            "trap 'exit 42' INT; sleep 30 & echo ready; wait".into(),
        ],
        shell: false,
        pty: None,
    };
    let io = LocalIo {
        stdin: CountedStdin { read }.take(OFFERED_STDIN_BYTES),
        stdout: Output::new(stdout),
        stderr: tokio::io::sink(),
        signals,
        resizes: None,
    };
    let drive = async {
        let mut lines = BufReader::new(from_stdout).lines();
        let first = lines.next_line().await.unwrap();
        assert_eq!(first.as_deref(), Some("ready"), "the trap is set");
        // The client has filled the window: what it sends next waits for credit.
        read_so_far
            .wait_for(|n| *n >= STDIN_WINDOW_BYTES)
            .await
            .unwrap();
        let sent = *read_so_far.borrow();
        signals_tx.send(SignalName::Int).await.unwrap();
        while lines.next_line().await.unwrap().is_some() {}
        sent
    };
    let options = client_options(token.clone());
    let (outcome, sent) = timeout(TEST_TIMEOUT, async {
        tokio::join!(run(&server.addr, &options, &request, io), drive)
    })
    .await
    .expect("the signal gets through while stdin is still pending");
    let outcome = outcome.expect("an exit status");
    assert_eq!(outcome.exit, RemoteExit::Code(42));
    // Once the command is gone its closed stdin takes (drops) everything, so only what was
    // sent while it ran says whether the window held.
    assert!(
        sent <= STDIN_WINDOW_BYTES + PIPE_SLACK_BYTES,
        "the client sent {sent} bytes to a command that reads none"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn all_stdin_reaches_the_command_well_past_the_window() {
    const TOTAL: u64 = 3 * STDIN_WINDOW_BYTES + 12_345;
    let (server, token) = start_exec(ExecConfig::default()).await;
    let (read, _read_so_far) = watch::channel(0u64);
    let mut stdout = Vec::new();
    let (_signals_tx, signals) = mpsc::channel(1);
    let request = RunRequest {
        argv: vec!["wc".into(), "-c".into()],
        shell: false,
        pty: None,
    };
    let io = LocalIo {
        stdin: CountedStdin { read }.take(TOTAL),
        stdout: Output::new(&mut stdout),
        stderr: tokio::io::sink(),
        signals,
        resizes: None,
    };
    let outcome = timeout(
        TEST_TIMEOUT,
        run(&server.addr, &client_options(token.clone()), &request, io),
    )
    .await
    .expect("the run finishes in time")
    .expect("an exit status");
    assert_eq!(outcome.exit, RemoteExit::Code(0));
    assert_eq!(String::from_utf8_lossy(&stdout).trim(), TOTAL.to_string());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stdin_beyond_the_window_is_refused_and_the_next_client_is_served() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    let mut conn = authenticated(&server.addr, &token).await;
    let run_sleep = ClientMessage::Run {
        argv: vec!["sleep".into(), "30".into()],
        shell: false,
        pty: None,
    };
    conn.write_frame(&run_sleep, &[]).await.unwrap();
    let body = vec![0u8; usize::try_from(STDIN_WINDOW_BYTES).unwrap()];
    for _ in 0..2 {
        let stdin = ClientMessage::Stdin {
            size: STDIN_WINDOW_BYTES,
        };
        conn.write_frame(&stdin, &body).await.unwrap();
    }
    let code = loop {
        let frame = timeout(TEST_TIMEOUT, conn.read_frame::<ServerMessage>())
            .await
            .expect("a frame in time")
            .expect("a valid frame");
        match frame {
            Some(ServerMessage::StdinCredit { .. }) => continue,
            Some(ServerMessage::Error { code, .. }) => break code,
            other => panic!("expected the refusal, got {other:?}"),
        }
    };
    assert_eq!(code, "stdin_window_exceeded");
    drop(conn);

    let mut out = Vec::new();
    let (_signals_tx, signals) = mpsc::channel(1);
    let request = RunRequest {
        argv: vec!["echo".into(), "still serving".into()],
        shell: false,
        pty: None,
    };
    let io = LocalIo {
        stdin: tokio::io::empty(),
        stdout: Output::new(&mut out),
        stderr: tokio::io::sink(),
        signals,
        resizes: None,
    };
    let outcome = timeout(
        TEST_TIMEOUT,
        run(&server.addr, &client_options(token.clone()), &request, io),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome.exit, RemoteExit::Code(0));
    assert_eq!(out, b"still serving\n");
    server.stop().await.unwrap();
}

/// Stdin that yields `data`, then fails.
struct FailingStdin {
    data: Option<&'static [u8]>,
}

impl AsyncRead for FailingStdin {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.data.take() {
            Some(data) => {
                buf.put_slice(data);
                Poll::Ready(Ok(()))
            }
            None => Poll::Ready(Err(std::io::Error::other("the terminal went away"))),
        }
    }
}

#[tokio::test]
async fn a_local_stdin_error_is_reported_and_never_passed_off_as_eof() {
    let (server, token) = start_exec(ExecConfig::default()).await;
    // `cat` would exit 0 with what it got if the client sent EOF for the failed read.
    let request = RunRequest {
        argv: vec!["cat".into()],
        shell: false,
        pty: None,
    };
    let (_signals_tx, signals) = mpsc::channel(1);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let io = LocalIo {
        stdin: FailingStdin { data: Some(b"abc") },
        stdout: Output::new(&mut stdout),
        stderr: &mut stderr,
        signals,
        resizes: None,
    };
    let ran = timeout(
        TEST_TIMEOUT,
        run(&server.addr, &client_options(token.clone()), &request, io),
    )
    .await
    .expect("the run ends in time");
    match ran {
        Err(e @ sockit::service::exec::ExecError::Input(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("stdin") && text.contains("the terminal went away"),
                "{text}"
            );
        }
        other => panic!("expected a stdin error, got {other:?}"),
    }
}
