//! The held connections: each opened from its own loopback source address when there are
//! many, and counted only once it has echoed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;

use super::{CONNS_PER_SOURCE_IP, HOLD_CHECK_BYTES};
use crate::net::{Addr, Stream};
use crate::tools::bench::{connect_stream, exchange, fill_pattern, timed_out, IO_TIMEOUT};

/// The source address for the `i`-th held connection: spread over 127.0.0.0/8 when the target
/// is loopback IPv4 (starting at 127.0.0.1), otherwise left to the kernel.
fn source_ip(target: &Addr, i: usize) -> Option<Ipv4Addr> {
    match target {
        Addr::Inet(SocketAddr::V4(sa)) if sa.ip().is_loopback() => {
            let host = (1 + i / CONNS_PER_SOURCE_IP).min(0x00FF_FFFE) as u32;
            Some(Ipv4Addr::from(0x7F00_0000 | host))
        }
        _ => None,
    }
}

pub(super) fn source_ip_count(target: &Addr, conns: usize) -> usize {
    match source_ip(target, 0) {
        Some(_) => conns.div_ceil(CONNS_PER_SOURCE_IP),
        None => 0,
    }
}

/// Opens the `i`-th held connection and waits for one echo, so a connection counts only once
/// the server has accepted and served it. Waiting for that, rather than for the handshake the
/// kernel completes on its own, is what keeps the unaccepted queue (the listen backlog) within
/// [`CONNECT_PARALLELISM`](crate::tools::bench::CONNECT_PARALLELISM).
pub(super) async fn open_held(addr: &Addr, i: usize) -> io::Result<Stream> {
    let mut stream = match (addr, source_ip(addr, i)) {
        (Addr::Inet(target), Some(source)) => connect_from(source, *target).await.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot connect {source} to {addr}: {e}"))
        })?,
        _ => connect_stream(addr).await?,
    };
    check_echo(&mut stream).await?;
    Ok(stream)
}

async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> io::Result<Stream> {
    let socket = TcpSocket::new_v4()?;
    defer_port_choice(&socket)?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(target))
        .await
        .unwrap_or_else(|_| Err(timed_out("connect")))?;
    stream.set_nodelay(true)?;
    Ok(Stream::Tcp(stream))
}

/// Sets IP_BIND_ADDRESS_NO_PORT, so `bind` fixes only the source address and `connect` picks
/// the port by the whole 4-tuple. Otherwise every `bind` searches the ephemeral range for a
/// port free on its own, which takes milliseconds once thousands are held or in TIME_WAIT.
#[cfg(target_os = "linux")]
fn defer_port_choice(socket: &TcpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `socket`, and the option value is a c_int that
    // outlives the call, passed with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_port_choice(_: &TcpSocket) -> io::Result<()> {
    Ok(())
}

/// Echoes [`HOLD_CHECK_BYTES`] and checks they come back unchanged.
pub(super) async fn check_echo(stream: &mut Stream) -> io::Result<()> {
    let mut tx = [0; HOLD_CHECK_BYTES];
    fill_pattern(&mut tx, 0x0DD_BA11);
    round_trip(stream, &tx, &mut [0; HOLD_CHECK_BYTES])
        .await
        .map(drop)
}

/// One verified echo of `tx`, bounded by [`IO_TIMEOUT`].
pub(super) async fn round_trip(
    stream: &mut Stream,
    tx: &[u8],
    rx: &mut [u8],
) -> io::Result<Duration> {
    let start = Instant::now();
    let mut outcome = None;
    let echo = exchange(stream, tx, rx, tx.len(), |sent, echoed, at| {
        outcome = Some((sent == echoed, at - start));
    });
    tokio::time::timeout(IO_TIMEOUT, echo)
        .await
        .unwrap_or_else(|_| Err(timed_out("probe")))?;
    match outcome {
        Some((true, latency)) => Ok(latency),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "probe echo differs from what was sent",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::bench::testing::stream_echo;

    #[tokio::test]
    async fn connections_past_the_first_block_come_from_the_next_source_address() {
        let addr = stream_echo("127.0.0.1:0", None).await;
        let stream = open_held(&addr, CONNS_PER_SOURCE_IP).await.unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    }

    #[test]
    fn source_addresses_spread_over_loopback_only() {
        let v4: Addr = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(source_ip(&v4, 0), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(
            source_ip(&v4, CONNS_PER_SOURCE_IP),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(
            source_ip(&v4, 300 * CONNS_PER_SOURCE_IP),
            Some(Ipv4Addr::new(127, 0, 1, 45))
        );
        assert_eq!(source_ip_count(&v4, CONNS_PER_SOURCE_IP + 1), 2);
        for other in ["[::1]:9000", "10.0.0.1:9000", "unix:/tmp/x.sock"] {
            assert_eq!(source_ip(&other.parse().unwrap(), 0), None, "{other}");
        }
    }
}
