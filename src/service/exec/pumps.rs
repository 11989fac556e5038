//! The pump that streams a running command's output back to the client (from pipes or its
//! terminal), with the `stdin_credit` frames that let the client send more input.

use std::io;
use std::os::fd::AsFd;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::unix::pipe;
use tokio::process::ChildStderr;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::messages::ServerMessage;
use super::{OUTPUT_CHUNK_BYTES, STDOUT_CHUNK_BYTES, STDOUT_SPLICE_BYTES};
use crate::net::splice::{pipe_ready_bytes, SpliceWrite};
use crate::terminal::PtyMaster;
use crate::wire::{Connection, WireError};

/// Output still read from the pipes after [`pump_output`] was told to stop: more than a
/// stdout pipe holds, so a command's last output is never cut short.
const PIPE_LATE_OUTPUT_BYTES: usize = 2 * super::STDOUT_PIPE_BYTES;

/// Output still read from a pty after [`pump_output`] was told to stop, so a command that
/// exited with its last output still in the terminal's buffers (at most ~64 KiB on Linux)
/// loses nothing, while a background job that keeps the terminal busy cannot hold the
/// session open.
const PTY_LATE_OUTPUT_BYTES: usize = 256 * 1024;

/// Where the command's output comes from.
pub(super) enum CommandOutput<'a> {
    /// Its stdout and stderr pipes, sent as separate frames.
    Pipes(pipe::Receiver, ChildStderr),
    /// Its terminal, both outputs merged, sent as `stdout` frames.
    Pty(&'a PtyMaster),
}

/// The stdin the command has taken, not yet credited to the client: a running total from the
/// input pump ([`super::input::pump_input`]) and how much of it was sent.
pub(super) struct StdinCredits {
    taken: watch::Receiver<Credit>,
    sent: u64,
    probes: u64,
}

/// What the input side tells the output side: stdin bytes the command took in all, and how
/// many probes it asked for (a frame sent only to learn whether the client is still there).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Credit {
    pub(super) taken: u64,
    pub(super) probes: u64,
}

impl StdinCredits {
    pub(super) fn new(taken: watch::Receiver<Credit>) -> Self {
        StdinCredits {
            taken,
            sent: 0,
            probes: 0,
        }
    }

    /// Waits for stdin taken since the last call, or a probe (`Some(0)`); `None` once the
    /// input pump is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `watch::Receiver::changed` is, and the rest does not wait.
    async fn next(&mut self) -> Option<u64> {
        loop {
            self.taken.changed().await.ok()?;
            let now = *self.taken.borrow_and_update();
            let fresh = now.taken.saturating_sub(self.sent);
            let probe = now.probes != self.probes;
            if fresh > 0 || probe {
                self.sent = now.taken;
                self.probes = now.probes;
                return Some(fresh);
            }
        }
    }
}

/// Streams the command's output, one frame per chunk as it is produced, until it ends: both
/// pipes at EOF, or the terminal with no process left on it. Each write waits for the client,
/// so a slow reader holds the command at its pipe or terminal instead of growing a buffer here.
///
/// Meanwhile, and after the output ended until `exited` fires (a command may close its output
/// and still read), the stdin the command takes is credited to the client.
///
/// On a stream that can splice (plain TCP or Unix), stdout goes from its pipe into the socket
/// without passing through this process.
///
/// Once `stop` fires (some time after the command exited) a terminal is read only while it
/// has output ready, and for at most [`PTY_LATE_OUTPUT_BYTES`]: a background job may still
/// hold it open. Pipes likewise send only what is ready, at most [`PIPE_LATE_OUTPUT_BYTES`]:
/// a process that escaped the group (`setsid cmd &`) and was not found may hold them.
///
/// # Errors
///
/// The write error once the client can no longer be written to.
///
/// # Cancel safety
///
/// Not cancel safe (a frame may be half written); it is only dropped at session end.
pub(super) async fn pump_output<W: AsyncRead + AsyncWrite + SpliceWrite + Unpin>(
    writer: &mut Connection<W>,
    output: CommandOutput<'_>,
    credits: &mut StdinCredits,
    stop: &CancellationToken,
    exited: &CancellationToken,
) -> Result<(), WireError> {
    match output {
        CommandOutput::Pipes(stdout, stderr) => {
            pump_pipes(writer, stdout, stderr, credits, stop).await
        }
        CommandOutput::Pty(master) => pump_pty(writer, master, credits, stop).await,
    }?;
    loop {
        // Both are cancel safe.
        tokio::select! {
            () = exited.cancelled() => return Ok(()),
            fresh = credits.next() => match fresh {
                Some(bytes) => send_credit(writer, bytes).await?,
                None => return Ok(()),
            },
        }
    }
}

/// Lets the client send `bytes` more of stdin.
async fn send_credit<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    bytes: u64,
) -> Result<(), WireError> {
    writer
        .write_frame(&ServerMessage::StdinCredit { bytes }, &[])
        .await
}

async fn pump_pty<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    master: &PtyMaster,
    credits: &mut StdinCredits,
    stop: &CancellationToken,
) -> Result<(), WireError> {
    let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let mut late = 0usize;
    loop {
        // Biased: output that is ready is read before `stop` is even looked at. All three are
        // cancel safe.
        let read = tokio::select! {
            biased;
            n = master.read(&mut buf) => n,
            Some(bytes) = credits.next() => {
                send_credit(writer, bytes).await?;
                continue;
            }
            () = stop.cancelled() => return Ok(()),
        };
        if stop.is_cancelled() {
            late += read.as_ref().map_or(0, |n| *n);
            if late > PTY_LATE_OUTPUT_BYTES {
                return Ok(());
            }
        }
        if !forward(writer, Pipe::Stdout, &buf, read).await? {
            return Ok(());
        }
    }
}

/// Streams stdout and stderr as separate frames. Stdout waits until its pipe is readable,
/// then either sends all the pipe holds as one spliced frame (a stream that can splice) or
/// reads a chunk and writes it. Stderr, seldom bulky, is always read and written.
async fn pump_pipes<W: AsyncRead + AsyncWrite + SpliceWrite + Unpin>(
    writer: &mut Connection<W>,
    stdout: pipe::Receiver,
    mut stderr: ChildStderr,
    credits: &mut StdinCredits,
    stop: &CancellationToken,
) -> Result<(), WireError> {
    let splice = writer.get_ref().can_splice();
    let mut out_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let mut err_buf = vec![0u8; OUTPUT_CHUNK_BYTES];
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        // All three are cancel safe: waiting for readiness consumes nothing, and a read that
        // loses the race has read nothing.
        tokio::select! {
            ready = stdout.readable(), if out_open => {
                out_open = match ready {
                    Ok(()) if splice => splice_stdout(writer, &stdout, &mut out_buf).await?,
                    Ok(()) => read_stdout(writer, &stdout, &mut out_buf).await?,
                    Err(_) => false,
                };
            }
            n = stderr.read(&mut err_buf), if err_open => {
                err_open = forward(writer, Pipe::Stderr, &err_buf, n).await?;
            }
            Some(bytes) = credits.next() => send_credit(writer, bytes).await?,
            () = stop.cancelled() => {
                return send_late_output(writer, &stdout, &mut stderr, &mut out_buf).await;
            }
        }
    }
    Ok(())
}

/// Sends what the pipes hold once the command exited and its output did not end in time (a
/// process that escaped its group still holds them): only what is ready, and at most
/// [`PIPE_LATE_OUTPUT_BYTES`], so that process cannot hold the session open.
async fn send_late_output<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    stdout: &pipe::Receiver,
    stderr: &mut ChildStderr,
    buf: &mut [u8],
) -> Result<(), WireError> {
    let mut late = 0usize;
    while late < PIPE_LATE_OUTPUT_BYTES {
        let n = match stdout.try_read(buf) {
            Ok(n) if n > 0 => n,
            _ => break,
        };
        late += n;
        forward(writer, Pipe::Stdout, buf, Ok(n)).await?;
    }
    while late < PIPE_LATE_OUTPUT_BYTES {
        // Biased: a read that is not ready at once loses to `ready`, having read nothing.
        let n = tokio::select! {
            biased;
            n = stderr.read(buf) => n.unwrap_or(0),
            () = std::future::ready(()) => 0,
        };
        if n == 0 {
            break;
        }
        late += n;
        forward(writer, Pipe::Stderr, buf, Ok(n)).await?;
    }
    Ok(())
}

/// Sends a chunk read from a readable stdout pipe; returns whether the pipe is still open.
/// `buf` starts small and grows to [`STDOUT_CHUNK_BYTES`] once a read fills it: bulk output
/// gets big reads, while a quiet command (most sessions) never touches the big buffer.
async fn read_stdout<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    stdout: &pipe::Receiver,
    buf: &mut Vec<u8>,
) -> Result<bool, WireError> {
    let read = match stdout.try_read(buf) {
        // Stale readiness, now cleared.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
        read => read,
    };
    let filled = matches!(read, Ok(n) if n == buf.len());
    let open = forward(writer, Pipe::Stdout, buf, read).await?;
    if filled && buf.len() < STDOUT_CHUNK_BYTES {
        buf.resize(STDOUT_CHUNK_BYTES, 0);
    }
    Ok(open)
}

/// Sends what a readable stdout pipe holds as one spliced frame; returns whether the pipe is
/// still open. A pipe that is readable but empty is at EOF, or its readiness is stale: a plain
/// read into `buf` tells which (and clears stale readiness), and forwards anything that
/// arrived in between.
async fn splice_stdout<W: AsyncRead + AsyncWrite + SpliceWrite + Unpin>(
    writer: &mut Connection<W>,
    stdout: &pipe::Receiver,
    buf: &mut [u8],
) -> Result<bool, WireError> {
    // Nothing else reads this pipe, so all it holds now can be spliced without finding it
    // empty. An ioctl error takes the read path below.
    let held = pipe_ready_bytes(stdout.as_fd())
        .unwrap_or(0)
        .min(STDOUT_SPLICE_BYTES);
    if held == 0 {
        return match stdout.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            read => forward(writer, Pipe::Stdout, buf, read).await,
        };
    }
    let size = held as u64;
    writer.write_header(&ServerMessage::Stdout { size }).await?;
    writer.splice_body(stdout.as_fd(), held).await?;
    Ok(true)
}

#[derive(Clone, Copy)]
enum Pipe {
    Stdout,
    Stderr,
}

/// Sends one chunk read from a pipe; returns whether the pipe is still open.
async fn forward<W: AsyncRead + AsyncWrite + Unpin>(
    writer: &mut Connection<W>,
    pipe: Pipe,
    buf: &[u8],
    read: io::Result<usize>,
) -> Result<bool, WireError> {
    // A failed pipe read is treated as EOF: the child's side is what broke.
    let n = read.unwrap_or(0);
    if n == 0 {
        return Ok(false);
    }
    let size = n as u64;
    let msg = match pipe {
        Pipe::Stdout => ServerMessage::Stdout { size },
        Pipe::Stderr => ServerMessage::Stderr { size },
    };
    writer.write_frame(&msg, &buf[..n]).await?;
    Ok(true)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use socket2::SockRef;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::net::Stream;

    /// Socket buffer size asked for in the slow-reader test: far below the frame, so the
    /// splice must stop short and wait for the reader.
    const SMALL_SOCKET_BYTES: usize = 16 * 1024;

    /// The server's framed end and the client's, over loopback TCP.
    async fn tcp_pair() -> (Connection<Stream>, Connection<Stream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let server = Stream::Tcp(accepted.expect("accept").0);
        let client = Stream::Tcp(client.expect("connect"));
        (Connection::new(server), Connection::new(client))
    }

    fn tcp(conn: &Connection<Stream>) -> &TcpStream {
        match conn.get_ref() {
            Stream::Tcp(s) => s,
            Stream::Unix(_) => unreachable!("a TCP pair"),
        }
    }

    /// A pipe grown to the stdout pipe size, holding `data`, its read end as the pump sees it.
    fn pipe_holding(data: &[u8]) -> (pipe::Receiver, File) {
        let (rx, tx) = nix::unistd::pipe().expect("pipe");
        let size = i32::try_from(super::super::STDOUT_PIPE_BYTES).expect("fits");
        nix::fcntl::fcntl(&rx, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size)).expect("grow pipe");
        let mut tx = File::from(tx);
        tx.write_all(data).expect("fill pipe");
        let rx = pipe::Receiver::from_owned_fd(rx).expect("register");
        (rx, tx)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Reads one stdout frame; returns its declared size and its body, read `step` at a time.
    async fn read_stdout(conn: &mut Connection<Stream>, step: usize) -> (u64, Vec<u8>) {
        conn.set_read_buffer_bytes(step);
        let size = match conn.read_frame::<ServerMessage>().await.expect("frame") {
            Some(ServerMessage::Stdout { size }) => size,
            other => panic!("expected stdout, got {other:?}"),
        };
        let mut body = Vec::new();
        while let Some(chunk) = conn.read_body_chunk().await.expect("body") {
            body.extend_from_slice(&chunk);
        }
        (size, body)
    }

    #[tokio::test]
    async fn all_a_pipe_holds_goes_out_as_one_spliced_frame() {
        let (mut server, mut client) = tcp_pair().await;
        assert!(server.get_ref().can_splice());
        // More than a read-and-write pump ever puts in one frame.
        let data = pattern(STDOUT_CHUNK_BYTES + 44_444);
        let (stdout, _tx) = pipe_holding(&data);
        let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
        let (open, (size, body)) = tokio::join!(
            splice_stdout(&mut server, &stdout, &mut buf),
            read_stdout(&mut client, 64 * 1024),
        );
        assert!(open.expect("spliced"));
        assert_eq!(size, data.len() as u64);
        assert_eq!(body, data);
    }

    #[tokio::test]
    async fn a_slow_reader_makes_the_splice_wait_and_still_get_every_byte() {
        let (mut server, mut client) = tcp_pair().await;
        SockRef::from(tcp(&server))
            .set_send_buffer_size(SMALL_SOCKET_BYTES)
            .expect("sndbuf");
        SockRef::from(tcp(&client))
            .set_recv_buffer_size(SMALL_SOCKET_BYTES)
            .expect("rcvbuf");
        let data = pattern(STDOUT_SPLICE_BYTES);
        let (stdout, _tx) = pipe_holding(&data);
        let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
        let splice = splice_stdout(&mut server, &stdout, &mut buf);
        tokio::pin!(splice);
        // Nobody reads yet: the frame cannot fit in the socket buffers, so the splice stops
        // short, finds the socket full and waits.
        tokio::select! {
            biased;
            _ = &mut splice => panic!("a whole frame fit in {SMALL_SOCKET_BYTES}-byte buffers"),
            () = tokio::task::yield_now() => {}
        }
        let (open, (size, body)) = tokio::join!(splice, read_stdout(&mut client, 4096));
        assert!(open.expect("spliced"));
        assert_eq!(size, data.len() as u64);
        assert_eq!(body, data);
    }

    #[tokio::test]
    async fn an_empty_pipe_at_eof_ends_stdout_without_a_frame() {
        let (mut server, _client) = tcp_pair().await;
        let (stdout, tx) = pipe_holding(b"");
        drop(tx);
        // As in the pump: called once the pipe is readable, which EOF makes it.
        stdout.readable().await.expect("readable at eof");
        let mut buf = vec![0u8; OUTPUT_CHUNK_BYTES];
        let open = splice_stdout(&mut server, &stdout, &mut buf).await;
        assert!(!open.expect("no error"));
    }
}
