//! The lessons' upper-case echo on a `socketserver.UDPServer`: `handle` gets each datagram
//! and answers its sender, one datagram at a time (`Mode::Sequential`), with no connection.
//!
//! ```text
//! cargo run --example upper_udp -- 9000
//! nc -u 127.0.0.1 9000
//! ```

use std::io;

use sockit::engine::{serve_datagram, shutdown_on_signals, Config, DatagramHandler, Mode};
use sockit::net::{Addr, BindOptions, Datagram, PeerAddr};

/// `class MyUDPHandler(socketserver.BaseRequestHandler)`.
struct MyUdpHandler;

impl DatagramHandler for MyUdpHandler {
    async fn handle(&self, data: &[u8], client: &PeerAddr, socket: &Datagram) -> io::Result<()> {
        // data, socket = self.request; socket.sendto(data.upper(), self.client_address)
        socket.send_to(&data.to_ascii_uppercase(), client).await?;
        Ok(())
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
    let socket = Datagram::bind(&addr, &BindOptions::default()).await?;
    eprintln!("listening on {}", socket.local_addr()?);
    let config = Config {
        mode: Mode::Sequential,
        ..Config::default()
    };
    // serve_forever(), until Ctrl-C or SIGTERM.
    serve_datagram(socket, MyUdpHandler, config, shutdown_on_signals()?).await
}
