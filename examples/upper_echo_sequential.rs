//! The lessons' `MyHandler` upper-case echo on a plain `socketserver.TCPServer`: one client
//! at a time (`Mode::Sequential`), while up to 5 more wait, connected, in the listen backlog
//! (`request_queue_size = 5`, the lessons' "semi-connection pool" of `listen(5)`).
//!
//! ```text
//! cargo run --example upper_echo_sequential -- 9000
//! nc 127.0.0.1 9000     # served
//! nc 127.0.0.1 9000     # waits until the first one leaves
//! ```

use std::io;

use sockit::engine::{serve, shutdown_on_signals, Config, Conn, ConnInfo, Handler, Mode};
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
    let options = BindOptions {
        backlog: 5, // listen(5)
        ..BindOptions::default()
    };
    let listener = Listener::bind(&addr, &options).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let config = Config {
        mode: Mode::Sequential,
        ..Config::default()
    };
    // serve_forever(), until Ctrl-C or SIGTERM.
    serve(listener, MyHandler, config, shutdown_on_signals()?).await
}
