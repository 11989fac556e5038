//! Echo: stream echo (TCP, Unix) that writes bytes back as they arrive, optionally ASCII
//! upper-cased like the lessons' server, and UDP/Unix-datagram echo that will not act as a
//! reflector.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::engine::{Conn, ConnInfo, DatagramHandler, Handler, Mode, ProcessCommand};
use crate::net::{Datagram, PeerAddr};

pub(crate) mod reflect;

use reflect::{is_service_port, LoopGuard, RateLimiter};
pub use reflect::{LOOP_STREAK, LOWEST_ANSWERED_PORT, SERVICE_PORTS};

/// Bytes read per syscall. The buffer lives on the stack only while a read is being handled,
/// so an idle connection holds none.
pub(crate) const ECHO_READ_BYTES: usize = 64 * 1024;
/// Default datagrams per second answered per source IP (non-loopback sources).
pub const DEFAULT_UDP_RATE_PER_SOURCE: u32 = 1_000;

/// Echo's default scheduling: a task per connection for streams; inline for datagrams, whose
/// reply is one non-blocking send, so a task per datagram would only add a hop (measured:
/// ~10% fewer replies/s and 1.5x the p99 with one client; see docs/benchmarks.md).
pub fn default_mode(udp: bool) -> Mode {
    if udp {
        Mode::Sequential
    } else {
        Mode::Concurrent
    }
}

/// The stream echo handler.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    /// Upper-case ASCII letters before echoing (the classic tutorial server).
    pub upper: bool,
}

impl Handler for Echo {
    async fn handle(&self, conn: Conn, _info: ConnInfo) -> io::Result<()> {
        echo_stream(conn, self.upper).await.map(drop)
    }

    /// This program again as `sockit echo [--upper]`, whose `main` serves the connection with
    /// the `Echo` it builds: right under `sockit echo` and `sockit serve` alike, since the
    /// command line of neither says which handler a child should serve.
    fn process_command(&self) -> Option<ProcessCommand> {
        let upper = self.upper.then_some("--upper");
        ProcessCommand::reexec_with(["echo"].into_iter().chain(upper)).ok()
    }
}

/// Echoes `stream` until the peer half-closes, then half-closes back. Returns bytes echoed.
///
/// Each read is written back from the same stack buffer in the same poll when the socket
/// accepts it (the common case); only a short write copies the rest to the heap, and no more
/// is read until it is flushed, so a peer that does not read cannot grow memory.
///
/// # Errors
/// The first I/O error (including the idle timeout).
pub async fn echo_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    upper: bool,
) -> io::Result<u64> {
    let mut unsent: Vec<u8> = Vec::new();
    let mut total = 0u64;
    loop {
        if !unsent.is_empty() {
            stream.write_all(&unsent).await?;
            unsent = Vec::new();
        }
        let n = poll_fn(|cx| {
            let mut buf = [MaybeUninit::<u8>::uninit(); ECHO_READ_BYTES];
            let mut buf = ReadBuf::uninit(&mut buf);
            ready!(Pin::new(&mut stream).poll_read(cx, &mut buf))?;
            let data = buf.filled_mut();
            if upper {
                data.make_ascii_uppercase();
            }
            let mut written = 0;
            while written < data.len() {
                match Pin::new(&mut stream).poll_write(cx, &data[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        unsent.extend_from_slice(&data[written..]);
                        break;
                    }
                }
            }
            Poll::Ready(Ok(data.len()))
        })
        .await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    stream.shutdown().await?;
    Ok(total)
}

/// The datagram echo handler: replies to each datagram's source, within a per-source rate,
/// never to a service port, and never in a loop with another echo.
#[derive(Debug)]
pub struct EchoDatagram {
    upper: bool,
    limiter: RateLimiter,
    loops: LoopGuard,
    answer_service_ports: bool,
}

impl EchoDatagram {
    /// A datagram echo answering at most `rate_per_source` datagrams per second per source IP.
    /// Loopback sources are exempt unless `limit_loopback`: they cannot be spoofed from off
    /// the host, so they cannot turn the server into a reflector. Sources on a service port
    /// (below [`LOWEST_ANSWERED_PORT`], or one of [`SERVICE_PORTS`]) are not answered, and a
    /// source that keeps sending back what it was sent is cut off ([`LOOP_STREAK`]).
    pub fn new(upper: bool, rate_per_source: u32, limit_loopback: bool) -> Self {
        EchoDatagram {
            upper,
            limiter: RateLimiter::new(rate_per_source, limit_loopback),
            loops: LoopGuard::new(),
            answer_service_ports: false,
        }
    }

    /// Also answers sources on service ports (another echo, chargen, DNS, NTP, …): only for
    /// testing against such a peer, as it lets a spoofed datagram start a loop.
    #[must_use]
    pub fn answer_service_ports(mut self, answer: bool) -> Self {
        self.answer_service_ports = answer;
        self
    }
}

impl DatagramHandler for EchoDatagram {
    async fn handle(&self, packet: &[u8], peer: &PeerAddr, socket: &Datagram) -> io::Result<()> {
        if let PeerAddr::Inet(source) = peer {
            if !self.answer_service_ports && is_service_port(source.port()) {
                return Ok(());
            }
            if !self.limiter.allow(source.ip()) || !self.loops.allow(*source, packet) {
                return Ok(());
            }
        }
        if self.upper {
            let reply = packet.to_ascii_uppercase();
            socket.send_to(&reply, peer).await?;
        } else {
            socket.send_to(packet, peer).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn stream_echo_returns_bytes_and_half_closes() {
        let (client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(echo_stream(server, true));
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(b"hello, World 123").await.unwrap();
        wr.shutdown().await.unwrap();
        let mut out = Vec::new();
        rd.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"HELLO, WORLD 123");
        assert_eq!(task.await.unwrap().unwrap(), 16);
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_stalls_the_echo_without_growing_memory() {
        // A 4 KiB pipe: the echo can hold at most one read's worth of unsent bytes.
        let (client, server) = tokio::io::duplex(4096);
        let task = tokio::spawn(echo_stream(server, false));
        let (mut rd, mut wr) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 1000];
            for _ in 0..1000 {
                wr.write_all(&chunk).await?;
            }
            wr.shutdown().await
        });
        // Reading everything back proves nothing was lost or duplicated under backpressure.
        let mut out = Vec::new();
        rd.read_to_end(&mut out).await.unwrap();
        assert_eq!(out.len(), 1_000_000);
        writer.await.unwrap().unwrap();
        assert_eq!(task.await.unwrap().unwrap(), 1_000_000);
    }
}
