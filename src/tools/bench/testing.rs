//! Tiny echo servers on port 0 for the bench tests.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::{Addr, BindOptions, Datagram, Listener, Stream};

/// A stream echo server at `addr` (port 0 or a fresh Unix path); returns where it listens.
/// With `corrupt_at`, the byte at that offset of every connection comes back flipped.
pub(super) async fn stream_echo(addr: &str, corrupt_at: Option<u64>) -> Addr {
    let addr: Addr = addr.parse().expect("test address");
    let listener = Listener::bind(&addr, &BindOptions::default())
        .await
        .expect("bind");
    let local = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo_stream(stream, corrupt_at));
        }
    });
    local
}

async fn echo_stream(mut stream: Stream, corrupt_at: Option<u64>) {
    let mut buf = vec![0; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(at) = corrupt_at.filter(|at| (offset..offset + n as u64).contains(at)) {
            buf[(at - offset) as usize] ^= 0xFF;
        }
        offset += n as u64;
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A stream server that accepts and reads but never answers.
pub(super) async fn silent_server() -> Addr {
    let addr: Addr = "127.0.0.1:0".parse().expect("test address");
    let listener = Listener::bind(&addr, &BindOptions::default())
        .await
        .expect("bind");
    let local = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0; 4096];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    local
}

/// A UDP echo server on 127.0.0.1 port 0.
pub(super) async fn udp_echo() -> Addr {
    let addr: Addr = "127.0.0.1:0".parse().expect("test address");
    let socket = Datagram::bind(&addr, &BindOptions::default())
        .await
        .expect("bind");
    let local = socket.local_addr().expect("local addr");
    tokio::spawn(async move {
        let mut buf = vec![0; 65_536];
        while let Ok((n, _, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], &peer).await;
        }
    });
    local
}

/// A loopback TCP address nothing listens on (bound, then released).
pub(super) async fn closed_tcp_port() -> Addr {
    let addr: Addr = "127.0.0.1:0".parse().expect("test address");
    let listener = Listener::bind(&addr, &BindOptions::default())
        .await
        .expect("bind");
    listener.local_addr().expect("local addr")
}
