//! The load generator behind `sockit bench`: echo throughput and latency ([`run_echo`]), chat
//! fan-out ([`run_chat`]) and many idle connections held open at once ([`run_hold`]).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), sockit::tools::bench::BenchError> {
//! use std::time::Duration;
//! use sockit::tools::bench::{run_echo, EchoLoad};
//!
//! let load = EchoLoad {
//!     addr: "127.0.0.1:9000".parse().expect("valid address"),
//!     conns: 4,
//!     size: 64,
//!     duration: Duration::from_secs(5),
//!     pipeline: 8,
//!     udp: false,
//!     verify: true,
//!     connect_per_request: false,
//! };
//! let report = run_echo(&load).await?;
//! println!("{}", report.table());
//! # Ok(())
//! # }
//! ```

mod chat;
mod echo;
mod hold;
mod stream;
#[cfg(test)]
mod testing;
mod udp;

pub use chat::{run_chat, ChatLoad, ChatProto, ChatReport};

pub use echo::{run_echo, EchoLoad, EchoReport, Transport, UDP_REPLY_TIMEOUT, UDP_SEQ_BYTES};
pub use hold::{run_hold, HoldLoad, HoldReport, CONNS_PER_SOURCE_IP};

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::{Addr, Stream};

/// Longest wait for any single operation (a connect, one echoed batch): past it the operation
/// counts as an error and its connection ends, so a stuck server cannot hang the bench.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections being opened at once, kept under the common listen backlog of 128 (tokio's
/// `TcpListener::bind`): an overrun backlog drops SYNs, and each drop costs a 1 s retransmit.
pub(crate) const CONNECT_PARALLELISM: usize = 64;

/// How long work in flight at the end of a load's duration (an echo batch, a probe, the
/// last deliveries of a chat load) may take to finish; past it the work is cut off and
/// counted as failed, so a run lasts its duration plus at most this (and its setup: connects,
/// joins, each bounded by 5 s).
pub const FINISH_GRACE: Duration = Duration::from_secs(2);

/// Longest run a load may ask for (a week), so deadlines never overflow the clock.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// File descriptors kept free for the runtime, the probe connection and the caller.
pub const FD_RESERVE: u64 = 64;

/// Highest latency the histograms track; slower samples are clamped to it.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Not a single connection (or, for UDP, not a single reply) got through.
    #[error("bench target {addr} is unreachable")]
    Connect {
        /// The target.
        addr: Addr,
        /// The first failure seen.
        #[source]
        source: io::Error,
    },
    /// A client connected but the broker never let it in the way the protocol asked for
    /// says it would (a sockit line port's `*** NICK joined`, a Redis subscription).
    #[error("connected to {addr}, but {detail}")]
    Handshake {
        /// The target.
        addr: Addr,
        /// What happened instead, and what to try.
        detail: String,
    },
    /// The load asks for something that cannot run (zero connections, UDP to a Unix path, ...).
    #[error("invalid bench load: {0}")]
    InvalidLoad(String),
    /// More connections than the process may open files, even after raising the soft limit.
    #[error(
        "{conns} connections need about {needed} file descriptors but RLIMIT_NOFILE is {limit}; \
         raise the hard limit (ulimit -Hn) or use fewer connections"
    )]
    FdLimit {
        /// Connections asked for.
        conns: usize,
        /// Descriptors needed, including [`FD_RESERVE`].
        needed: u64,
        /// The soft limit after trying to raise it.
        limit: u64,
    },
    /// Any other I/O failure, or a client task that died.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Raises the RLIMIT_NOFILE soft limit to the hard limit (a process-wide, best-effort change)
/// and checks that `fds_per_conn * conns` descriptors fit.
fn ensure_fd_limit(conns: usize, fds_per_conn: u64) -> Result<u64, BenchError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            // An infinite hard limit cannot be the soft one on Linux; keep what we have.
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(e) => return Err(io::Error::from(e).into()),
    };
    let needed = (conns as u64)
        .saturating_mul(fds_per_conn)
        .saturating_add(FD_RESERVE);
    if needed > limit {
        return Err(BenchError::FdLimit {
            conns,
            needed,
            limit,
        });
    }
    Ok(limit)
}

/// A latency histogram in microseconds, owned by one task and merged at the end.
#[derive(Debug, Clone)]
struct Latency(Histogram<u64>);

impl Latency {
    fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("constant histogram bounds are valid");
        Latency(hist)
    }

    fn record(&mut self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.max(1));
    }

    fn merge(&mut self, other: &Latency) {
        // Both sides come from `new`, so the bounds match and `add` cannot fail.
        let _ = self.0.add(&other.0);
    }

    fn summary(&self) -> LatencySummary {
        let q = |q: f64| {
            if self.0.is_empty() {
                0
            } else {
                self.0.value_at_quantile(q)
            }
        };
        LatencySummary {
            samples: self.0.len(),
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.0.max(),
            mean_us: if self.0.is_empty() {
                0.0
            } else {
                self.0.mean()
            },
        }
    }
}

/// Percentiles of one latency histogram, in microseconds (all zero without samples).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct LatencySummary {
    samples: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: f64,
}

/// The first error seen, kept as text for the report.
fn keep_first(slot: &mut Option<String>, err: impl std::fmt::Display) {
    if slot.is_none() {
        *slot = Some(err.to_string());
    }
}

/// Runs `work` over `items` on at most `parallelism` tasks, each taking every n-th item in
/// turn, so at most `parallelism` operations are in flight. Results come back unordered.
async fn run_bounded<T, R, F, Fut>(
    items: Vec<T>,
    parallelism: usize,
    work: F,
) -> Result<Vec<R>, BenchError>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = R> + Send,
{
    let lanes = parallelism.clamp(1, items.len().max(1));
    let mut buckets: Vec<Vec<T>> = (0..lanes).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        buckets[i % lanes].push(item);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for bucket in buckets {
        let work = work.clone();
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(bucket.len());
            for item in bucket {
                out.push(work(item).await);
            }
            out
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.extend(joined.map_err(io::Error::other)?);
    }
    Ok(results)
}

/// A per-connection pseudo-random payload (xorshift64*), so a server that mixes up
/// connections or corrupts bytes is caught by `verify`.
fn fill_pattern(buf: &mut [u8], seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Writes `tx` and reads as many echoed bytes into `rx` at the same time (so a batch larger
/// than the socket buffers cannot deadlock), calling `on_message(sent, echoed, at)` as the last
/// byte of each `size`-byte message arrives.
///
/// # Cancel safety
/// Not cancel safe: a cancelled exchange leaves the stream mid-batch, so callers drop it.
async fn exchange(
    stream: &mut Stream,
    tx: &[u8],
    rx: &mut [u8],
    size: usize,
    mut on_message: impl FnMut(&[u8], &[u8], Instant),
) -> io::Result<()> {
    debug_assert_eq!(tx.len(), rx.len());
    let (mut written, mut read) = (0, 0);
    poll_fn(|cx| loop {
        let mut progressed = false;
        if written < tx.len() {
            if let Poll::Ready(n) = Pin::new(&mut *stream).poll_write(cx, &tx[written..]) {
                match n? {
                    0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    n => written += n,
                }
                progressed = true;
            }
        }
        let mut buf = ReadBuf::new(&mut rx[read..]);
        if let Poll::Ready(res) = Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            res?;
            let n = buf.filled().len();
            if n == 0 {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "server closed mid-echo");
                return Poll::Ready(Err(eof));
            }
            let (done_before, done_after) = (read / size, (read + n) / size);
            read += n;
            if done_after > done_before {
                let at = Instant::now();
                for k in done_before..done_after {
                    let msg = k * size..(k + 1) * size;
                    on_message(&tx[msg.clone()], &rx[msg], at);
                }
            }
            progressed = true;
        }
        if read == rx.len() {
            return Poll::Ready(Ok(()));
        }
        if !progressed {
            return Poll::Pending;
        }
    })
    .await
}

/// Connects with [`IO_TIMEOUT`].
async fn connect_stream(addr: &Addr) -> io::Result<Stream> {
    tokio::time::timeout(IO_TIMEOUT, Stream::connect(addr))
        .await
        .unwrap_or_else(|_| Err(timed_out("connect")))
}

/// Runs `work` for at most [`IO_TIMEOUT`], and not past `cutoff` (the end of the run and its
/// [`FINISH_GRACE`]); each limit has its own error.
async fn bounded<T>(
    what: &str,
    cutoff: Instant,
    work: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let io_limit = Instant::now() + IO_TIMEOUT;
    match tokio::time::timeout_at(io_limit.min(cutoff).into(), work).await {
        Ok(res) => res,
        Err(_) if cutoff < io_limit => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} unfinished {FINISH_GRACE:?} after the run's end"),
        )),
        Err(_) => Err(timed_out(what)),
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} took longer than {IO_TIMEOUT:?}"),
    )
}

/// Serializes a `Duration` as fractional seconds, the unit JSON consumers expect.
fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The last rows of a report table: `result  ok`, or `result  FAILED` and the reason, so the
/// reason is on screen and not only in `--json`.
fn result_rows(out: &mut String, failure: Option<&str>) {
    match failure {
        None => table_row(out, "result", "ok", ""),
        Some(reason) => {
            table_row(out, "result", "FAILED", "");
            table_row(out, "why", reason, "");
        }
    }
}

/// One `label  value unit` line of a report table.
fn table_row(out: &mut String, label: &str, value: impl std::fmt::Display, unit: &str) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "{}",
        format!("{label:<16}{value:>14} {unit}").trim_end()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_between_connections_and_repeat_for_one() {
        let (mut a, mut b, mut c) = ([0u8; 37], [0u8; 37], [0u8; 37]);
        fill_pattern(&mut a, 1);
        fill_pattern(&mut b, 2);
        fill_pattern(&mut c, 1);
        assert_ne!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn merged_latency_keeps_every_sample() {
        let (mut a, mut b) = (Latency::new(), Latency::new());
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(1000));
        b.record(Duration::from_secs(3600));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.samples, 3);
        assert_eq!(s.p50_us, 1000);
        assert!(s.max_us >= MAX_LATENCY_US * 999 / 1000);
    }

    #[test]
    fn empty_latency_summarises_to_zeros() {
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }

    #[tokio::test]
    async fn bounded_runner_visits_every_item_once() {
        let mut out = run_bounded((0..1000u32).collect(), 7, |i| async move { i })
            .await
            .unwrap();
        out.sort_unstable();
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
    }
}
