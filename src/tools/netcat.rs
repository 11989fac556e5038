//! The netcat role: `connect` (stdin → socket → stdout) and `listen` (one peer, many with
//! keep-open, or a process per connection with exec), over TCP, UDP and Unix sockets.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod datagram_exec;

pub use datagram_exec::{
    DatagramExec, DatagramExecConfig, DEFAULT_DATAGRAM_EXEC_CONCURRENCY,
    DEFAULT_DATAGRAM_EXEC_RATE, DEFAULT_DATAGRAM_EXEC_TIMEOUT, MAX_DATAGRAM_REPLY_BYTES,
};

use crate::engine::{
    run_process, serve, serve_datagram, Config, Conn, ConnInfo, Handler, IdleTimeout, Mode,
    ProcessCommand,
};
use crate::net::{Addr, BindOptions, Datagram, Listener, PeerAddr, Stream};
use crate::text::TerminalEscaper;

/// Bytes per read from stdin or the socket.
pub(crate) const PUMP_BUFFER_BYTES: usize = 64 * 1024;
/// Largest datagram `connect --udp` sends by default: each stdin read is split into datagrams
/// of at most this many bytes (nc sends 16 KiB, ncat 8 KiB; a read can be up to
/// `PUMP_BUFFER_BYTES` (64 KiB), over UDP's 65,507-byte limit).
pub const DEFAULT_DATAGRAM_SEND_BYTES: usize = 16 * 1024;
/// How long a datagram client waits for more replies after its stdin ends.
pub const DATAGRAM_LINGER: Duration = Duration::from_millis(500);
/// Chunks of stdin queued for keep-open peers; a peer further behind is disconnected.
pub(crate) const BROADCAST_QUEUE_CHUNKS: usize = 1024;

/// Errors of the netcat role, split so the CLI can pick exit codes.
#[derive(Debug, thiserror::Error)]
pub enum NetcatError {
    /// The request cannot be honoured as given (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// A socket or process error (exit code 1).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Where peer bytes go: stdout, escaped when it is a terminal unless `raw`.
struct Output {
    stdout: tokio::io::Stdout,
    escaper: Option<TerminalEscaper>,
}

impl Output {
    fn new(raw: bool) -> Self {
        let escape = !raw && std::io::stdout().is_terminal();
        Output {
            stdout: tokio::io::stdout(),
            escaper: escape.then(TerminalEscaper::default),
        }
    }

    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match &mut self.escaper {
            Some(esc) => {
                let text = esc.push(data);
                self.stdout.write_all(text.as_bytes()).await?;
            }
            None => self.stdout.write_all(data).await?,
        }
        self.stdout.flush().await
    }

    /// Finishes and closes stdout, so whatever reads it sees its end while stdin may still
    /// be sent: fd 1 is pointed at `/dev/null` rather than closed, so no socket opened later
    /// can take its number.
    async fn close(&mut self) -> std::io::Result<()> {
        self.finish().await?;
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        nix::unistd::dup2_stdout(&null).map_err(std::io::Error::from)?;
        Ok(())
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        if let Some(esc) = &mut self.escaper {
            let text = esc.finish();
            self.stdout.write_all(text.as_bytes()).await?;
        }
        self.stdout.flush().await
    }
}

/// How a stream session moves bytes: both ways by default, each direction independent.
#[derive(Debug, Clone, Copy, Default)]
pub struct PumpOptions {
    /// Write peer bytes unescaped even when stdout is a terminal.
    pub raw: bool,
    /// Only send stdin; what the peer sends is read and dropped, and the session ends once
    /// stdin is sent (ncat `--send-only`).
    pub send_only: bool,
    /// Only receive; stdin is never read (ncat `--recv-only`).
    pub recv_only: bool,
    /// End the session this long after the first direction finishes, even if the other has
    /// not (`nc -q`, `socat -t`); `None` waits for both.
    pub quit_after: Option<Duration>,
    /// Close the connection after this long without a byte either way (`ncat -i`).
    pub idle_timeout: Option<Duration>,
    /// Datagram sockets: the largest datagram sent (`None`: [`DEFAULT_DATAGRAM_SEND_BYTES`]).
    pub datagram_bytes: Option<usize>,
    /// Report on stderr which address `connect` reached, and each one that failed (`nc -v`).
    pub verbose: bool,
}

/// Connects to the first of `addrs` that answers (a name's addresses, in the resolver's
/// order, as nc tries them) and pumps stdin to the socket and the socket to stdout.
///
/// Stream sockets: the two directions are independent. Stdin's end half-closes the socket
/// once everything read from stdin is sent, and the socket is still read; the peer's end
/// flushes and closes stdout, and stdin is still sent. It returns when both are done.
/// Datagram sockets (`udp`, to the first address): stdin is sent in datagrams of at most
/// `datagram_bytes`; returns [`DATAGRAM_LINGER`] after stdin ends and replies stop.
/// With `opts.verbose`, each failed address and the one reached are reported on stderr, as
/// `nc -v` does.
///
/// # Errors
/// `Usage` for an empty `addrs`; the last address's connect error, and I/O errors.
pub async fn connect(addrs: &[Addr], udp: bool, opts: PumpOptions) -> Result<(), NetcatError> {
    let Some(first) = addrs.first() else {
        return Err(usage("no address to connect to"));
    };
    if udp {
        let size = opts
            .datagram_bytes
            .unwrap_or(DEFAULT_DATAGRAM_SEND_BYTES)
            .max(1);
        return connect_datagram(first, opts, size).await;
    }
    let mut last_error = None;
    for addr in addrs {
        match Stream::connect(addr).await {
            Ok(stream) => {
                if opts.verbose {
                    eprint_line(&format!("connected to {addr}"));
                }
                pump(stream, opts).await?;
                return Ok(());
            }
            Err(e) => {
                if opts.verbose {
                    eprint_line(&e.to_string());
                }
                last_error = Some(e);
            }
        }
    }
    Err(last_error.map_or_else(|| usage("no address to connect to"), NetcatError::Io))
}

/// One line on stderr; a closed stderr is not the session's problem.
fn eprint_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Pumps stdin → `stream` and `stream` → stdout, each until its end (see [`connect`]).
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    opts: PumpOptions,
) -> std::io::Result<()> {
    let stream = IdleTimeout::optional(stream, opts.idle_timeout);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let upload = async {
        if opts.recv_only {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        tokio::io::copy(&mut stdin, &mut wr).await?;
        // Everything read from stdin is sent: now the peer may see our end.
        wr.shutdown().await
    };
    let download = async {
        let mut out = (!opts.send_only).then(|| Output::new(opts.raw));
        let mut buf = vec![0u8; PUMP_BUFFER_BYTES];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return match &mut out {
                    Some(out) => out.close().await,
                    None => Ok(()),
                };
            }
            if let Some(out) = &mut out {
                out.write(&buf[..n]).await?;
            }
        }
    };
    tokio::pin!(upload, download);
    // The first direction to finish; with --send-only, the upload is the session.
    let rest = tokio::select! {
        res = &mut upload => {
            res?;
            if opts.send_only {
                return Ok(());
            }
            Direction::Download
        }
        res = &mut download => {
            res?;
            if opts.recv_only {
                return Ok(());
            }
            Direction::Upload
        }
    };
    let rest = async {
        match rest {
            Direction::Upload => upload.await,
            Direction::Download => download.await,
        }
    };
    match opts.quit_after {
        None => rest.await,
        Some(grace) => tokio::time::timeout(grace, rest).await.unwrap_or(Ok(())),
    }
}

/// The direction of a session still running after the other finished.
enum Direction {
    Upload,
    Download,
}

async fn connect_datagram(addr: &Addr, opts: PumpOptions, size: usize) -> Result<(), NetcatError> {
    // A Unix datagram client needs a name of its own, or the server could not reply.
    let (local, cleanup) = match addr {
        Addr::Inet(sa) if sa.is_ipv4() => ("0.0.0.0:0".parse().map_err(usage)?, None),
        Addr::Inet(_) => ("[::]:0".parse().map_err(usage)?, None),
        Addr::Unix(_) => {
            let path = std::env::temp_dir().join(format!(
                "sockit-client-{}-{}.sock",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            ));
            (Addr::Unix(path.clone()), Some(path))
        }
    };
    let socket = Datagram::bind(&local, &BindOptions::default()).await?;
    let peer = match addr {
        Addr::Inet(sa) => PeerAddr::Inet(*sa),
        Addr::Unix(p) => PeerAddr::Unix(Some(p.clone())),
    };
    // Connected, so an ICMP port unreachable comes back as an error, as with ncat and socat.
    socket.connect(&peer).await?;
    if opts.verbose {
        // As `nc -uv`: UDP has no handshake, so this says only where datagrams go.
        let kind = match addr {
            Addr::Inet(_) => "udp",
            Addr::Unix(_) => "unix datagram",
        };
        eprint_line(&format!("sending datagrams to {addr} ({kind})"));
    }
    let res = datagram_session(&socket, Some(peer), opts.raw, false, size).await;
    if let Some(path) = cleanup {
        let _ = std::fs::remove_file(path);
    }
    res.map_err(NetcatError::Io)
}

fn usage(e: impl std::fmt::Display) -> NetcatError {
    NetcatError::Usage(e.to_string())
}

/// Exchanges datagrams with `peer` (or, when `None`, with whoever sends first).
async fn datagram_session(
    socket: &Datagram,
    mut peer: Option<PeerAddr>,
    raw: bool,
    listening: bool,
    datagram_bytes: usize,
) -> std::io::Result<()> {
    let mut out = Output::new(raw);
    let mut stdin = tokio::io::stdin();
    let mut inbuf = vec![0u8; PUMP_BUFFER_BYTES];
    let mut netbuf = vec![0u8; crate::engine::Config::default().max_datagram];
    let mut stdin_open = true;
    loop {
        let linger = async {
            match stdin_open || listening {
                true => std::future::pending().await,
                false => tokio::time::sleep(DATAGRAM_LINGER).await,
            }
        };
        tokio::select! {
            res = stdin.read(&mut inbuf), if stdin_open && peer.is_some() => {
                let n = res?;
                if n == 0 {
                    stdin_open = false;
                    continue;
                }
                if let Some(p) = &peer {
                    for datagram in inbuf[..n].chunks(datagram_bytes) {
                        socket.send_to(datagram, p).await.map_err(refused)?;
                    }
                }
            }
            res = socket.recv_from(&mut netbuf) => {
                let (n, truncated, from) = res.map_err(refused)?;
                match &peer {
                    None => {
                        info!(%from, "first datagram; talking to this peer");
                        peer = Some(from);
                    }
                    Some(p) if *p != from => continue,
                    Some(_) => {}
                }
                if truncated {
                    warn!("a datagram longer than {} bytes was cut", netbuf.len());
                }
                out.write(&netbuf[..n]).await?;
            }
            _ = linger => return out.finish().await,
        }
    }
}

/// Says what a refused datagram means: nothing listens at the peer's port.
fn refused(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        return std::io::Error::new(
            e.kind(),
            "connection refused: nothing is listening there (ICMP port unreachable)",
        );
    }
    e
}

/// What `listen` should do.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Where to listen.
    pub addr: Addr,
    /// Datagram socket instead of stream.
    pub udp: bool,
    /// Serve many peers, one after another or at once, until interrupted.
    pub keep_open: bool,
    /// Run this per connection with the socket as stdin/stdout (`Mode::Process`).
    pub exec: Option<ProcessCommand>,
    /// Socket options.
    pub bind: BindOptions,
    /// The engine's limits for keep-open and exec (connections, per source, drain, idle)
    /// and the access lists (`--exec` off loopback requires a non-empty allow list); its
    /// `idle_timeout` is taken from `pump`.
    pub engine: Config,
    /// How a single peer's session moves bytes (`raw` and `idle_timeout` apply in every
    /// mode).
    pub pump: PumpOptions,
}

/// Listens on `opts.addr`: one peer by default, many with `keep_open`, a process per
/// connection with `exec`. Returns when the peer leaves (single) or `shutdown` fires.
///
/// # Errors
/// `Usage` for `exec` on a non-loopback address without an allow list or with `udp`;
/// bind and I/O errors otherwise.
pub async fn listen(opts: ListenOptions, shutdown: CancellationToken) -> Result<(), NetcatError> {
    if opts.exec.is_some() && !opts.addr.is_local() && opts.engine.acl.allow.is_empty() {
        return Err(NetcatError::Usage(format!(
            "refusing --exec on non-loopback address {}: anyone who can reach it could run the \
             command; add --allow CIDR for the peers you trust",
            opts.addr
        )));
    }
    if opts.udp {
        match (&opts.exec, opts.keep_open) {
            (Some(command), true) => {
                return serve_datagram_exec(&opts, command.clone(), shutdown).await
            }
            (Some(_), false) => {
                return Err(usage(
                    "with --udp, --exec runs a command per datagram: add --keep-open",
                ))
            }
            (None, true) => return Err(usage(
                "--keep-open needs a stream socket, or --exec (a command per datagram) with --udp",
            )),
            (None, false) => {}
        }
        let socket = Datagram::bind(&opts.addr, &opts.bind).await?;
        let local = socket.local_addr()?;
        let kind = if matches!(local, Addr::Unix(_)) {
            "unix datagram"
        } else {
            "udp"
        };
        eprint_line(&format!("listening on {local} ({kind})"));
        return tokio::select! {
            res = datagram_session(&socket, None, opts.pump.raw, true, DEFAULT_DATAGRAM_SEND_BYTES) => res.map_err(NetcatError::Io),
            _ = shutdown.cancelled() => Ok(()),
        };
    }
    let listener = Listener::bind(&opts.addr, &opts.bind).await?;
    eprint_line(&format!("listening on {}", listener.local_addr()?));
    let mut config = Config {
        service: "listen".into(),
        idle_timeout: opts.pump.idle_timeout,
        ..opts.engine.clone()
    };
    if let Some(cmd) = opts.exec.clone().filter(|_| opts.keep_open) {
        config.mode = Mode::Process;
        serve(listener, Exec(cmd), config, shutdown).await?;
        return Ok(());
    }
    if opts.keep_open {
        let (tx, _) = broadcast::channel(BROADCAST_QUEUE_CHUNKS);
        let stdin_task = tokio::spawn(broadcast_stdin(tx.clone()));
        let handler = Broadcast {
            stdin: tx,
            output: Arc::new(Mutex::new(())),
            raw: opts.pump.raw,
        };
        let res = serve(listener, handler, config, shutdown).await;
        stdin_task.abort();
        return res.map_err(NetcatError::Io);
    }
    loop {
        let (stream, peer) = tokio::select! {
            res = listener.accept() => res?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        if !config.acl.permits(&peer) {
            warn!(%peer, "denied by access list");
            continue;
        }
        eprint_line(&format!("connection from {peer}"));
        if let Some(cmd) = &opts.exec {
            // One peer, as ncat without --keep-open: its command runs, then listen exits.
            let info = ConnInfo {
                peer,
                local: listener.local_addr()?,
                shutdown: shutdown.clone(),
            };
            let drained = async {
                // Shutdown sends the command SIGTERM; past the drain deadline, dropping the
                // run kills its group.
                shutdown.cancelled().await;
                tokio::time::sleep(config.drain_timeout).await;
            };
            return tokio::select! {
                res = run_process(cmd, stream, &info, opts.pump.idle_timeout) => res.map_err(NetcatError::Io),
                () = drained => Ok(()),
            };
        }
        return tokio::select! {
            res = pump(stream, opts.pump) => res.map_err(NetcatError::Io),
            _ = shutdown.cancelled() => Ok(()),
        };
    }
}

/// `listen --udp --keep-open --exec`: a command per datagram until `shutdown`.
async fn serve_datagram_exec(
    opts: &ListenOptions,
    command: ProcessCommand,
    shutdown: CancellationToken,
) -> Result<(), NetcatError> {
    let socket = Datagram::bind(&opts.addr, &opts.bind).await?;
    eprintln!(
        "listening on {} (udp, a command per datagram)",
        socket.local_addr()?
    );
    let config = Config {
        service: "listen-udp-exec".into(),
        mode: Mode::Concurrent,
        ..opts.engine.clone()
    };
    let handler = DatagramExec::new(DatagramExecConfig::new(command));
    serve_datagram(socket, handler, config, shutdown).await?;
    Ok(())
}

/// `--exec`: the handler exists only in its process form.
struct Exec(ProcessCommand);

impl Handler for Exec {
    async fn handle(&self, _conn: Conn, _info: ConnInfo) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "exec runs only in process mode",
        ))
    }

    fn process_command(&self) -> Option<ProcessCommand> {
        Some(self.0.clone())
    }
}

async fn broadcast_stdin(tx: broadcast::Sender<Bytes>) -> std::io::Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; PUMP_BUFFER_BYTES];
    loop {
        let n = stdin.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // No receivers is fine: nobody is connected yet.
        let _ = tx.send(Bytes::copy_from_slice(&buf[..n]));
    }
}

/// `--keep-open` without exec: stdin goes to every peer, every peer's bytes to stdout.
struct Broadcast {
    stdin: broadcast::Sender<Bytes>,
    /// Serialises peers' output so chunks do not interleave mid-write.
    output: Arc<Mutex<()>>,
    raw: bool,
}

impl Handler for Broadcast {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> std::io::Result<()> {
        eprint_line(&format!("connection from {}", info.peer));
        let mut from_stdin = self.stdin.subscribe();
        let (mut rd, mut wr) = tokio::io::split(conn);
        let mut out = Output::new(self.raw);
        let mut buf = vec![0u8; PUMP_BUFFER_BYTES];
        loop {
            tokio::select! {
                n = rd.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return out.finish().await;
                    }
                    let _guard = self.output.lock().await;
                    out.write(&buf[..n]).await?;
                }
                chunk = from_stdin.recv() => match chunk {
                    Ok(chunk) => wr.write_all(&chunk).await?,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Err(std::io::Error::other(format!("peer fell {n} chunks behind stdin")));
                    }
                    // The handler holds a sender, so the channel outlives every peer.
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = info.shutdown.cancelled() => return Ok(()),
            }
        }
    }
}
