//! UDP echo clients: windows of numbered datagrams on one connected socket each.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at};

use super::echo::{collect, ConnStats, EchoLoad, Plan, UDP_REPLY_TIMEOUT, UDP_SEQ_BYTES};
use super::{fill_pattern, timed_out, BenchError, IO_TIMEOUT};
use crate::net::Addr;

/// Attempts at a first UDP round trip before the target counts as unreachable.
const UDP_PREFLIGHT_TRIES: u32 = 5;

pub(super) async fn run_udp_clients(load: &EchoLoad) -> Result<(ConnStats, Duration), BenchError> {
    let Addr::Inet(target) = load.addr else {
        return Err(BenchError::InvalidLoad("UDP needs an IP address".into()));
    };
    let connect_err = |source| BenchError::Connect {
        addr: load.addr.clone(),
        source,
    };
    udp_preflight(target, load.size)
        .await
        .map_err(connect_err)?;
    let mut sockets = Vec::with_capacity(load.conns);
    for _ in 0..load.conns {
        sockets.push(udp_connect(target).await.map_err(connect_err)?);
    }
    let plan = Plan::starting_now(load);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        tasks.spawn(run_udp_client(socket, i as u64, plan));
    }
    collect(tasks, ConnStats::new(), start).await
}

async fn udp_connect(target: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// One round trip before the clock starts: a closed port or silent target fails here.
async fn udp_preflight(target: SocketAddr, size: usize) -> io::Result<()> {
    let socket = udp_connect(target).await?;
    let probe = vec![0xA5; size];
    let mut reply = vec![0; size + 1];
    for _ in 0..UDP_PREFLIGHT_TRIES {
        socket.send(&probe).await?;
        if let Ok(res) = timeout(UDP_REPLY_TIMEOUT, socket.recv(&mut reply)).await {
            return res.map(drop);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no UDP reply from {target} after {UDP_PREFLIGHT_TRIES} tries"),
    ))
}

/// Sends windows of `pipeline` numbered datagrams and matches replies by sequence number.
async fn run_udp_client(socket: UdpSocket, seed: u64, plan: Plan) -> ConnStats {
    let mut tx = vec![0; plan.size];
    fill_pattern(&mut tx[UDP_SEQ_BYTES..], seed);
    // One spare byte, so an over-long reply shows up as a mismatch instead of being cut.
    let mut rx = vec![0; plan.size + 1];
    let mut replied = vec![false; plan.pipeline];
    let mut stats = ConnStats::new();
    let mut next_seq = 0u64;
    while plan.keep_going(next_seq) {
        let base = next_seq;
        let start = Instant::now();
        let mut sent = 0;
        while sent < plan.pipeline {
            tx[..UDP_SEQ_BYTES].copy_from_slice(&next_seq.to_be_bytes());
            match timeout(IO_TIMEOUT, socket.send(&tx)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    stats.failed(e);
                    break;
                }
                Err(_) => {
                    stats.failed(timed_out("UDP send"));
                    return stats;
                }
            }
            next_seq += 1;
            sent += 1;
        }
        replied[..sent].fill(false);
        let mut received = 0;
        let window_end = tokio::time::Instant::from_std(start + UDP_REPLY_TIMEOUT);
        while received < sent {
            let n = match timeout_at(window_end, socket.recv(&mut rx)).await {
                Ok(Ok(n)) => n,
                // A refused port (ICMP) ends this window; anything else ends the client.
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    stats.failed(e);
                    break;
                }
                Ok(Err(e)) => {
                    stats.failed(e);
                    stats.lost += (sent - received) as u64;
                    return stats;
                }
                Err(_) => break,
            };
            if n < UDP_SEQ_BYTES {
                continue;
            }
            let mut seq = [0; UDP_SEQ_BYTES];
            seq.copy_from_slice(&rx[..UDP_SEQ_BYTES]);
            let seq = u64::from_be_bytes(seq);
            let slot = match seq.checked_sub(base) {
                Some(slot) if slot < sent as u64 && !replied[slot as usize] => slot as usize,
                // Late (an earlier window), duplicated or not ours.
                _ => continue,
            };
            replied[slot] = true;
            received += 1;
            if n != plan.size {
                stats.mismatched(plan.size, n);
            } else {
                let body = UDP_SEQ_BYTES..plan.size;
                stats.check(plan.verify, &tx[body.clone()], &rx[body], start.elapsed());
            }
        }
        stats.lost += (sent - received) as u64;
    }
    stats
}
