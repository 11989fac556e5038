//! TCP keepalive on accepted connections, so a server notices a peer that vanished without a
//! FIN or RST (a pulled cable, a suspended laptop, a NAT that forgot it), whether the
//! connection was quiet or had data in flight.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Quiet time before the first probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between unanswered probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel resets the connection.
pub const KEEPALIVE_RETRIES: u32 = 6;

/// TCP keepalive settings; `Default` gives [`KEEPALIVE_IDLE`], [`KEEPALIVE_INTERVAL`] and
/// [`KEEPALIVE_RETRIES`]: a vanished peer is noticed about two minutes after it went quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is reset.
    pub retries: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle: KEEPALIVE_IDLE,
            interval: KEEPALIVE_INTERVAL,
            retries: KEEPALIVE_RETRIES,
        }
    }
}

impl Keepalive {
    /// Probes that start after `idle` of quiet and give up about `idle` later: one probe every
    /// sixth of it (at least a second), six unanswered. `after(60s)` is the default.
    pub fn after(idle: Duration) -> Self {
        let interval = (idle / KEEPALIVE_RETRIES).max(Duration::from_secs(1));
        Keepalive {
            idle,
            interval,
            retries: KEEPALIVE_RETRIES,
        }
    }

    /// How long keepalive takes to give up on a peer that went quiet: the idle time plus
    /// every unanswered probe.
    pub fn give_up_after(&self) -> Duration {
        self.idle
            .saturating_add(self.interval.saturating_mul(self.retries))
    }

    /// Turns SO_KEEPALIVE on for `socket` with these timings, and on Linux bounds unacknowledged
    /// data by the same time (TCP_USER_TIMEOUT).
    ///
    /// Keepalive probes are only sent while nothing is in flight: a peer that vanished while
    /// the server was sending (a command's output, a download, chat lines) would otherwise be
    /// retransmitted to for about 15 minutes (`tcp_retries2`) before the write failed. With
    /// the user timeout, data unacknowledged for [`Keepalive::give_up_after`] resets the
    /// connection, so a busy connection is dropped as soon as a quiet one.
    ///
    /// # Errors
    /// The `setsockopt` error, e.g. for a socket the peer has already reset.
    pub fn apply(&self, socket: &TcpStream) -> io::Result<()> {
        let params = TcpKeepalive::new()
            .with_time(self.idle)
            .with_interval(self.interval)
            .with_retries(self.retries);
        let sock = SockRef::from(socket);
        sock.set_tcp_keepalive(&params)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        sock.set_tcp_user_timeout(Some(self.give_up_after()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Addr, BindOptions, Listener, Stream};

    async fn accepted_with(opts: &BindOptions) -> (Stream, Stream) {
        let addr: Addr = "127.0.0.1:0".parse().expect("addr");
        let listener = Listener::bind(&addr, opts).await.expect("bind");
        let bound = listener.local_addr().expect("local addr");
        let (client, accepted) = tokio::join!(Stream::connect(&bound), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    fn tcp(stream: &Stream) -> SockRef<'_> {
        match stream {
            Stream::Tcp(s) => SockRef::from(s),
            other => panic!("expected TCP, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn accepted_sockets_get_the_listeners_keepalive_timings() {
        let keepalive = Keepalive {
            idle: Duration::from_secs(61),
            interval: Duration::from_secs(11),
            retries: 7,
        };
        let opts = BindOptions {
            keepalive: Some(keepalive),
            ..BindOptions::default()
        };
        let (_client, accepted) = accepted_with(&opts).await;
        let sock = tcp(&accepted);
        assert!(sock.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(sock.keepalive_time().expect("TCP_KEEPIDLE"), keepalive.idle);
        assert_eq!(
            sock.keepalive_interval().expect("TCP_KEEPINTVL"),
            keepalive.interval
        );
        assert_eq!(
            sock.keepalive_retries().expect("TCP_KEEPCNT"),
            keepalive.retries
        );
        assert!(
            sock.nodelay().expect("TCP_NODELAY"),
            "nodelay still applies"
        );
        #[cfg(target_os = "linux")]
        assert_eq!(
            sock.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
            Some(Duration::from_secs(61 + 11 * 7)),
            "data in flight to a vanished peer is given up on as soon as a quiet peer"
        );
    }

    #[tokio::test]
    async fn without_keepalive_accepted_sockets_are_left_alone() {
        let (_client, accepted) = accepted_with(&BindOptions::default()).await;
        assert!(!tcp(&accepted).keepalive().expect("SO_KEEPALIVE"));
    }
}
