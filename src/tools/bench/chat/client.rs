//! What each client of a chat load does: join the room, then receive (recording latency and
//! order) or send (at most a window ahead of the slowest receiver).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::websocket::{self, WsReader, WsWriter};
use super::{ChatLoad, ChatProto, REDIS_CHANNEL};
use crate::net::{Addr, Stream};
use crate::tools::bench::{BenchError, Latency, FINISH_GRACE, IO_TIMEOUT};

/// Per sender: the highest sequence number each receiver has seen, and a wakeup.
pub(super) struct Progress {
    seen: Vec<Vec<AtomicU64>>,
    wake: Vec<Notify>,
}

impl Progress {
    /// Nothing seen yet by any of `receivers` from any of `senders`.
    pub(super) fn new(senders: usize, receivers: usize) -> Self {
        Progress {
            seen: (0..senders)
                .map(|_| (0..receivers).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            wake: (0..senders).map(|_| Notify::new()).collect(),
        }
    }

    fn slowest(&self, sender: usize) -> u64 {
        self.seen[sender]
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::io::ReadHalf<Stream>>>;

/// What a client of the load reads: broker lines, or the browser protocol's messages.
pub(super) enum Reader {
    /// A line protocol (sockit's line port, `ncat --chat`, Redis' RESP lines).
    Lines(Lines),
    /// The chat page's WebSocket.
    Ws(WsReader),
}

impl Reader {
    /// The next line (for a WebSocket, the next message as [`websocket::next_line`] gives
    /// it); `None` at the end.
    ///
    /// # Cancel safety
    /// Cancel safe: a partial line stays buffered, a message is only taken when this returns.
    pub(super) async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        match self {
            Reader::Lines(lines) => lines.next_line().await,
            Reader::Ws(ws) => websocket::next_line(ws).await,
        }
    }
}

/// What a client of the load writes, each in its protocol's framing.
pub(super) enum Writer {
    /// The payload and a newline.
    Line(tokio::io::WriteHalf<Stream>),
    /// `PUBLISH chat PAYLOAD` in RESP.
    Redis(tokio::io::WriteHalf<Stream>),
    /// A `{"type":"line"}` text message.
    Ws(WsWriter),
}

impl Writer {
    /// Sends one message; `buf` is scratch space for the framing.
    async fn send_payload(&mut self, payload: &str, buf: &mut String) -> std::io::Result<()> {
        buf.clear();
        match self {
            Writer::Line(wr) => {
                buf.push_str(payload);
                buf.push('\n');
                wr.write_all(buf.as_bytes()).await
            }
            Writer::Redis(wr) => {
                buf.push_str(&format!(
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{REDIS_CHANNEL}\r\n${}\r\n{payload}\r\n",
                    REDIS_CHANNEL.len(),
                    payload.len()
                ));
                wr.write_all(buf.as_bytes()).await
            }
            Writer::Ws(ws) => websocket::send_line(ws, payload).await,
        }
    }
}

/// Longest broker line quoted in a report.
const QUOTED_LINE_CHARS: usize = 200;

/// The first refusal the broker sent any client of the load (`! slow down…` from sockit,
/// `-ERR …` from Redis), escaped, for the report.
#[derive(Debug, Default)]
pub(super) struct BrokerSaid(std::sync::Mutex<Option<String>>);

impl BrokerSaid {
    /// Keeps `line` if it is a refusal and none was kept yet.
    pub(super) fn note(&self, line: &str) {
        if !(line.starts_with('!') || line.starts_with('-')) {
            return;
        }
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert_with(|| quote(line));
        }
    }

    /// The refusal kept, if any.
    pub(super) fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|slot| slot.clone())
    }
}

/// `line` escaped and cut for a report.
pub(super) fn quote(line: &str) -> String {
    crate::text::escape_one_line(line, QUOTED_LINE_CHARS)
}

/// Connects one client to `addr` and, for sockit (line protocol or WebSocket), registers
/// `nick` and waits until it is in; for Redis, a receiver subscribes and waits for the
/// confirmation.
pub(super) async fn join(
    load: &ChatLoad,
    addr: &Addr,
    nick: &str,
    receiver: bool,
) -> Result<(Reader, Writer), BenchError> {
    if load.proto == ChatProto::WebSocket {
        let (rd, wr) = websocket::join(addr, load.token.as_ref(), nick).await?;
        return Ok((Reader::Ws(rd), Writer::Ws(wr)));
    }
    let connect_err = |source| BenchError::Connect {
        addr: addr.clone(),
        source,
    };
    let stream = timeout(IO_TIMEOUT, Stream::connect(addr))
        .await
        .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_err)?;
    let (rd, mut wr) = tokio::io::split(stream);
    let mut lines = BufReader::new(rd).lines();
    let hello = match load.proto {
        ChatProto::Raw | ChatProto::WebSocket => {
            return Ok((Reader::Lines(lines), Writer::Line(wr)))
        }
        ChatProto::Redis if !receiver => return Ok((Reader::Lines(lines), Writer::Redis(wr))),
        ChatProto::Redis => format!("SUBSCRIBE {REDIS_CHANNEL}\r\n"),
        ChatProto::Sockit => format!("{nick}\n"),
    };
    let handshake = |detail: String| BenchError::Handshake {
        addr: addr.clone(),
        detail,
    };
    wr.write_all(hello.as_bytes()).await.map_err(connect_err)?;
    let mut first_line = None;
    let wait = async {
        while let Some(line) = lines.next_line().await? {
            if joined(load.proto, nick, &line) {
                return Ok(None);
            }
            if line.starts_with('!') || line.starts_with('-') {
                return Ok(Some(quote(&line)));
            }
            first_line.get_or_insert_with(|| quote(&line));
        }
        Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    };
    let other_protocol = match load.proto {
        ChatProto::Redis => "it is not a Redis server",
        _ => "it does not speak sockit chat's line protocol (for `ncat --chat` use --raw, for Redis --redis)",
    };
    match timeout(IO_TIMEOUT, wait).await {
        Ok(Ok(None)) => {
            let writer = match load.proto {
                ChatProto::Redis => Writer::Redis(wr),
                _ => Writer::Line(wr),
            };
            Ok((Reader::Lines(lines), writer))
        }
        Ok(Ok(Some(refusal))) => Err(handshake(format!("it refused the join: {refusal}"))),
        Ok(Err(e)) => Err(handshake(format!(
            "it closed the connection during the join ({e}){}",
            match &first_line {
                Some(line) => format!(" after saying {line:?}"),
                None => String::new(),
            }
        ))),
        Err(_) => Err(handshake(match first_line {
            Some(line) => format!(
                "it did not confirm the join within {IO_TIMEOUT:?} (it said {line:?}): \
                 {other_protocol}"
            ),
            None => format!(
                "it sent nothing within {IO_TIMEOUT:?} of the join request: {other_protocol}"
            ),
        })),
    }
}

/// Whether `line` confirms the join: sockit's `*** NICK joined #room` (or the older
/// `* NICK joined`), Redis's subscription count (`:1`).
fn joined(proto: ChatProto, nick: &str, line: &str) -> bool {
    match proto {
        ChatProto::Redis => line.starts_with(':'),
        _ => {
            let notice = line.trim_start_matches('*');
            notice.len() < line.len() && notice.starts_with(&format!(" {nick} joined"))
        }
    }
}

/// What one receiver saw, or all of them together.
pub(super) struct Received {
    /// Messages delivered.
    pub(super) count: u64,
    /// Deliveries whose sequence number was not the next one from its sender.
    pub(super) out_of_order: u64,
    /// When the last delivery arrived, since the load's base instant.
    pub(super) last_at: Duration,
    /// Send-to-delivery latency.
    pub(super) latency: Latency,
}

impl Received {
    /// Nothing received yet.
    pub(super) fn new() -> Self {
        Received {
            count: 0,
            out_of_order: 0,
            last_at: Duration::ZERO,
            latency: Latency::new(),
        }
    }

    /// Adds what another receiver saw.
    pub(super) fn merge(&mut self, other: &Received) {
        self.count += other.count;
        self.out_of_order += other.out_of_order;
        self.last_at = self.last_at.max(other.last_at);
        self.latency.merge(&other.latency);
    }
}

/// Reads the room until `stop`, recording every message of the load and telling its sender
/// how far this receiver has got.
pub(super) async fn receive(
    mut lines: Reader,
    r: usize,
    progress: Arc<Progress>,
    base: Instant,
    stop: CancellationToken,
    said: Arc<BrokerSaid>,
) -> Received {
    let mut got = Received::new();
    loop {
        // `next_line` is cancel safe: a partial line stays buffered.
        let line = tokio::select! {
            line = lines.next_line() => line,
            () = stop.cancelled() => break,
        };
        let Ok(Some(line)) = line else {
            break;
        };
        let Some((s, seq, sent_us)) = parse(&line) else {
            said.note(&line);
            continue;
        };
        let now = base.elapsed();
        got.count += 1;
        got.last_at = now;
        got.latency
            .record(now.saturating_sub(Duration::from_micros(sent_us)));
        if let Some(seen) = progress.seen.get(s).and_then(|v| v.get(r)) {
            // Only this receiver writes its own slot, so the last value is its own.
            // `seq` comes from the server's line: compared without overflowing.
            if seen.load(Ordering::Relaxed).checked_add(1) != Some(seq) {
                got.out_of_order += 1;
            }
            seen.store(seq, Ordering::Release);
            progress.wake[s].notify_one();
        }
    }
    got
}

/// `~S SEQ MICROS xxx…` anywhere in the line (for Redis, the bulk-string line of a
/// `message` push).
fn parse(line: &str) -> Option<(usize, u64, u64)> {
    let (_, rest) = line.split_once('~')?;
    let mut words = rest.split(' ');
    let s = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let us = words.next()?.parse().ok()?;
    Some((s, seq, us))
}

/// Sends until the duration is up; returns how many messages went out, and why it stopped
/// early if it did.
pub(super) async fn send(
    writer: Writer,
    s: usize,
    progress: Arc<Progress>,
    load: ChatLoad,
    base: Instant,
    start: Duration,
) -> (u64, Option<std::io::Error>) {
    let mut seq = 0u64;
    let result = send_until(writer, s, &progress, &load, base, start, &mut seq).await;
    (seq, result.err())
}

async fn send_until(
    mut writer: Writer,
    s: usize,
    progress: &Progress,
    load: &ChatLoad,
    base: Instant,
    start: Duration,
    seq: &mut u64,
) -> std::io::Result<()> {
    let begin = base + start;
    let end = begin + load.duration;
    let mut payload = String::with_capacity(load.size);
    let mut framed = String::with_capacity(load.size + 64);
    let interval = load.rate.map(|rate| Duration::from_secs(1) / rate.max(1));
    'sending: loop {
        let next = *seq + 1;
        if let Some(interval) = interval {
            // Message `next` is due at `(next - 1) × interval`; a late sender catches up, so
            // the count is exactly what the rate and duration say.
            let due = interval.saturating_mul(u32::try_from(*seq).unwrap_or(u32::MAX));
            if due >= load.duration {
                break;
            }
            tokio::time::sleep_until((begin + due).into()).await;
        } else if begin.elapsed() >= load.duration {
            break;
        }
        while progress.slowest(s).saturating_add(load.window) < next {
            // Waits at most IO_TIMEOUT for receivers, and never past the load's end.
            let stalled = Instant::now() + IO_TIMEOUT;
            let woke =
                tokio::time::timeout_at(stalled.min(end).into(), progress.wake[s].notified()).await;
            if woke.is_err() {
                if stalled < end {
                    return Err(std::io::Error::other(format!(
                        "receivers got nothing new for {IO_TIMEOUT:?}"
                    )));
                }
                break 'sending;
            }
        }
        payload.clear();
        let now = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
        payload.push_str(&format!("~{s} {next} {now} "));
        while payload.len() < load.size {
            payload.push('x');
        }
        writer.send_payload(&payload, &mut framed).await?;
        *seq = next;
    }
    // Wait until every receiver has the last message, at most FINISH_GRACE past the end.
    let last = *seq;
    let wait = async {
        while progress.slowest(s) < last {
            progress.wake[s].notified().await;
        }
    };
    let cutoff = Instant::now().max(end) + FINISH_GRACE;
    tokio::time::timeout_at(cutoff.into(), wait)
        .await
        .map_err(|_| {
            std::io::Error::other(format!(
                "receivers did not get every message within {FINISH_GRACE:?} of the end"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_found_inside_any_broker_wrapping() {
        assert_eq!(parse("<r1> ~3 17 12345 xxxx"), Some((3, 17, 12345)));
        assert_eq!(parse("<user5> ~0 1 9 "), Some((0, 1, 9)));
        assert_eq!(parse("* r1 joined #lobby"), None);
    }

    #[test]
    fn a_join_is_confirmed_only_by_the_broker_notice_for_this_nick() {
        assert!(joined(ChatProto::Sockit, "r1", "*** r1 joined #lobby"));
        assert!(joined(ChatProto::Sockit, "r1", "* r1 joined #lobby"));
        assert!(!joined(ChatProto::Sockit, "r1", "*** r10 joined #lobby"));
        assert!(!joined(ChatProto::Sockit, "r1", "<r1> joined"));
        assert!(joined(ChatProto::Redis, "r1", ":1"));
    }
}
