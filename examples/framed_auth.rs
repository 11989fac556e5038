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
use sockit::wire::{Connection, Message, WireError};

/// The service name clients ask for in their hello.
const SERVICE: &str = "upper";

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
        // The session's limits (SessionConfig::limits) cap each body before it is read.
        while let Some(Request::Upper { size }) = conn.read_frame().await.map_err(io_error)? {
            let mut text = vec![0u8; usize::try_from(size).map_err(io::Error::other)?];
            let mut filled = 0;
            while filled < text.len() {
                filled += conn
                    .read_body_into(&mut text[filled..])
                    .await
                    .map_err(io_error)?;
            }
            text.make_ascii_uppercase();
            conn.write_frame(&Reply::Upper { size }, &text)
                .await
                .map_err(io_error)?;
        }
        Ok(())
    }
}

fn io_error(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A client: one request over an authenticated session.
async fn ask(addr: &Addr, text: &str) -> io::Result<String> {
    let options = ClientOptions {
        token: load_token(None).map_err(io::Error::other)?,
        ..ClientOptions::new(SessionConfig::new(SERVICE))
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
    let mut answer = vec![0u8; usize::try_from(size).map_err(io::Error::other)?];
    let mut filled = 0;
    while filled < answer.len() {
        filled += conn
            .read_body_into(&mut answer[filled..])
            .await
            .map_err(io_error)?;
    }
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
            let gate = GateConfig::new(SessionConfig::new(SERVICE), Some(token));
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
