//! The line protocol, for `nc`, `telnet` and five-line Python clients: the first line is the
//! nick, then one message or `/command` per line; the server answers in plain text lines.
//!
//! No authentication (nothing a plain socket client could do), so `sockit chat serve` binds it
//! only where asked and warns beyond loopback. Lines are capped at [`MAX_LINE_BYTES`]: a longer
//! one is dropped whole, with a notice; invalid UTF-8 is replaced, not fatal.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::broker::{Broker, Control};
use super::messages::ServerMessage;
use super::outbox::{Delivery, Outbox, QueueLimits};
use super::pump::{farewell, pump, write_line, Dispatcher, Ending};
use super::rate::RateLimit;
use super::{parse_line, MAX_MESSAGE_BYTES};
use crate::engine::{Conn, ConnInfo, Handler};
use crate::wire::ErrorFrame;

/// Longest line, in bytes: a whole message plus room for `/msg NICK `.
pub(crate) const MAX_LINE_BYTES: usize = MAX_MESSAGE_BYTES + 64;
/// Nick attempts before the server gives up on a connection.
pub(crate) const MAX_NICK_ATTEMPTS: usize = 5;
/// Time a new connection has to choose an acceptable nick.
pub(crate) const NICK_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Settings of the line protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineConfig {
    /// Per-connection rate limit.
    pub rate: RateLimit,
    /// Per-connection outbound queue limits.
    pub queue: QueueLimits,
    /// Time to choose a nick.
    pub nick_timeout: Duration,
}

impl Default for LineConfig {
    fn default() -> Self {
        LineConfig {
            rate: RateLimit::default(),
            queue: QueueLimits::default(),
            nick_timeout: NICK_TIMEOUT,
        }
    }
}

/// The line protocol's [`Handler`], sharing a [`Broker`] with any other chat listener.
#[derive(Debug, Clone)]
pub struct LineServer {
    broker: Arc<Broker>,
    config: LineConfig,
}

impl LineServer {
    /// A handler feeding `broker`.
    pub fn new(broker: Arc<Broker>, config: LineConfig) -> Self {
        LineServer { broker, config }
    }
}

const GREETING: &str =
    "welcome to sockit chat; send your nick (letters, digits, . _ -; at most 32)";

impl Handler for LineServer {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> io::Result<()> {
        let (rd, mut wr) = tokio::io::split(conn);
        let mut lines = LineReader::new(rd);
        let notice = |text: &str| ServerMessage::Notice {
            time: super::now_ms(),
            room: None,
            text: text.to_owned(),
        };
        write_line(&mut wr, &notice(GREETING)).await?;
        let outbox = Outbox::new(self.config.queue);
        let deadline = Instant::now() + self.config.nick_timeout;
        let mut member = None;
        for _ in 0..MAX_NICK_ATTEMPTS {
            let nick = match timeout_at(deadline, lines.next_line()).await {
                Ok(Ok(Some(Line::Text(nick)))) => nick,
                Ok(Ok(Some(Line::TooLong))) => String::new(),
                Ok(Ok(None)) | Ok(Err(_)) => return Ok(()),
                Err(_) => {
                    let refusal = ErrorFrame::new("timeout", "no nick in time; bye");
                    let _ = write_line(&mut wr, &ServerMessage::from(&refusal)).await;
                    return Ok(());
                }
            };
            match self.broker.admit(nick.trim(), None, outbox.clone()).await {
                Ok(m) => {
                    member = Some(m);
                    break;
                }
                Err(refusal) => {
                    write_line(&mut wr, &ServerMessage::from(&refusal)).await?;
                    write_line(&mut wr, &notice("send another nick")).await?;
                }
            }
        }
        let Some(member) = member else {
            let refusal = ErrorFrame::new("too_many_attempts", "too many nicks refused; bye");
            let _ = write_line(&mut wr, &ServerMessage::from(&refusal)).await;
            return Ok(());
        };
        debug!(peer = %info.peer, "line client registered");
        let mut dispatcher = Dispatcher::new(member, outbox.clone(), self.config.rate);
        let bye = farewell(self.config.queue);
        let reading = read_commands(&mut dispatcher, &mut lines);
        let reason = pump(
            &outbox,
            &mut wr,
            Delivery::line,
            &bye,
            &info.shutdown,
            reading,
        )
        .await;
        dispatcher.member.set_leave_reason(reason);
        tracing::info!(peer = %info.peer, service = "chat-line", reason, "chat client left");
        Ok(())
    }
}

async fn read_commands<R: AsyncRead + Unpin>(
    dispatcher: &mut Dispatcher,
    lines: &mut LineReader<R>,
) -> Ending {
    loop {
        let input = match lines.next_line().await {
            Ok(Some(Line::Text(text))) => match parse_line(&text) {
                Some(parsed) => parsed.map_err(|e| ErrorFrame::new("invalid_command", e)),
                None => continue,
            },
            Ok(Some(Line::TooLong)) => Err(ErrorFrame::new(
                "line_too_long",
                format!(
                    "a line has at most {MAX_LINE_BYTES} bytes; that line was dropped, none of it was sent"
                ),
            )),
            Ok(None) | Err(_) => return Ending::Closed,
        };
        if dispatcher.input(input).await == Control::Quit {
            return Ending::Quit;
        }
    }
}

/// One unit of line input.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A line, without its `\n` or `\r\n`, invalid UTF-8 replaced.
    Text(String),
    /// A line over [`MAX_LINE_BYTES`]; it is being discarded up to its newline.
    TooLong,
}

/// Splits a byte stream into bounded lines.
struct LineReader<R> {
    reader: R,
    buf: BytesMut,
    discarding: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(reader: R) -> Self {
        LineReader {
            reader,
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            discarding: false,
        }
    }

    /// The next line; `None` at EOF (a last line without a newline still counts).
    ///
    /// # Cancel safety
    /// Cancel safe: everything read stays in the buffer.
    async fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if std::mem::take(&mut self.discarding) {
                    continue;
                }
                if pos > MAX_LINE_BYTES {
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(Line::Text(text_of(&line[..pos]))));
            }
            if self.buf.len() > MAX_LINE_BYTES {
                self.buf.clear();
                if !self.discarding {
                    self.discarding = true;
                    return Ok(Some(Line::TooLong));
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK_BYTES / 2 {
                self.buf.reserve(READ_CHUNK_BYTES);
            }
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                let rest = std::mem::take(&mut self.buf);
                if rest.is_empty() || std::mem::take(&mut self.discarding) {
                    return Ok(None);
                }
                return Ok(Some(Line::Text(text_of(&rest))));
            }
        }
    }
}

fn text_of(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: Vec<u8>) -> Vec<Line> {
        let mut reader = LineReader::new(&input[..]);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.expect("reads") {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn lines_split_on_newlines_with_crlf_and_a_last_partial_line() {
        let got = lines_of(b"a\r\nb\n\nc".to_vec()).await;
        let want = ["a", "b", "", "c"].map(|s| Line::Text(s.into()));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn an_overlong_line_is_reported_once_and_discarded() {
        let mut input = vec![b'x'; 1024 * 1024];
        input.extend_from_slice(b"\nnext\n");
        let got = lines_of(input).await;
        assert_eq!(got, [Line::TooLong, Line::Text("next".into())]);
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let got = lines_of(b"a\xff\xfeb\x00\n".to_vec()).await;
        assert_eq!(got, [Line::Text("a\u{fffd}\u{fffd}b\0".into())]);
    }
}
