//! A framed, authenticated request/response service of your own: the lessons' upper-case
//! server again, but each request is a wire-v1 frame (a length, a JSON header, a body), and
//! only clients holding the token get in. The session gate does the way in (pending-handshake
//! caps, TLS if you give it an acceptor, the HMAC challenge-response, refusals); the service
//! only answers authenticated frames.
//!
//! ```text
//! export SOCKIT_TOKEN=$(head -c 32 /dev/urandom | xxd -p -c 64)
//! cargo run --example framed_auth -- serve 9000
//! cargo run --example framed_auth -- ask 127.0.0.1:9000 hello   # prints HELLO
//! ```

use std::io;

use serde::{Deserialize, Serialize};
use sockit::engine::{serve, shutdown_on_signals, Config, ConnInfo};
use sockit::net::{Addr, BindOptions, Listener};
use sockit::session::{
    self, load_token, ClientOptions, FramedService, GateConfig, Gated, ServerStream, SessionConfig,
};
use sockit::wire::{Connection, Limits, Message, WireError, MAX_HEADER_BYTES};

/// The service name clients ask for in their hello.
const SERVICE: &str = "upper";

/// Largest text either side accepts: a body's size is checked against it before a byte is
/// read or allocated.
const MAX_TEXT_BYTES: u64 = 64 * 1024;

/// The session both sides run: service `upper`, bodies capped at [`MAX_TEXT_BYTES`].
fn session_config() -> SessionConfig {
    SessionConfig {
        limits: Limits {
            max_header: MAX_HEADER_BYTES,
            max_body: MAX_TEXT_BYTES,
        },
        ..SessionConfig::new(SERVICE)
    }
}

/// What a client sends: `{"type":"upper","size":N}` and N bytes of text.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Upper { size: u64 },
}

/// What the server answers: the same, upper-cased.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Reply {
    Upper { size: u64 },
}

impl Message for Request {
    fn body_size(&self) -> u64 {
        let Request::Upper { size } = self;
        *size
    }
}

impl Message for Reply {
    fn body_size(&self) -> u64 {
        let Reply::Upper { size } = self;
        *size
    }
}

/// The service: answers every request of an authenticated session.
struct UpperService;

impl FramedService for UpperService {
    async fn serve(&self, mut conn: Connection<ServerStream>, _info: ConnInfo) -> io::Result<()> {
        // The session's limits cap each body before it is read.
        while let Some(Request::Upper { size }) = conn.read_frame().await.map_err(io_error)? {
            let mut text = read_body(&mut conn, size).await?;
            text.make_ascii_uppercase();
            conn.write_frame(&Reply::Upper { size }, &text)
                .await
                .map_err(io_error)?;
        }
        Ok(())
    }
}

/// The body of the frame just read, `size` bytes (already checked against the session's cap).
async fn read_body<S>(conn: &mut Connection<S>, size: u64) -> io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut body = vec![0u8; usize::try_from(size).map_err(io::Error::other)?];
    let mut filled = 0;
    while filled < body.len() {
        filled += conn
            .read_body_into(&mut body[filled..])
            .await
            .map_err(io_error)?;
    }
    Ok(body)
}

fn io_error(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A client: one request over an authenticated session.
async fn ask(addr: &Addr, text: &str) -> io::Result<String> {
    let options = ClientOptions {
        token: load_token(None).map_err(io::Error::other)?,
        ..ClientOptions::new(session_config())
    };
    let mut conn = session::open(addr, &options)
        .await
        .map_err(io::Error::other)?;
    let size = text.len() as u64;
    conn.write_frame(&Request::Upper { size }, text.as_bytes())
        .await
        .map_err(io_error)?;
    let Some(Reply::Upper { size }) = conn.read_frame().await.map_err(io_error)? else {
        return Err(io::Error::other("the server closed without an answer"));
    };
    let answer = read_body(&mut conn, size).await?;
    String::from_utf8(answer).map_err(io::Error::other)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("framed_auth: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", port] | ["serve", port, ..] => {
            let port: u16 = port.parse().map_err(io::Error::other)?;
            // The token from SOCKIT_TOKEN (never from argv, where `ps` would show it).
            let token = load_token(None)
                .map_err(io::Error::other)?
                .ok_or_else(|| io::Error::other("set SOCKIT_TOKEN"))?;
            let gate = GateConfig::new(session_config(), Some(token));
            let addr = Addr::Inet(([127, 0, 0, 1], port).into());
            let listener = Listener::bind(&addr, &BindOptions::default()).await?;
            eprintln!("listening on {}", listener.local_addr()?);
            let handler = Gated::new(gate, UpperService);
            serve(listener, handler, Config::default(), shutdown_on_signals()?).await
        }
        ["ask", addr, words @ ..] => {
            let addr: Addr = addr.parse()?;
            println!("{}", ask(&addr, &words.join(" ")).await?);
            Ok(())
        }
        _ => Err(io::Error::other(
            "usage: framed_auth serve PORT | framed_auth ask ADDR TEXT...",
        )),
    }
}
