//! The lessons' `MyHandler` upper-case echo on a `socketserver.ThreadingTCPServer`:
//! `Mode::Concurrent` runs each client's `handle` in a task of its own, as `ThreadingMixIn`
//! runs it in a thread of its own, so a slow client never holds up the others.
//!
//! ```text
//! cargo run --example upper_echo_threaded -- 9000
//! nc 127.0.0.1 9000
//! ```

use std::io;

use sockit::engine::{serve, shutdown_on_signals, Config, Conn, ConnInfo, Handler, Mode};
use sockit::net::{Addr, BindOptions, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `class MyHandler(socketserver.BaseRequestHandler)`.
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
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|e| io::Error::other(format!("port {arg:?}: {e}")))?,
        None => 0, // any free port
    };
    let addr = Addr::Inet(([127, 0, 0, 1], port).into());
    let listener = Listener::bind(&addr, &BindOptions::default()).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let config = Config {
        mode: Mode::Concurrent,
        ..Config::default()
    };
    // serve_forever(), until Ctrl-C or SIGTERM.
    serve(listener, MyHandler, config, shutdown_on_signals()?).await
}
