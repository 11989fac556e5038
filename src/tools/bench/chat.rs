//! Chat fan-out load: K receivers and S senders in one room of a chat broker (sockit's line
//! port or its browser WebSocket, `ncat --chat` with `raw`, or Redis pub/sub), spread
//! round-robin over one or more node addresses, each sender at most a window of messages
//! ahead of the slowest receiver. Reports deliveries/s and delivery latency.
//!
//! A message is one line, `~S SEQ MICROS` padded with `x` to `size` bytes: the sender, its
//! sequence number, and when it was sent (µs since the load started). A receiver finds the
//! `~` in whatever the broker wrapped around it (`<nick> `, `<user5> `, a JSON message), so
//! every broker is measured by the same client.
//!
//! `client` is what each connection does (join, receive, send), `websocket` the browser
//! protocol's side of it; this file shapes the load and runs it.

mod client;
mod websocket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::net::Addr;
use crate::session::Token;
use crate::tools::bench::{ensure_fd_limit, keep_first, result_rows, table_row, BenchError};
use client::{join, receive, send, BrokerSaid, Progress, Received, Writer};

/// Most receivers or senders one load may open.
pub(crate) const MAX_CHAT_CLIENTS: usize = 10_000;

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
    /// The chat page's protocol (`sockit chat serve --web-listen`): a WebSocket to
    /// `/chat/ws` with the page's Origin, `register`, then `{"type":"line"}` messages.
    #[serde(rename = "websocket")]
    WebSocket,
}

/// The Redis channel used by [`ChatProto::Redis`].
const REDIS_CHANNEL: &str = "chat";

/// A chat fan-out load.
#[derive(Debug, Clone)]
pub struct ChatLoad {
    /// The broker's addresses (its nodes): client `i` of each kind connects to
    /// `addrs[i % addrs.len()]`. Line-protocol ports, or web listeners for
    /// [`ChatProto::WebSocket`].
    pub addrs: Vec<Addr>,
    /// Sent first when a WebSocket server asks for a token.
    pub token: Option<Token>,
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
    /// Node addresses the clients were spread over.
    pub nodes: usize,
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
    /// The first refusal the broker sent a client during the load (`! slow down…`), escaped.
    pub broker_said: Option<String>,
}

impl ChatReport {
    /// A small aligned table for humans.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let failure = self.failure();
        // A rate over a load that did not complete measures nothing (the first burst only).
        let rate = match failure {
            None => format!("{:.0}", self.deliveries_per_sec),
            Some(_) => "-".to_owned(),
        };
        table_row(&mut out, "deliveries/s", rate, "");
        table_row(&mut out, "sent", self.sent, "");
        table_row(&mut out, "deliveries", self.deliveries, "");
        table_row(&mut out, "out of order", self.out_of_order, "");
        table_row(&mut out, "p50", self.p50_us, "µs");
        table_row(&mut out, "p99", self.p99_us, "µs");
        table_row(&mut out, "max", self.max_us, "µs");
        table_row(
            &mut out,
            "elapsed",
            format!("{:.3}", self.elapsed_secs),
            "s",
        );
        result_rows(&mut out, failure.as_deref());
        out
    }

    /// Why the load failed, `None` when it did not: nothing sent, deliveries missing
    /// (every receiver must get every message), or a client error; with what the broker
    /// said when it refused messages (sockit's flood control says `! slow down…`).
    pub fn failure(&self) -> Option<String> {
        let expected = self.sent.saturating_mul(self.receivers as u64);
        let mut why = if self.sent == 0 {
            "nothing was sent".to_owned()
        } else if self.deliveries < expected {
            format!(
                "{} of {expected} deliveries did not arrive",
                expected - self.deliveries
            )
        } else if self.first_error.is_some() {
            "a client failed".to_owned()
        } else {
            return None;
        };
        if let Some(said) = &self.broker_said {
            why.push_str(&format!("; the broker said {said:?}"));
            if said.contains("slow down") {
                why.push_str(
                    " (its flood control: pace senders under its limit with --rate, or raise \
                     it with `sockit chat serve --rate N --burst N`)",
                );
            }
        }
        if let Some(e) = &self.first_error {
            why.push_str(&format!("; first error: {e}"));
        }
        Some(why)
    }
}

impl ChatLoad {
    /// Checks the load before anything is opened.
    fn validate(&self) -> Result<(), BenchError> {
        let clients = self.receivers + self.senders;
        if self.addrs.is_empty() {
            return Err(BenchError::InvalidLoad(
                "at least one broker address".to_owned(),
            ));
        }
        if self.receivers == 0
            || self.senders == 0
            || clients > MAX_CHAT_CLIENTS
            || self.window == 0
            || self.rate == Some(0)
        {
            return Err(BenchError::InvalidLoad(format!(
                "receivers, senders, window and rate must be at least 1, and at most {MAX_CHAT_CLIENTS} clients"
            )));
        }
        Ok(())
    }
}

/// Runs a chat fan-out load.
///
/// # Errors
/// [`BenchError::InvalidLoad`] for an impossible load, [`BenchError::Connect`] when a client
/// cannot join, [`BenchError::FdLimit`] when the clients do not fit the descriptor limit.
pub async fn run_chat(load: &ChatLoad) -> Result<ChatReport, BenchError> {
    load.validate()?;
    ensure_fd_limit(load.receivers + load.senders, 1)?;
    let tag = load_tag();
    let progress = Arc::new(Progress::new(load.senders, load.receivers));
    // Timestamps count from `base`; every return, early or not, stops the client tasks.
    let base = Instant::now();
    let stop = CancellationToken::new();
    let _stop_all = stop.clone().drop_guard();
    let said = Arc::new(BrokerSaid::default());
    let readers = join_receivers(load, &tag, &progress, base, &stop, &said).await?;
    let senders = join_senders(load, &tag, &stop, &said).await?;
    let start = base.elapsed();
    let writers = start_sending(senders, &progress, load, base, start);
    let mut first_error = None;
    let sent = total_sent(writers, &mut first_error).await;
    // Each sender returned once every receiver had its last message (or a timeout passed).
    stop.cancel();
    let received = total_received(readers, &mut first_error).await;
    let mut report = report(load, sent, &received, start, first_error);
    report.broker_said = said.get();
    Ok(report)
}

/// A tag unique to this load for its nicks, so a load started while the broker still drops an
/// earlier one's clients does not find its nicks taken.
fn load_tag() -> String {
    static LOADS: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}.{}",
        std::process::id(),
        LOADS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Joins the receivers one by one. Each reads from the moment it is in, so join notices for
/// later clients never pile up unread (`ncat --chat` stalls its accept loop on a client that
/// does not read).
async fn join_receivers(
    load: &ChatLoad,
    tag: &str,
    progress: &Arc<Progress>,
    base: Instant,
    stop: &CancellationToken,
    said: &Arc<BrokerSaid>,
) -> Result<Vec<JoinHandle<Received>>, BenchError> {
    let mut readers = Vec::with_capacity(load.receivers);
    for r in 0..load.receivers {
        let addr = &load.addrs[r % load.addrs.len()];
        let (lines, _writer) = join(load, addr, &format!("{tag}r{r}"), true).await?;
        let (progress, stop, said) = (progress.clone(), stop.clone(), said.clone());
        readers.push(tokio::spawn(receive(lines, r, progress, base, stop, said)));
    }
    Ok(readers)
}

/// Joins the senders one by one; whatever a sender is sent (its own echo, others' lines) is
/// drained, so it never counts as a slow consumer. The drain ends with the load, which closes
/// the connection.
async fn join_senders(
    load: &ChatLoad,
    tag: &str,
    stop: &CancellationToken,
    said: &Arc<BrokerSaid>,
) -> Result<Vec<Writer>, BenchError> {
    let mut senders = Vec::with_capacity(load.senders);
    for i in 0..load.senders {
        let addr = &load.addrs[i % load.addrs.len()];
        let (mut lines, writer) = join(load, addr, &format!("{tag}s{i}"), false).await?;
        let drain_stop = stop.clone();
        let said = said.clone();
        tokio::spawn(async move {
            loop {
                // `next_line` is cancel safe: a partial line stays buffered.
                let line = tokio::select! {
                    line = lines.next_line() => line,
                    () = drain_stop.cancelled() => break,
                };
                let Ok(Some(line)) = line else {
                    break;
                };
                said.note(&line);
            }
        });
        senders.push(writer);
    }
    Ok(senders)
}

/// Starts every sender, timed from `start` (since `base`).
fn start_sending(
    senders: Vec<Writer>,
    progress: &Arc<Progress>,
    load: &ChatLoad,
    base: Instant,
    start: Duration,
) -> Vec<JoinHandle<(u64, Option<std::io::Error>)>> {
    let mut writers = Vec::with_capacity(load.senders);
    for (s, writer) in senders.into_iter().enumerate() {
        let (progress, load) = (progress.clone(), load.clone());
        writers.push(tokio::spawn(send(writer, s, progress, load, base, start)));
    }
    writers
}

/// Waits for every sender; returns how many messages went out, keeping the first error.
async fn total_sent(
    writers: Vec<JoinHandle<(u64, Option<std::io::Error>)>>,
    first_error: &mut Option<String>,
) -> u64 {
    let mut sent = 0;
    for w in writers {
        match w.await {
            Ok((n, error)) => {
                sent += n;
                if let Some(e) = error {
                    keep_first(first_error, e);
                }
            }
            Err(e) => keep_first(first_error, e),
        }
    }
    sent
}

/// Waits for every receiver (once stopped); returns what they saw together, keeping the first
/// error.
async fn total_received(
    readers: Vec<JoinHandle<Received>>,
    first_error: &mut Option<String>,
) -> Received {
    let mut total = Received::new();
    for r in readers {
        match r.await {
            Ok(stats) => total.merge(&stats),
            Err(e) => keep_first(first_error, e),
        }
    }
    total
}

/// The report of `load`: `sent` messages, `received` by all receivers, sending from `start`.
fn report(
    load: &ChatLoad,
    sent: u64,
    received: &Received,
    start: Duration,
    first_error: Option<String>,
) -> ChatReport {
    let summary = received.latency.summary();
    ChatReport {
        proto: load.proto,
        nodes: load.addrs.len(),
        receivers: load.receivers,
        senders: load.senders,
        size: load.size,
        sent,
        deliveries: received.count,
        out_of_order: received.out_of_order,
        rate: load.rate,
        elapsed_secs: received.last_at.saturating_sub(start).as_secs_f64(),
        deliveries_per_sec: match received.last_at.saturating_sub(start).as_secs_f64() {
            secs if secs > 0.0 => received.count as f64 / secs,
            _ => 0.0,
        },
        p50_us: summary.p50_us,
        p99_us: summary.p99_us,
        max_us: summary.max_us,
        first_error,
        broker_said: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::engine::{serve, Config, Conn, ConnInfo, Handler};
    use crate::net::{BindOptions, Listener};
    use crate::service::chat::{
        Broker, BrokerConfig, LineConfig, LineServer, RateLimit, WebConfig, WebServer,
    };

    const UNLIMITED: RateLimit = RateLimit {
        per_sec: 1_000_000,
        burst: 1_000_000,
    };

    /// A handler that counts the connections it is given.
    #[derive(Clone)]
    struct Counted<H> {
        inner: H,
        conns: Arc<AtomicUsize>,
    }

    impl<H: Handler> Handler for Counted<H> {
        async fn handle(&self, conn: Conn, info: ConnInfo) -> std::io::Result<()> {
            self.conns.fetch_add(1, Ordering::Relaxed);
            self.inner.handle(conn, info).await
        }
    }

    /// Serves `handler` on a loopback port until `shutdown`; returns the port and how many
    /// connections it was given.
    async fn start<H: Handler + Clone>(
        handler: H,
        shutdown: &CancellationToken,
    ) -> (Addr, Arc<AtomicUsize>) {
        let addr: Addr = "127.0.0.1:0".parse().expect("addr");
        let listener = Listener::bind(&addr, &BindOptions::default())
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            inner: handler,
            conns: conns.clone(),
        };
        tokio::spawn(serve(
            listener,
            counted,
            Config::default(),
            shutdown.clone(),
        ));
        (addr, conns)
    }

    fn line_server(broker: &Arc<Broker>) -> LineServer {
        let line = LineConfig {
            rate: UNLIMITED,
            ..LineConfig::default()
        };
        LineServer::new(broker.clone(), line)
    }

    fn load(addrs: Vec<Addr>, proto: ChatProto) -> ChatLoad {
        ChatLoad {
            addrs,
            token: None,
            proto,
            receivers: 3,
            senders: 2,
            size: 32,
            duration: Duration::from_millis(200),
            window: 10,
            rate: None,
        }
    }

    #[tokio::test]
    async fn every_receiver_gets_every_message_from_a_sockit_broker() {
        let shutdown = CancellationToken::new();
        let broker = Broker::new(BrokerConfig::default());
        let (addr, _) = start(line_server(&broker), &shutdown).await;
        let load = load(vec![addr], ChatProto::Sockit);
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

    #[tokio::test]
    async fn websocket_receivers_get_every_message_the_browser_protocol_carries() {
        let shutdown = CancellationToken::new();
        let broker = Broker::new(BrokerConfig::default());
        let web = WebConfig {
            rate: UNLIMITED,
            ..WebConfig::default()
        };
        let (addr, conns) = start(WebServer::new(broker.clone(), web), &shutdown).await;
        let report = run_chat(&load(vec![addr], ChatProto::WebSocket))
            .await
            .expect("runs");
        assert!(report.sent > 0, "{report:?}");
        assert_eq!(report.deliveries, report.sent * 3, "{report:?}");
        assert_eq!(report.out_of_order, 0, "{report:?}");
        assert_eq!(report.failure(), None, "{report:?}");
        assert!(report.p99_us > 0, "{report:?}");
        assert_eq!(conns.load(Ordering::Relaxed), 5);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_websocket_load_against_a_line_port_says_what_to_point_it_at() {
        let shutdown = CancellationToken::new();
        let broker = Broker::new(BrokerConfig::default());
        let (addr, _) = start(line_server(&broker), &shutdown).await;
        let err = run_chat(&load(vec![addr], ChatProto::WebSocket))
            .await
            .expect_err("no WebSocket there");
        let err = err.to_string();
        assert!(err.contains("--web-listen"), "{err}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn clients_are_spread_round_robin_over_the_nodes_of_one_chat() {
        // Two ports on one broker: every receiver still gets every sender's messages.
        let shutdown = CancellationToken::new();
        let broker = Broker::new(BrokerConfig::default());
        let (a, a_conns) = start(line_server(&broker), &shutdown).await;
        let (b, b_conns) = start(line_server(&broker), &shutdown).await;
        let report = run_chat(&load(vec![a, b], ChatProto::Sockit))
            .await
            .expect("runs");
        assert_eq!(report.nodes, 2);
        assert_eq!(report.deliveries, report.sent * 3, "{report:?}");
        assert_eq!(report.failure(), None, "{report:?}");
        // Receivers 0, 2 and sender 0 on the first; receiver 1 and sender 1 on the second.
        assert_eq!(a_conns.load(Ordering::Relaxed), 3);
        assert_eq!(b_conns.load(Ordering::Relaxed), 2);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn two_unlinked_brokers_are_reported_as_lost_deliveries() {
        // Each receiver hears only the sender on its own broker: half of each sender's
        // deliveries never come, and the load says so.
        let shutdown = CancellationToken::new();
        let (a, _) = start(
            line_server(&Broker::new(BrokerConfig::default())),
            &shutdown,
        )
        .await;
        let (b, _) = start(
            line_server(&Broker::new(BrokerConfig::default())),
            &shutdown,
        )
        .await;
        let load = ChatLoad {
            receivers: 2,
            ..load(vec![a, b], ChatProto::Sockit)
        };
        let report = run_chat(&load).await.expect("runs");
        assert!(report.sent > 0, "{report:?}");
        assert!(report.deliveries < report.sent * 2, "{report:?}");
        let failure = report.failure().expect("a failed load");
        assert!(failure.contains("did not arrive"), "{failure}");
    }
}
