//! `sockit echo`: the echo server over TCP, UDP or Unix sockets, raw or framed.

use anyhow::Context;
use clap::Args;

use tokio_util::sync::CancellationToken;

use super::launch::{
    bind_failure, run_command, stream_transport, Bound, EngineArgs, ServeFuture, ServiceDefaults,
};
use super::Failure;
use sockit::engine::{self, serve, serve_datagram, Mode};
use sockit::net::{Addr, Datagram, Listener};
use sockit::service::echo::{self, Echo, EchoDatagram};
use sockit::service::framed_echo::FramedEcho;

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
    /// UDP: also answer sources on service ports (below 1024, and SSDP, mDNS, CoAP,
    /// memcached), which are refused by default because they answer back and can loop.
    #[arg(long)]
    pub udp_answer_service_ports: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub engine: EngineArgs,
}

pub(super) async fn run_echo(args: EchoArgs) -> Result<(), Failure> {
    let stream_echo = Echo { upper: args.upper };
    // A process-mode child (see `Echo::process_command`) serves its one connection, and ends.
    if let Some(served) = engine::serve_if_child(&stream_echo).await {
        return served.context("echo child").map_err(Failure::from);
    }
    let shutdown = engine::shutdown_on_signals().context("cannot install signal handlers")?;
    let bound = args.bind(&shutdown).await?;
    run_command(vec![bound], shutdown).await
}

impl EchoArgs {
    /// Binds the echo service; it serves until `shutdown` fires.
    ///
    /// # Errors
    /// A usage error for a mode the socket cannot run, or the bind error.
    pub async fn bind(self, shutdown: &CancellationToken) -> Result<Bound, Failure> {
        let mode = self.mode.unwrap_or(echo::default_mode(self.udp));
        if self.udp && mode == Mode::Process {
            return Err(Failure::Usage(anyhow::anyhow!(
                "--mode process needs a stream socket: a datagram has no connection to hand a \
                 child"
            )));
        }
        let config = self.engine.config("echo", mode, ServiceDefaults::default());
        let opts = self.engine.bind_options();
        let shutdown = shutdown.clone();
        let fail = |e| bind_failure("echo", e);
        let unix = matches!(self.listen, Addr::Unix(_));
        let (transport, addr, run): (_, _, ServeFuture) = if self.udp {
            let socket = Datagram::bind(&self.listen, &opts).await.map_err(fail)?;
            let addr = socket.local_addr().map_err(fail)?;
            let handler = EchoDatagram::new(self.upper, self.udp_rate, false)
                .answer_service_ports(self.udp_answer_service_ports);
            let run = Box::pin(serve_datagram(socket, handler, config, shutdown));
            (if unix { "unixgram" } else { "udp" }, addr, run)
        } else {
            let listener = Listener::bind(&self.listen, &opts).await.map_err(fail)?;
            let addr = listener.local_addr().map_err(fail)?;
            let run: ServeFuture = match self.framed {
                true => Box::pin(serve(listener, FramedEcho::default(), config, shutdown)),
                false => {
                    let handler = Echo { upper: self.upper };
                    Box::pin(serve(listener, handler, config, shutdown))
                }
            };
            (stream_transport(&addr, false), addr, run)
        };
        Ok(Bound {
            service: "echo",
            transport,
            label: "echo".into(),
            detail: (transport == "udp").then(|| "(udp)".into()),
            addr,
            notes: Vec::new(),
            run,
        })
    }
}
