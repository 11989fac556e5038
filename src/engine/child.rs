//! A handler written in Rust in `Mode::Process` (`ForkingMixIn`): the engine starts this
//! program again for each connection ([`ProcessCommand::reexec`]), and the copy serves that
//! connection, its stdin, with the same handler ([`serve_if_child`]).

use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpStream, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, Instrument};

use super::{log_outcome, ConnInfo, Handler, IdleTimeout, ProcessCommand};
use crate::net::{Addr, PeerAddr, Stream};

/// Set (to `1`) in the environment of a copy started by [`ProcessCommand::reexec`]: this
/// process serves one connection, on stdin. Removed when the copy starts serving, so nothing
/// the handler runs inherits it.
pub const CHILD_ENV: &str = "SOCKIT_CHILD";

impl ProcessCommand {
    /// The running program again, with this process's arguments and [`CHILD_ENV`] set: the
    /// process form of a handler written in Rust. The program's `main` builds the same handler
    /// from the same arguments and, before anything else, calls [`serve_if_child_blocking`]
    /// (or [`serve_if_child`] from async code), which serves the connection in the copy.
    ///
    /// # Errors
    /// If the path of the running executable cannot be found.
    pub fn reexec() -> io::Result<ProcessCommand> {
        Self::reexec_with(std::env::args_os().skip(1))
    }

    /// [`reexec`](Self::reexec) with other arguments, for a program that serves handlers from
    /// several commands: the copy is started with the command that builds this handler
    /// (`sockit serve` starts echo children as `sockit echo`).
    ///
    /// # Errors
    /// If the path of the running executable cannot be found.
    pub(crate) fn reexec_with<I>(args: I) -> io::Result<ProcessCommand>
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        Ok(ProcessCommand {
            program: std::env::current_exe()?,
            args: args.into_iter().map(Into::into).collect(),
            env: vec![(CHILD_ENV.into(), "1".into())],
        })
    }
}

/// Whether this process is a copy the engine started to serve one connection.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// In a copy started by [`ProcessCommand::reexec`], serves the connection on stdin with
/// `handler` and returns `Some` when it is done; in any other process returns `None` at once.
///
/// The handler gets what it would get in-process: a [`Conn`](super::Conn) with the engine's
/// idle timeout (which the engine set on the socket as `SO_RCVTIMEO`), and a [`ConnInfo`]
/// whose `shutdown` fires when the engine sends SIGTERM at shutdown. Its error is logged as
/// the engine logs it and ends only this connection: `Some(Ok(()))`. `Some(Err(_))` means
/// the connection could not be served at all (stdin is not a stream socket).
///
/// Stdin then reads `/dev/null` and stdout writes to stderr: the connection's only
/// descriptor is the handler's, so dropping it closes the connection as in-process, and a
/// stray `println!` cannot write into the peer's stream.
///
/// # Errors
/// In the returned `Some`, as above.
pub async fn serve_if_child<H: Handler>(handler: &H) -> Option<io::Result<()>> {
    if !is_child() {
        return None;
    }
    // Whatever the handler starts is not a copy the engine started.
    std::env::remove_var(CHILD_ENV);
    Some(serve_stdin(handler).await)
}

/// [`serve_if_child`] for the top of a synchronous `main`, before any runtime exists: the
/// connection is served on a current-thread runtime of its own.
///
/// ```no_run
/// use std::io;
/// use sockit::engine::{serve_if_child_blocking, Conn, ConnInfo, Handler, ProcessCommand};
///
/// struct Hello;
///
/// impl Handler for Hello {
///     async fn handle(&self, mut conn: Conn, _info: ConnInfo) -> io::Result<()> {
///         tokio::io::AsyncWriteExt::write_all(&mut conn, b"hello from a child\n").await
///     }
///
///     fn process_command(&self) -> Option<ProcessCommand> {
///         ProcessCommand::reexec().ok()
///     }
/// }
///
/// fn main() -> io::Result<()> {
///     let handler = Hello;
///     if let Some(served) = serve_if_child_blocking(&handler) {
///         return served;
///     }
///     // Not a child: bind, and serve `handler` with `Mode::Process`.
///     Ok(())
/// }
/// ```
///
/// # Errors
/// In the returned `Some`, as for [`serve_if_child`]; also if called inside a tokio runtime
/// (use [`serve_if_child`] there) or if the runtime cannot be built.
pub fn serve_if_child_blocking<H: Handler>(handler: &H) -> Option<io::Result<()>> {
    if !is_child() {
        return None;
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        return Some(Err(io::Error::other(
            "serve_if_child_blocking inside a tokio runtime: await serve_if_child instead",
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve_if_child(handler)),
        Err(e) => Some(Err(e)),
    }
}

async fn serve_stdin<H: Handler>(handler: &H) -> io::Result<()> {
    let (stream, idle) = take_stdin_socket()?;
    let (peer, local) = match addrs_from_env() {
        Some(addrs) => addrs,
        None => (stream.peer_addr()?, stream.local_addr()?),
    };
    let info = ConnInfo::new(peer, local, shutdown_on_sigterm()?);
    let span = info_span!("conn", peer = %info.peer, pid = std::process::id());
    async {
        debug!("serving as a process-mode child");
        let conn = IdleTimeout::optional(stream, idle);
        log_outcome(&handler.handle(conn, info).await);
    }
    .instrument(span)
    .await;
    Ok(())
}

/// The socket the engine gave as stdin, as a stream of its own, and the idle timeout the
/// engine set on it. Stdin and stdout are pointed elsewhere (see [`serve_if_child`]).
fn take_stdin_socket() -> io::Result<(Stream, Option<Duration>)> {
    let socket = Socket::from(io::stdin().as_fd().try_clone_to_owned()?);
    let not_served = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("stdin is {what}, not a connection: {CHILD_ENV} is set by the engine's process mode"),
        )
    };
    let domain = match socket.local_addr() {
        Ok(addr) => addr.domain(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => return Err(not_served("no socket")),
        Err(e) => return Err(e),
    };
    if socket.r#type()? != Type::STREAM {
        return Err(not_served("not a stream socket"));
    }
    let idle = socket.read_timeout()?.filter(|d| !d.is_zero());
    let null = std::fs::File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(io::stderr())?;
    socket.set_nonblocking(true)?;
    let stream = match domain {
        Domain::UNIX => Stream::Unix(UnixStream::from_std(socket.into())?),
        Domain::IPV4 | Domain::IPV6 => Stream::Tcp(TcpStream::from_std(socket.into())?),
        _ => return Err(not_served("a socket of another family")),
    };
    Ok((stream, idle))
}

/// The peer and local addresses from the variables the engine sets ([`super::command_env`]);
/// `None` if they are missing (a child started by hand), and the socket is asked instead.
fn addrs_from_env() -> Option<(PeerAddr, Addr)> {
    let var = |name: &str| std::env::var_os(name);
    let inet = |addr: &str, port: &str| -> Option<SocketAddr> {
        let ip: IpAddr = var(addr)?.to_str()?.parse().ok()?;
        let port: u16 = var(port)?.to_str()?.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    };
    match var("SOCKIT_PROTO")?.to_str()? {
        "TCP" => Some((
            PeerAddr::Inet(inet("SOCKIT_REMOTE_ADDR", "SOCKIT_REMOTE_PORT")?),
            Addr::Inet(inet("SOCKIT_LOCAL_ADDR", "SOCKIT_LOCAL_PORT")?),
        )),
        "UNIX" => {
            let remote = var("SOCKIT_REMOTE_ADDR")?;
            let peer = (!remote.is_empty()).then(|| PathBuf::from(remote));
            Some((
                PeerAddr::Unix(peer),
                Addr::Unix(var("SOCKIT_LOCAL_ADDR")?.into()),
            ))
        }
        _ => None,
    }
}

/// A token cancelled when the engine sends SIGTERM, as it does at shutdown: the handler sees
/// `ConnInfo::shutdown` fire as it would in-process, and past the drain deadline the engine
/// sends SIGKILL.
fn shutdown_on_sigterm() -> io::Result<CancellationToken> {
    let mut term = signal(SignalKind::terminate())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        if term.recv().await.is_some() {
            cancel.cancel();
        }
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reexec_command_is_this_program_with_the_marker() {
        let cmd = ProcessCommand::reexec_with(["echo", "--upper"]).unwrap();
        assert_eq!(cmd.program, std::env::current_exe().unwrap());
        assert_eq!(cmd.args, ["echo", "--upper"]);
        assert_eq!(cmd.env, [(OsString::from(CHILD_ENV), OsString::from("1"))]);
        let own = ProcessCommand::reexec().unwrap();
        assert_eq!(own.args, std::env::args_os().skip(1).collect::<Vec<_>>());
    }

    struct Unused;

    impl Handler for Unused {
        async fn handle(&self, _conn: super::super::Conn, _info: ConnInfo) -> io::Result<()> {
            unreachable!("nothing is served outside a child")
        }
    }

    #[test]
    fn outside_a_child_nothing_is_served() {
        // The test binary was not started by the engine.
        assert!(!is_child());
        assert!(serve_if_child_blocking(&Unused).is_none());
    }
}
