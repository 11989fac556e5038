//! Chat fan-out load: K receivers and S senders in one room of a line-protocol broker
//! (`sockit chat --line-listen`, `ncat --chat` with `raw`, or Redis pub/sub), each sender at
//! most a window of messages ahead of the slowest receiver. Reports deliveries/s and delivery
//! latency.
//!
//! A message is one line, `~S SEQ MICROS` padded with `x` to `size` bytes: the sender, its
//! sequence number, and when it was sent (µs since the load started). A receiver finds the
//! `~` in whatever the broker wrapped around it (`<nick> `, `<user5> `), so both brokers are
//! measured by the same client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::{ensure_fd_limit, keep_first, table_row, BenchError, Latency, IO_TIMEOUT};
use crate::net::{Addr, Stream};

/// Most receivers or senders one load may open.
pub const MAX_CHAT_CLIENTS: usize = 10_000;

/// How the broker's clients join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatProto {
    /// sockit's line protocol: a nick line first, then wait for the join notice.
    Sockit,
    /// No handshake at all (`ncat --chat`).
    Raw,
    /// Redis pub/sub: receivers `SUBSCRIBE chat`, senders `PUBLISH chat PAYLOAD`.
    Redis,
}

/// The Redis channel used by [`ChatProto::Redis`].
const REDIS_CHANNEL: &str = "chat";

/// A chat fan-out load.
#[derive(Debug, Clone)]
pub struct ChatLoad {
    /// The broker's line-protocol address.
    pub addr: Addr,
    /// How clients join.
    pub proto: ChatProto,
    /// Clients that only read.
    pub receivers: usize,
    /// Clients that send (and drain what they are sent).
    pub senders: usize,
    /// Bytes per message, newline excluded (at least what the header needs).
    pub size: usize,
    /// How long senders send.
    pub duration: Duration,
    /// Messages a sender may be ahead of the slowest receiver.
    pub window: u64,
    /// Messages per second per sender: `None` sends as fast as the window allows; `Some`
    /// paces each sender on a fixed schedule (catching up in bursts when it falls behind).
    pub rate: Option<u32>,
}

/// The outcome of [`run_chat`].
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    /// The load's shape.
    pub proto: ChatProto,
    /// Receivers.
    pub receivers: usize,
    /// Senders.
    pub senders: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages sent, all senders together.
    pub sent: u64,
    /// Messages received by receivers (ideally `sent × receivers`).
    pub deliveries: u64,
    /// Deliveries whose sequence number was not the one after the last seen from that sender
    /// (a gap, a duplicate or a reordering); 0 when every receiver got every message in order.
    pub out_of_order: u64,
    /// The pacing, messages per second per sender, if any.
    pub rate: Option<u32>,
    /// Seconds from the first send to the last delivery.
    pub elapsed_secs: f64,
    /// Deliveries per second.
    pub deliveries_per_sec: f64,
    /// Median send-to-delivery latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// Slowest delivery, µs.
    pub max_us: u64,
    /// The first error seen.
    pub first_error: Option<String>,
}

impl ChatReport {
    /// A small aligned table for humans.
    pub fn table(&self) -> String {
        let mut out = String::new();
        table_row(
            &mut out,
            "deliveries/s",
            format!("{:.0}", self.deliveries_per_sec),
            "",
        );
        table_row(&mut out, "sent", self.sent, "");
        table_row(&mut out, "deliveries", self.deliveries, "");
        table_row(&mut out, "out of order", self.out_of_order, "");
        table_row(&mut out, "p50", self.p50_us, "µs");
        table_row(&mut out, "p99", self.p99_us, "µs");
        table_row(&mut out, "max", self.max_us, "µs");
        if let Some(e) = &self.first_error {
            table_row(&mut out, "first error", e, "");
        }
        out
    }
}

/// Per sender: the highest sequence number each receiver has seen, and a wakeup.
struct Progress {
    seen: Vec<Vec<AtomicU64>>,
    wake: Vec<Notify>,
}

impl Progress {
    fn slowest(&self, sender: usize) -> u64 {
        self.seen[sender]
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

/// Runs a chat fan-out load.
///
/// # Errors
/// [`BenchError::InvalidLoad`] for an impossible load, [`BenchError::Connect`] when a client
/// cannot join, [`BenchError::FdLimit`] when the clients do not fit the descriptor limit.
pub async fn run_chat(load: &ChatLoad) -> Result<ChatReport, BenchError> {
    let clients = load.receivers + load.senders;
    if load.receivers == 0
        || load.senders == 0
        || clients > MAX_CHAT_CLIENTS
        || load.window == 0
        || load.rate == Some(0)
    {
        return Err(BenchError::InvalidLoad(format!(
            "receivers, senders, window and rate must be at least 1, and at most {MAX_CHAT_CLIENTS} clients"
        )));
    }
    ensure_fd_limit(clients, 1)?;
    // Nicks unique to this load, so a load started while the broker still drops an earlier
    // one's clients does not find its nicks taken.
    static LOADS: AtomicU64 = AtomicU64::new(0);
    let tag = format!(
        "{:x}.{}",
        std::process::id(),
        LOADS.fetch_add(1, Ordering::Relaxed)
    );
    let progress = Arc::new(Progress {
        seen: (0..load.senders)
            .map(|_| (0..load.receivers).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        wake: (0..load.senders).map(|_| Notify::new()).collect(),
    });
    // Timestamps count from `base`; every return, early or not, stops the client tasks.
    let base = Instant::now();
    let stop = CancellationToken::new();
    let _stop_all = stop.clone().drop_guard();
    // Each receiver reads from the moment it is in, so join notices for later clients never
    // pile up unread (`ncat --chat` stalls its accept loop on a client that does not read).
    let mut readers = Vec::with_capacity(load.receivers);
    for r in 0..load.receivers {
        let (lines, _writer) = join(load, &format!("{tag}r{r}"), true).await?;
        let (progress, stop) = (progress.clone(), stop.clone());
        readers.push(tokio::spawn(receive(lines, r, progress, base, stop)));
    }
    let mut senders = Vec::with_capacity(load.senders);
    for i in 0..load.senders {
        let (mut lines, writer) = join(load, &format!("{tag}s{i}"), false).await?;
        // Whatever a sender is sent (its own echo, others' lines) is drained, so it never
        // counts as a slow consumer. It ends with the load, which closes the connection.
        let drain_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    line = lines.next_line() => if !matches!(line, Ok(Some(_))) { break },
                    () = drain_stop.cancelled() => break,
                }
            }
        });
        senders.push(writer);
    }
    let start = base.elapsed();
    let mut writers = Vec::with_capacity(load.senders);
    for (s, writer) in senders.into_iter().enumerate() {
        let (progress, load) = (progress.clone(), load.clone());
        writers.push(tokio::spawn(send(writer, s, progress, load, base, start)));
    }
    let mut sent = 0;
    let mut first_error = None;
    for w in writers {
        match w.await {
            Ok((n, error)) => {
                sent += n;
                if let Some(e) = error {
                    keep_first(&mut first_error, e);
                }
            }
            Err(e) => keep_first(&mut first_error, e),
        }
    }
    // Each sender returned once every receiver had its last message (or a timeout passed).
    stop.cancel();
    let mut latency = Latency::new();
    let (mut deliveries, mut out_of_order, mut last_at) = (0u64, 0u64, Duration::ZERO);
    for r in readers {
        match r.await {
            Ok(stats) => {
                deliveries += stats.count;
                out_of_order += stats.out_of_order;
                last_at = last_at.max(stats.last_at);
                latency.merge(&stats.latency);
            }
            Err(e) => keep_first(&mut first_error, e),
        }
    }
    let summary = latency.summary();
    Ok(ChatReport {
        proto: load.proto,
        receivers: load.receivers,
        senders: load.senders,
        size: load.size,
        sent,
        deliveries,
        out_of_order,
        rate: load.rate,
        elapsed_secs: last_at.saturating_sub(start).as_secs_f64(),
        deliveries_per_sec: match last_at.saturating_sub(start).as_secs_f64() {
            secs if secs > 0.0 => deliveries as f64 / secs,
            _ => 0.0,
        },
        p50_us: summary.p50_us,
        p99_us: summary.p99_us,
        max_us: summary.max_us,
        first_error,
    })
}

type Lines = tokio::io::Lines<BufReader<tokio::io::ReadHalf<Stream>>>;
type Writer = tokio::io::WriteHalf<Stream>;

/// Connects one client and, for sockit, registers `nick` and waits until it is in; for
/// Redis, a receiver subscribes and waits for the confirmation.
async fn join(load: &ChatLoad, nick: &str, receiver: bool) -> Result<(Lines, Writer), BenchError> {
    let connect_err = |source| BenchError::Connect {
        addr: load.addr.clone(),
        source,
    };
    let stream = timeout(IO_TIMEOUT, Stream::connect(&load.addr))
        .await
        .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_err)?;
    let (rd, mut wr) = tokio::io::split(stream);
    let mut lines = BufReader::new(rd).lines();
    let (hello, joined) = match load.proto {
        ChatProto::Raw => return Ok((lines, wr)),
        ChatProto::Redis if !receiver => return Ok((lines, wr)),
        // The subscription count reply, `:1`, ends the confirmation.
        ChatProto::Redis => (format!("SUBSCRIBE {REDIS_CHANNEL}\r\n"), ":".to_owned()),
        ChatProto::Sockit => (format!("{nick}\n"), format!("* {nick} joined")),
    };
    {
        wr.write_all(hello.as_bytes()).await?;
        let wait = async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with(&joined) {
                    return Ok(());
                }
                if line.starts_with('!') || line.starts_with('-') {
                    return Err(std::io::Error::other(line));
                }
            }
            Err(std::io::ErrorKind::UnexpectedEof.into())
        };
        timeout(IO_TIMEOUT, wait)
            .await
            .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
            .map_err(connect_err)?;
    }
    Ok((lines, wr))
}

/// What one receiver saw.
struct Received {
    count: u64,
    out_of_order: u64,
    last_at: Duration,
    latency: Latency,
}

async fn receive(
    mut lines: Lines,
    r: usize,
    progress: Arc<Progress>,
    base: Instant,
    stop: CancellationToken,
) -> Received {
    let mut got = Received {
        count: 0,
        out_of_order: 0,
        last_at: Duration::ZERO,
        latency: Latency::new(),
    };
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
async fn send(
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
    let mut line = String::with_capacity(load.size + 1);
    let interval = load.rate.map(|rate| Duration::from_secs(1) / rate.max(1));
    loop {
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
            timeout(IO_TIMEOUT, progress.wake[s].notified())
                .await
                .map_err(|_| std::io::Error::other("receivers stopped making progress"))?;
        }
        line.clear();
        let now = u64::try_from(base.elapsed().as_micros()).unwrap_or(u64::MAX);
        line.push_str(&format!("~{s} {next} {now} "));
        while line.len() < load.size {
            line.push('x');
        }
        if load.proto == ChatProto::Redis {
            let payload = std::mem::take(&mut line);
            line = format!(
                "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{REDIS_CHANNEL}\r\n${}\r\n{payload}\r\n",
                REDIS_CHANNEL.len(),
                payload.len()
            );
        } else {
            line.push('\n');
        }
        writer.write_all(line.as_bytes()).await?;
        *seq = next;
    }
    // Wait (bounded) until every receiver has the last message.
    let last = *seq;
    let wait = async {
        while progress.slowest(s) < last {
            progress.wake[s].notified().await;
        }
    };
    timeout(IO_TIMEOUT, wait)
        .await
        .map_err(|_| std::io::Error::other("receivers did not get every message in time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{BindOptions, Listener};
    use crate::server::{serve, Config};
    use crate::service::chat::{Broker, BrokerConfig, LineConfig, LineServer, RateLimit};

    #[test]
    fn the_payload_is_found_inside_any_broker_wrapping() {
        assert_eq!(parse("<r1> ~3 17 12345 xxxx"), Some((3, 17, 12345)));
        assert_eq!(parse("<user5> ~0 1 9 "), Some((0, 1, 9)));
        assert_eq!(parse("* r1 joined #lobby"), None);
    }

    #[tokio::test]
    async fn every_receiver_gets_every_message_from_a_sockit_broker() {
        let addr: Addr = "127.0.0.1:0".parse().expect("addr");
        let listener = Listener::bind(&addr, &BindOptions::default())
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let line = LineConfig {
            rate: RateLimit {
                per_sec: 1_000_000,
                burst: 1_000_000,
            },
            ..LineConfig::default()
        };
        let handler = LineServer::new(Broker::new(BrokerConfig::default()), line);
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            handler,
            Config::default(),
            shutdown.clone(),
        ));
        let load = ChatLoad {
            addr,
            proto: ChatProto::Sockit,
            receivers: 3,
            senders: 2,
            size: 32,
            duration: Duration::from_millis(200),
            window: 10,
            rate: None,
        };
        let report = run_chat(&load).await.expect("runs");
        assert!(report.sent > 0);
        assert_eq!(report.deliveries, report.sent * 3, "{report:?}");
        assert_eq!(report.out_of_order, 0, "{report:?}");
        assert_eq!(report.first_error, None);

        // Paced: 200 messages/s for 300 ms is 60 messages, no more, all in order.
        let paced = ChatLoad {
            rate: Some(200),
            duration: Duration::from_millis(300),
            senders: 1,
            ..load
        };
        let report = run_chat(&paced).await.expect("runs");
        assert_eq!(report.sent, 60, "{report:?}");
        assert_eq!(report.deliveries, 60 * 3, "{report:?}");
        assert_eq!(report.out_of_order, 0, "{report:?}");
        shutdown.cancel();
    }
}
