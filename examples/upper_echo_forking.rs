//! The lessons' `MyHandler` upper-case echo on a `socketserver.ForkingTCPServer`
//! (`ForkingMixIn`): each client is served by a process of its own (`Mode::Process`). A tokio
//! program cannot `fork()`, so the engine starts this program again for each client, and
//! `main` hands that copy's one connection to the same `MyHandler`.
//!
//! `cargo run --example upper_echo_forking -- 9000`, then `nc 127.0.0.1 9000` (`pgrep -P`
//! the server's pid: one child per client).

use std::io;

use sockit::engine::{
    serve, serve_if_child_blocking, shutdown_on_signals, Config, Conn, ConnInfo, Handler, Mode,
    ProcessCommand,
};
use sockit::net::{Addr, BindOptions, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `class MyHandler(socketserver.BaseRequestHandler)`, as in `upper_echo_threaded`.
struct MyHandler;

impl Handler for MyHandler {
    async fn handle(&self, mut conn: Conn, _info: ConnInfo) -> io::Result<()> {
        let mut data = [0u8; 1024];
        loop {
            let n = conn.read(&mut data).await?; // data = self.request.recv(1024)
            if n == 0 {
                return Ok(()); // if not data: break
            }
            conn.write_all(&data[..n].to_ascii_uppercase()).await?; // sendall(data.upper())
        }
    }

    /// The "fork": this program again, with the same arguments.
    fn process_command(&self) -> Option<ProcessCommand> {
        ProcessCommand::reexec().ok()
    }
}

fn main() -> io::Result<()> {
    let handler = MyHandler;
    // In a copy started for one client: serve it (the socket is stdin), then exit.
    if let Some(served) = serve_if_child_blocking(&handler) {
        return served;
    }
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|e| io::Error::other(format!("port {arg:?}: {e}")))?,
        None => 0, // any free port
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        let addr = Addr::Inet(([127, 0, 0, 1], port).into());
        let listener = Listener::bind(&addr, &BindOptions::default()).await?;
        eprintln!("listening on {}", listener.local_addr()?);
        let config = Config {
            mode: Mode::Process,
            ..Config::default()
        };
        // serve_forever(), until Ctrl-C or SIGTERM.
        serve(listener, handler, config, shutdown_on_signals()?).await
    })
}
