//! The datagram half of the engine (`UDPServer`, `UnixDatagramServer`): one handler call per
//! datagram, inline (sequential) or in a task each (concurrent), bounded by `max_conns`.

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::{Config, Mode};
use crate::net::{Datagram, PeerAddr};

/// Default largest datagram accepted (the UDP maximum fits); longer ones are dropped.
pub(crate) const DEFAULT_MAX_DATAGRAM: usize = 65536;

/// Handles one datagram (`BaseRequestHandler.handle()` for datagram servers).
pub trait DatagramHandler: Send + Sync + 'static {
    /// Handles `packet` from `peer`; replies go out through `socket`.
    fn handle(
        &self,
        packet: &[u8],
        peer: &PeerAddr,
        socket: &Datagram,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// One handler value shared, as for [`Handler`](super::Handler).
impl<H: DatagramHandler> DatagramHandler for Arc<H> {
    fn handle(
        &self,
        packet: &[u8],
        peer: &PeerAddr,
        socket: &Datagram,
    ) -> impl Future<Output = io::Result<()>> + Send {
        (**self).handle(packet, peer, socket)
    }
}

/// Serves `socket` until `shutdown` fires, then waits up to the drain deadline for handlers.
///
/// Datagrams that were truncated (longer than `config.max_datagram`), that come from UDP
/// port 0 (which cannot be answered: a spoofing tell), or from a denied peer are dropped
/// before the handler sees them.
///
/// # Errors
/// `Unsupported` for `Mode::Process`; a receive error other than a transient one.
pub async fn serve_datagram<H: DatagramHandler>(
    socket: Datagram,
    handler: H,
    config: Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    if config.mode == Mode::Process {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "datagram services cannot run in process mode",
        ));
    }
    let socket = Arc::new(socket);
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(config.max_conns.max(1)));
    let tracker = TaskTracker::new();
    // One byte more than the limit so that a datagram of exactly the limit is not "truncated".
    let mut buf = vec![0u8; config.max_datagram.saturating_add(1)];
    // Registered once: a fresh `cancelled()` per datagram would take the token's lock twice
    // for every packet.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        let received = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            res = socket.recv_from(&mut buf) => res,
        };
        let (len, truncated, peer) = match received {
            Ok(r) => r,
            // ICMP errors from earlier replies surface here on Linux; they are not ours to end.
            Err(e) if transient(&e) => continue,
            Err(e) => return Err(e),
        };
        if truncated || len > config.max_datagram {
            debug!(service = %config.service, %peer, "dropped a datagram over {} bytes", config.max_datagram);
            continue;
        }
        if !answerable(&peer) {
            debug!(service = %config.service, %peer, "dropped a datagram from port 0");
            continue;
        }
        if !config.acl.permits(&peer) {
            warn!(service = %config.service, %peer, "denied by access list");
            continue;
        }
        let packet = &buf[..len];
        match config.mode {
            Mode::Sequential | Mode::Process => {
                if let Err(e) = handler.handle(packet, &peer, &socket).await {
                    debug!(service = %config.service, %peer, error = %e, "datagram handler failed");
                }
            }
            Mode::Concurrent => {
                let permit = tokio::select! {
                    biased;
                    _ = &mut cancelled => break,
                    p = permits.clone().acquire_owned() => p.map_err(io::Error::other)?,
                };
                let packet = packet.to_vec();
                let (handler, socket, service) =
                    (handler.clone(), socket.clone(), config.service.clone());
                tracker.spawn(async move {
                    if let Err(e) = handler.handle(&packet, &peer, &socket).await {
                        debug!(%service, %peer, error = %e, "datagram handler failed");
                    }
                    drop(permit);
                });
            }
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(config.drain_timeout, tracker.wait()).await;
    Ok(())
}

/// A UDP source port of 0 cannot be answered by a real client: it is a spoofing tell, and
/// replying would aim traffic at whoever owns that address.
fn answerable(peer: &PeerAddr) -> bool {
    !matches!(peer, PeerAddr::Inet(sa) if sa.port() == 0)
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_from_port_zero_are_not_answered() {
        assert!(!answerable(&PeerAddr::Inet("192.0.2.7:0".parse().unwrap())));
        assert!(answerable(&PeerAddr::Inet("192.0.2.7:53".parse().unwrap())));
        assert!(answerable(&PeerAddr::Unix(None)));
    }
}
