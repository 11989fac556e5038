//! The client half: [`put`] files and trees, [`get`] them back, [`list`] a directory. Each
//! command is one authenticated connection over which requests are pipelined.

mod ahead;
mod get;
mod put;
mod walk;

use std::time::Duration;

use super::error::{FilesError, Rejection};
use super::messages::{ClientMessage, Entry, Kind, ServerMessage};
use super::store::{MAX_LISTING_ENTRIES, MAX_LISTING_PATH_BYTES, MAX_PATH_BYTES};
use super::transfer::CHUNK_BYTES;
use crate::net::tls::TlsConnector;
use crate::net::Addr;
use crate::session::{self, ClientConnection, ClientOptions, Token};
use crate::wire::{Connection, ErrorFrame};

pub use get::{get, GetOptions, GetReport};

pub use put::{put, PutOptions, PutReport};

/// Files at least this large are probed first, so an interrupted transfer resumes; smaller
/// ones are pushed without waiting for anything.
pub const RESUME_PROBE_MIN_BYTES: u64 = 8 * 1024 * 1024;

/// Most requests sent and not yet answered: the server's answers are read concurrently, so
/// they never back up against the client's writes, and this bounds the bookkeeping.
pub(crate) const WINDOW_REQUESTS: usize = 2048;

/// A client connection that makes no progress for this long is given up.
pub(crate) const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The stream a client command runs over.
type ConnStream = crate::engine::IdleTimeout<crate::session::ClientStream>;

/// A client command's connection.
type ClientConn = ClientConnection;

/// Where a file server is and how to reach it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The server's address.
    pub addr: Addr,
    /// The token, if the server requires one (off loopback it does).
    pub token: Option<Token>,
    /// TLS and the server certificate to trust; `None` for plaintext.
    pub tls: Option<TlsConnector>,
}

impl Remote {
    /// A plaintext, token-less server at `addr` (loopback file servers may run so).
    pub fn new(addr: Addr) -> Self {
        Remote {
            addr,
            token: None,
            tls: None,
        }
    }

    /// How to open a session with this server.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            token: self.token.clone(),
            tls: self.tls.clone(),
            idle_timeout: Some(CLIENT_IDLE_TIMEOUT),
            ..ClientOptions::new(super::session_config())
        }
    }

    /// Connects, runs TLS if asked and the session handshake.
    async fn open(&self) -> Result<ClientConn, FilesError> {
        let mut conn = session::open(&self.addr, &self.client_options()).await?;
        conn.set_read_buffer_bytes(CHUNK_BYTES);
        Ok(conn)
    }
}

/// How one file or directory of a `put` or `get` went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The local path (escaped for display).
    pub local: String,
    /// The remote path (escaped for display).
    pub remote: String,
    /// A file or a directory.
    pub kind: Kind,
    /// The file's size.
    pub size: u64,
    /// Body bytes that crossed the wire for it (less than `size` after a resume).
    pub transferred: u64,
    /// The name it was stored under (escaped), or why it failed.
    pub result: Result<String, Rejection>,
    /// The receiving side already held these very bytes under that name (same size and
    /// digest), so nothing was written there.
    pub unchanged: bool,
}

/// Lists one directory level of the server (`""` is the root).
///
/// # Errors
/// [`FilesError::Rejected`] if the server refuses (no such directory, write-only server, …),
/// or any connection error.
pub async fn list(remote: &Remote, dir: &str) -> Result<Vec<Entry>, FilesError> {
    let mut conn = remote.open().await?;
    let path = dir.trim_matches('/').to_owned();
    conn.write_frame(&ClientMessage::List { path }, &[]).await?;
    let entries = read_entries(&mut conn).await?;
    let _ = tokio::io::AsyncWriteExt::shutdown(conn.get_mut()).await;
    entries.map_err(FilesError::Rejected)
}

/// Reads `entries` frames up to `listed`; `Ok(Err(..))` when the server rejected the request.
/// A listing is held whole, so it is bounded as the server bounds its own: at most
/// [`MAX_LISTING_ENTRIES`] entries, each path at most [`MAX_PATH_BYTES`], all paths together at
/// most [`MAX_LISTING_PATH_BYTES`].
async fn read_entries<S>(
    conn: &mut Connection<S>,
) -> Result<Result<Vec<Entry>, Rejection>, FilesError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut all = Vec::new();
    let mut path_bytes = 0usize;
    loop {
        match conn.read_frame::<ServerMessage>().await? {
            Some(ServerMessage::Entries { entries }) => {
                if all.len() + entries.len() > MAX_LISTING_ENTRIES {
                    return Err(FilesError::Protocol(format!(
                        "the server listed more than {MAX_LISTING_ENTRIES} entries"
                    )));
                }
                for entry in &entries {
                    if entry.path.len() > MAX_PATH_BYTES {
                        return Err(FilesError::Protocol(format!(
                            "the server listed a path longer than {MAX_PATH_BYTES} bytes"
                        )));
                    }
                    path_bytes += entry.path.len();
                }
                if path_bytes > MAX_LISTING_PATH_BYTES {
                    return Err(FilesError::Protocol(format!(
                        "the server listed more than {MAX_LISTING_PATH_BYTES} bytes of paths"
                    )));
                }
                all.extend(entries);
            }
            Some(ServerMessage::Listed { count }) if count == all.len() as u64 => {
                return Ok(Ok(all))
            }
            Some(ServerMessage::Rejected { code, message, .. }) => {
                return Ok(Err(Rejection::from_peer(&code, &message)))
            }
            other => return Err(unexpected(other)),
        }
    }
}

/// The error for a frame that does not fit the conversation.
fn unexpected(frame: Option<ServerMessage>) -> FilesError {
    match frame {
        None => FilesError::Closed,
        Some(ServerMessage::Error { code, message }) => {
            let r = Rejection::from_peer(&code, &message);
            FilesError::Remote(ErrorFrame::new(r.code, r.message))
        }
        Some(other) => FilesError::Protocol(format!("unexpected {} frame", frame_name(&other))),
    }
}

fn frame_name(frame: &ServerMessage) -> &'static str {
    match frame {
        ServerMessage::Partial { .. } => "partial",
        ServerMessage::Stored { .. } => "stored",
        ServerMessage::Rejected { .. } => "rejected",
        ServerMessage::Entries { .. } => "entries",
        ServerMessage::Listed { .. } => "listed",
        ServerMessage::File(_) => "file",
        ServerMessage::End { .. } => "end",
        ServerMessage::Error { .. } => "error",
    }
}

/// Peer or local text made safe for a terminal.
fn shown(text: &str) -> String {
    crate::text::escape_one_line(text, super::store::MAX_PATH_BYTES)
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    fn entry(path: String) -> Entry {
        Entry {
            path,
            kind: Kind::File,
            size: 1,
            mode: 0o644,
            mtime: 0,
        }
    }

    /// What `read_entries` makes of one `entries` frame holding `paths`, then `listed`.
    async fn read_listing(paths: Vec<String>) -> Result<Result<Vec<Entry>, Rejection>, FilesError> {
        let (ours, theirs) = duplex(1 << 20);
        let (mut client, mut server) = (Connection::new(ours), Connection::new(theirs));
        let count = paths.len() as u64;
        let entries = paths.into_iter().map(entry).collect();
        let frames = [
            ServerMessage::Entries { entries },
            ServerMessage::Listed { count },
        ];
        let write = async {
            for frame in &frames {
                server.write_frame(frame, &[]).await.expect("write");
            }
        };
        tokio::join!(write, read_entries(&mut client)).1
    }

    #[tokio::test]
    async fn a_listing_within_the_limits_is_read_whole() {
        let listed = read_listing(vec!["a".into(), "d/b".into()]).await;
        let paths: Vec<String> = listed
            .expect("read")
            .expect("not rejected")
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["a", "d/b"]);
    }

    #[tokio::test]
    async fn a_listed_path_longer_than_any_server_sends_is_a_protocol_error() {
        let listed = read_listing(vec!["x".repeat(MAX_PATH_BYTES + 1)]).await;
        match listed {
            Err(FilesError::Protocol(message)) => {
                assert!(message.contains("path longer than"), "{message}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
}
