//! Bench peer, not part of the product: the minimal hand-written tokio echo server that marks
//! the runtime's practical limit in `bench/compare.sh`. One task per connection, a 64 KiB
//! buffer each, read then write_all; UDP with `--udp`. Prints its address on stdout.
//!
//! `cargo run --release --example tokio_echo -- [--udp] [ADDR]`

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let udp = args.iter().any(|a| a == "--udp");
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or("127.0.0.1:0", String::as_str);
    if udp {
        let socket = UdpSocket::bind(addr).await?;
        println!("{}", socket.local_addr()?);
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, peer) = socket.recv_from(&mut buf).await?;
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    }
    // The same backlog sockit uses (TcpListener::bind would give 128), so hold runs compare
    // servers, not accept queues.
    let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener: TcpListener = socket.listen(1024)?;
    println!("{}", listener.local_addr()?);
    loop {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
