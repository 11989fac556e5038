//! `sockit echo`: the echo server over TCP, UDP or Unix sockets, raw or framed.

use anyhow::Context;
use clap::Args;

use super::{EngineArgs, Failure};
use crate::net::{Addr, Datagram, Listener};
use crate::server::{self, serve, serve_datagram, Mode};
use crate::service::echo::{self, Echo, EchoDatagram};
use crate::service::framed_echo::FramedEcho;

/// `sockit echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address: HOST:PORT, [IPv6]:PORT or unix:/path.
    #[arg(long, default_value = "127.0.0.1:7007")]
    pub listen: Addr,
    /// UDP (or Unix datagram) instead of a stream.
    #[arg(long)]
    pub udp: bool,
    /// Upper-case ASCII letters, like the tutorials' server.
    #[arg(long)]
    pub upper: bool,
    /// sequential (one at a time), concurrent (a task each) or process (a child each).
    /// Default: concurrent for streams, sequential (inline) for datagrams.
    #[arg(long)]
    pub mode: Option<Mode>,
    /// Echo wire-v1 frames (length, JSON header, body) instead of raw bytes.
    #[arg(long, conflicts_with_all = ["udp", "upper"])]
    pub framed: bool,
    /// UDP: datagrams answered per second per non-loopback source IP.
    #[arg(long, default_value_t = echo::DEFAULT_UDP_RATE_PER_SOURCE)]
    pub udp_rate: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub engine: EngineArgs,
}

pub(super) async fn run_echo(args: EchoArgs) -> Result<(), Failure> {
    let stream_echo = Echo { upper: args.upper };
    // A process-mode child (see `Echo::process_command`) serves its one connection, and ends.
    if let Some(served) = server::serve_if_child(&stream_echo).await {
        return served.context("echo child").map_err(Failure::from);
    }
    let mode = args.mode.unwrap_or(echo::default_mode(args.udp));
    if args.udp && mode == Mode::Process {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--mode process needs a stream socket: a datagram has no connection to hand a child"
        )));
    }
    let config = args.engine.config("echo", mode);
    let opts = args.engine.bind_options();
    let shutdown = server::shutdown_on_signals().context("cannot install signal handlers")?;
    if args.udp {
        let socket = Datagram::bind(&args.listen, &opts).await.context("echo")?;
        eprintln!(
            "echo listening on {} (udp)",
            socket.local_addr().context("echo")?
        );
        let handler = EchoDatagram::new(args.upper, args.udp_rate, false);
        serve_datagram(socket, handler, config, shutdown)
            .await
            .context("echo")?;
    } else {
        let listener = Listener::bind(&args.listen, &opts).await.context("echo")?;
        eprintln!(
            "echo listening on {}",
            listener.local_addr().context("echo")?
        );
        let served = match args.framed {
            true => serve(listener, FramedEcho, config, shutdown).await,
            false => serve(listener, stream_echo, config, shutdown).await,
        };
        served.context("echo")?;
    }
    Ok(())
}
