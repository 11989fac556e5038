//! `listen --udp --keep-open --exec CMD`: a command per datagram, inetd's UDP services and
//! socat's `UDP-RECVFROM:…,fork EXEC:…`. The datagram is the command's stdin, its stdout (up
//! to one datagram) the reply. Bounded: the engine's `max_conns` commands at once, each
//! killed with its process group at [`DatagramExecConfig::timeout`]. Not a reflector: the
//! same rules as UDP echo (no answer to service ports, a per-source rate off loopback, the
//! loop guard).

use std::io;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::engine::{
    set_command_env, with_default_signals, ConnInfo, DatagramHandler, ProcessCommand, ProcessGroup,
};
use crate::net::{Datagram, PeerAddr};
use crate::service::echo::reflect::{is_service_port, LoopGuard, RateLimiter};

/// Default time a command may run before its process group is killed (and nothing is sent).
pub const DEFAULT_DATAGRAM_EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// Default number of commands running at once (the engine's `max_conns` for this mode).
pub const DEFAULT_DATAGRAM_EXEC_CONCURRENCY: usize = 16;

/// Default datagrams per second a source IP off loopback may start commands with.
pub const DEFAULT_DATAGRAM_EXEC_RATE: u32 = 50;

/// Largest reply: the largest UDP payload over IPv4. Output past it is cut.
pub const MAX_DATAGRAM_REPLY_BYTES: usize = 65_507;

/// Settings of [`DatagramExec`].
#[derive(Debug, Clone)]
pub struct DatagramExecConfig {
    /// The command run per datagram.
    pub command: ProcessCommand,
    /// A command still running after this long is killed with its group; no reply.
    pub timeout: Duration,
    /// Commands per second per source IP off loopback.
    pub rate: u32,
}

impl DatagramExecConfig {
    /// `command` with the default bounds.
    pub fn new(command: ProcessCommand) -> Self {
        DatagramExecConfig {
            command,
            timeout: DEFAULT_DATAGRAM_EXEC_TIMEOUT,
            rate: DEFAULT_DATAGRAM_EXEC_RATE,
        }
    }
}

/// The per-datagram command as a [`DatagramHandler`].
#[derive(Debug)]
pub struct DatagramExec {
    config: DatagramExecConfig,
    limiter: RateLimiter,
    loops: LoopGuard,
    /// Never fires: a datagram's command is bounded by its timeout, and the engine's drain
    /// deadline cancels it at shutdown (dropping the run kills its group).
    shutdown: CancellationToken,
}

impl DatagramExec {
    /// A handler running `config.command` per datagram.
    pub fn new(config: DatagramExecConfig) -> Self {
        DatagramExec {
            limiter: RateLimiter::new(config.rate, false),
            loops: LoopGuard::new(),
            config,
            shutdown: CancellationToken::new(),
        }
    }

    /// Whether `peer` may start a command with `packet` (the echo's anti-reflection rules).
    fn admits(&self, peer: &PeerAddr, packet: &[u8]) -> bool {
        match peer {
            PeerAddr::Inet(source) => {
                !is_service_port(source.port())
                    && self.limiter.allow(source.ip())
                    && self.loops.allow(*source, packet)
            }
            _ => true,
        }
    }

    /// Runs the command with `packet` on stdin; its stdout, cut at one datagram, or `None`
    /// when it timed out.
    async fn run(&self, packet: &[u8], info: &ConnInfo) -> io::Result<Option<Vec<u8>>> {
        let spec = &self.config.command;
        let mut command = Command::new(&spec.program);
        command.args(&spec.args);
        set_command_env(&mut command, info);
        if matches!(info.peer, PeerAddr::Inet(_)) {
            command.env("SOCKIT_PROTO", "UDP");
        }
        command
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true);
        with_default_signals(&mut command);
        let mut child = command.spawn()?;
        let group = ProcessGroup::of(&child);
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the command's pipes are missing"));
        };
        let mut reply = Vec::new();
        let limit = MAX_DATAGRAM_REPLY_BYTES as u64;
        let work = async {
            // Stdin and stdout at once: a command may print before it has read everything.
            let feed = async {
                // A command that does not read its stdin is not an error.
                let _ = stdin.write_all(packet).await;
                drop(stdin);
            };
            let mut stdout = stdout.take(limit);
            let read = stdout.read_to_end(&mut reply);
            let ((), read) = tokio::join!(feed, read);
            if read? as u64 >= limit {
                // The reply is full: the rest of the output has nowhere to go.
                group.signal(Signal::SIGKILL);
            }
            child.wait().await
        };
        let outcome = tokio::time::timeout(self.config.timeout, work).await;
        group.signal(Signal::SIGKILL);
        match outcome {
            Ok(status) => {
                let _ = status?;
                group.disarm();
                Ok(Some(reply))
            }
            Err(_) => {
                let _ = child.wait().await;
                group.disarm();
                Ok(None)
            }
        }
    }
}

impl DatagramHandler for DatagramExec {
    async fn handle(&self, packet: &[u8], peer: &PeerAddr, socket: &Datagram) -> io::Result<()> {
        if !self.admits(peer, packet) {
            debug!(%peer, "datagram exec: not answered (service port, rate or loop)");
            return Ok(());
        }
        let info = ConnInfo::new(peer.clone(), socket.local_addr()?, self.shutdown.clone());
        match self.run(packet, &info).await? {
            Some(reply) if !reply.is_empty() => {
                socket.send_to(&reply, peer).await?;
            }
            Some(_) => {}
            None => {
                warn!(%peer, timeout = ?self.config.timeout, "datagram exec: command killed at the timeout")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::echo::reflect::LOOP_STREAK;

    fn handler() -> DatagramExec {
        DatagramExec::new(DatagramExecConfig::new(ProcessCommand {
            program: "true".into(),
            args: Vec::new(),
            env: Vec::new(),
        }))
    }

    #[test]
    fn service_ports_and_loops_start_no_command_as_with_udp_echo() {
        let exec = handler();
        let peer = |s: &str| PeerAddr::Inet(s.parse().unwrap());
        assert!(!exec.admits(&peer("127.0.0.1:53"), b"x"));
        assert!(!exec.admits(&peer("127.0.0.1:5353"), b"x"));
        assert!(exec.admits(&peer("127.0.0.1:40000"), b"x"));
        let bouncing = peer("127.0.0.1:40001");
        let answered = (0..1000)
            .take_while(|_| exec.admits(&bouncing, b"ping"))
            .count();
        // The first datagram, then repeats until the streak reaches its limit.
        assert_eq!(answered, LOOP_STREAK as usize);
    }

    #[test]
    fn a_source_off_loopback_is_rate_limited() {
        let exec = handler();
        let peer = |port: u16| PeerAddr::Inet(std::net::SocketAddr::from(([192, 0, 2, 1], port)));
        let admitted = (0..1000u16)
            .filter(|i| exec.admits(&peer(40000 + i), &i.to_be_bytes()))
            .count();
        assert!(
            admitted <= DEFAULT_DATAGRAM_EXEC_RATE as usize + 1,
            "{admitted}"
        );
    }
}
