//! Echo load: many clients keeping pipelined messages in flight over TCP, Unix or UDP, measuring
//! throughput and per-message latency.

use std::io;
use std::time::{Duration, Instant};

use serde::ser::{Serialize, SerializeStruct, Serializer};
use tokio::task::JoinSet;

use super::{
    ensure_fd_limit, keep_first, result_rows, stream, table_row, udp, BenchError, Latency,
    FINISH_GRACE, MAX_DURATION,
};
use crate::net::Addr;

/// How long a UDP client waits for the replies to one window before counting the rest lost.
pub const UDP_REPLY_TIMEOUT: Duration = Duration::from_millis(200);

/// Bytes at the start of each UDP message holding its sequence number (big-endian `u64`), so
/// late replies from an earlier window are recognised and ignored.
pub const UDP_SEQ_BYTES: usize = 8;

/// Largest UDP payload over IPv4.
pub(crate) const MAX_UDP_PAYLOAD_BYTES: usize = 65_507;

/// Largest `pipeline × size` batch a client keeps in flight (and allocates twice).
pub(crate) const MAX_BATCH_BYTES: usize = 64 << 20;

/// Hard cap on the requests one client sends, a backstop to the duration.
pub(crate) const MAX_REQUESTS_PER_CONN: u64 = 1 << 32;

/// An echo load: who to hit, how hard, and for how long.
#[derive(Debug, Clone)]
pub struct EchoLoad {
    /// The echo server (`unix:` paths work for streams, not for UDP).
    pub addr: Addr,
    /// Concurrent clients, each with its own connection or UDP socket.
    pub conns: usize,
    /// Bytes per message (for UDP at least [`UDP_SEQ_BYTES`]).
    pub size: usize,
    /// How long to send; a batch in flight at the deadline has [`FINISH_GRACE`] to complete.
    pub duration: Duration,
    /// Messages each client keeps in flight: written as one batch, then all read back.
    pub pipeline: usize,
    /// Use UDP datagrams instead of a stream connection.
    pub udp: bool,
    /// Check that every echoed byte equals what was sent (a mismatch counts as an error).
    pub verify: bool,
    /// Measure connection rate: each request opens a connection, sends one message, reads the
    /// echo and closes (needs `pipeline == 1`).
    pub connect_per_request: bool,
}

/// Which socket kind a bench used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP stream.
    Tcp,
    /// Unix stream.
    Unix,
    /// UDP datagrams.
    Udp,
}

/// The outcome of [`run_echo`]. Latencies are in microseconds, from writing a batch to the
/// arrival of each message's last byte (including the connect with `connect_per_request`).
#[derive(Debug, Clone, PartialEq)]
pub struct EchoReport {
    /// The target, as given.
    pub addr: String,
    /// Socket kind used.
    pub transport: Transport,
    /// Whether every request used a fresh connection.
    pub connect_per_request: bool,
    /// Concurrent clients asked for.
    pub conns: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per client.
    pub pipeline: usize,
    /// Whether echoed bytes were checked.
    pub verify: bool,
    /// Messages echoed back intact.
    pub requests: u64,
    /// Failed operations: connects, mismatched echoes, I/O errors and timeouts (each of the
    /// latter two ends its connection). Lost UDP replies are counted in `lost` instead.
    pub errors: u64,
    /// Of `errors`, connects that failed.
    pub connect_errors: u64,
    /// Of `errors`, echoes that differed from what was sent.
    pub mismatches: u64,
    /// UDP messages whose reply did not arrive within [`UDP_REPLY_TIMEOUT`].
    pub lost: u64,
    /// Bytes echoed back intact (`requests × size`).
    pub bytes: u64,
    /// Wall time from the first request to the last client finishing.
    pub elapsed: Duration,
    /// Median latency.
    pub p50_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
    /// 99.9th percentile latency.
    pub p999_us: u64,
    /// Slowest message.
    pub max_us: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
}

impl EchoLoad {
    /// Checks the load before anything is opened.
    ///
    /// # Errors
    /// [`BenchError::InvalidLoad`] naming the first problem.
    pub(crate) fn validate(&self) -> Result<(), BenchError> {
        let invalid = |msg: String| Err(BenchError::InvalidLoad(msg));
        if self.conns == 0 || self.size == 0 || self.pipeline == 0 {
            return invalid("conns, size and pipeline must all be at least 1".into());
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return invalid(format!(
                "duration must be positive and at most {MAX_DURATION:?}"
            ));
        }
        if !matches!(self.size.checked_mul(self.pipeline), Some(b) if b <= MAX_BATCH_BYTES) {
            return invalid(format!(
                "pipeline × size must be at most {MAX_BATCH_BYTES} bytes"
            ));
        }
        if self.connect_per_request && self.pipeline != 1 {
            return invalid(
                "connect_per_request sends one message per connection: use pipeline 1".into(),
            );
        }
        if self.udp {
            if let Addr::Unix(_) = self.addr {
                return invalid(format!("UDP needs an IP address, not {}", self.addr));
            }
            if self.connect_per_request {
                return invalid("connect_per_request applies to stream sockets, not UDP".into());
            }
            if !(UDP_SEQ_BYTES..=MAX_UDP_PAYLOAD_BYTES).contains(&self.size) {
                return invalid(format!(
                    "UDP message size must be {UDP_SEQ_BYTES}..={MAX_UDP_PAYLOAD_BYTES} bytes"
                ));
            }
        }
        Ok(())
    }

    fn transport(&self) -> Transport {
        match (&self.addr, self.udp) {
            (_, true) => Transport::Udp,
            (Addr::Inet(_), false) => Transport::Tcp,
            (Addr::Unix(_), false) => Transport::Unix,
        }
    }
}

impl EchoReport {
    /// Intact echoes per second of wall time (0 when nothing was timed).
    pub(crate) fn requests_per_sec(&self) -> f64 {
        per_sec(self.requests, self.elapsed)
    }

    /// Megabytes (10⁶ bytes) echoed back per second.
    pub(crate) fn mb_per_sec(&self) -> f64 {
        per_sec(self.bytes, self.elapsed) / 1e6
    }

    /// A small aligned table for humans.
    pub fn table(&self) -> String {
        let mut out = String::new();
        table_row(
            &mut out,
            "requests/s",
            format!("{:.1}", self.requests_per_sec()),
            "",
        );
        table_row(&mut out, "MB/s", format!("{:.2}", self.mb_per_sec()), "");
        table_row(&mut out, "p50", self.p50_us, "µs");
        table_row(&mut out, "p99", self.p99_us, "µs");
        table_row(&mut out, "p99.9", self.p999_us, "µs");
        table_row(&mut out, "errors", self.errors, "");
        if self.transport == Transport::Udp {
            table_row(&mut out, "lost", self.lost, "");
        }
        let secs = format!("{:.2}", self.elapsed.as_secs_f64());
        table_row(&mut out, "elapsed", secs, "s");
        result_rows(&mut out, self.failure().as_deref());
        out
    }

    /// Why the load failed, `None` when it did not: nothing was echoed (every UDP reply lost
    /// included), or any operation failed (a connect, a timeout, a mismatched echo). Lost UDP
    /// replies alone are not a failure: UDP may drop them.
    pub fn failure(&self) -> Option<String> {
        let first = match &self.first_error {
            Some(e) => format!(" (first: {e})"),
            None => String::new(),
        };
        if self.requests == 0 {
            let lost = match self.lost {
                0 => String::new(),
                n => format!("; {n} UDP replies lost"),
            };
            return Some(format!("no message was echoed{lost}{first}"));
        }
        if self.errors > 0 {
            return Some(format!(
                "{} of {} operations failed{first}",
                self.errors,
                self.errors + self.requests
            ));
        }
        None
    }
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Serialized by hand so `--json` carries the rates next to the raw counts.
impl Serialize for EchoReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("EchoReport", 23)?;
        st.serialize_field("addr", &self.addr)?;
        st.serialize_field("transport", &self.transport)?;
        st.serialize_field("connect_per_request", &self.connect_per_request)?;
        st.serialize_field("conns", &self.conns)?;
        st.serialize_field("size", &self.size)?;
        st.serialize_field("pipeline", &self.pipeline)?;
        st.serialize_field("verify", &self.verify)?;
        st.serialize_field("requests", &self.requests)?;
        st.serialize_field("errors", &self.errors)?;
        st.serialize_field("connect_errors", &self.connect_errors)?;
        st.serialize_field("mismatches", &self.mismatches)?;
        st.serialize_field("lost", &self.lost)?;
        st.serialize_field("bytes", &self.bytes)?;
        st.serialize_field("elapsed_secs", &self.elapsed.as_secs_f64())?;
        st.serialize_field("requests_per_sec", &self.requests_per_sec())?;
        st.serialize_field("mb_per_sec", &self.mb_per_sec())?;
        st.serialize_field("p50_us", &self.p50_us)?;
        st.serialize_field("p99_us", &self.p99_us)?;
        st.serialize_field("p999_us", &self.p999_us)?;
        st.serialize_field("max_us", &self.max_us)?;
        st.serialize_field("mean_us", &self.mean_us)?;
        st.serialize_field("first_error", &self.first_error)?;
        st.end()
    }
}

/// Runs an echo load and reports throughput and latency.
///
/// Stream clients connect before the clock starts; a client whose connection fails later
/// stops, and the others carry on. Raises the process's RLIMIT_NOFILE soft limit.
///
/// # Errors
/// [`BenchError::InvalidLoad`] or [`BenchError::FdLimit`] before anything is opened;
/// [`BenchError::Connect`] when no client can reach the target.
pub async fn run_echo(load: &EchoLoad) -> Result<EchoReport, BenchError> {
    load.validate()?;
    ensure_fd_limit(load.conns, 1)?;
    let (stats, elapsed) = if load.udp {
        udp::run_udp_clients(load).await?
    } else if load.connect_per_request {
        stream::run_per_request_clients(load).await?
    } else {
        stream::run_stream_clients(load).await?
    };
    let latency = stats.latency.summary();
    Ok(EchoReport {
        addr: load.addr.to_string(),
        transport: load.transport(),
        connect_per_request: load.connect_per_request,
        conns: load.conns,
        size: load.size,
        pipeline: load.pipeline,
        verify: load.verify,
        requests: stats.requests,
        errors: stats.errors,
        connect_errors: stats.connect_errors,
        mismatches: stats.mismatches,
        lost: stats.lost,
        bytes: stats.requests * load.size as u64,
        elapsed,
        p50_us: latency.p50_us,
        p99_us: latency.p99_us,
        p999_us: latency.p999_us,
        max_us: latency.max_us,
        mean_us: latency.mean_us,
        first_error: stats.first_error,
    })
}

/// What one client task needs to know; `Copy` so each task gets its own.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub(super) size: usize,
    pub(super) pipeline: usize,
    pub(super) verify: bool,
    pub(super) deadline: Instant,
    /// The deadline plus [`FINISH_GRACE`]: no operation runs past it.
    pub(super) cutoff: Instant,
}

impl Plan {
    pub(super) fn starting_now(load: &EchoLoad) -> Plan {
        Plan {
            size: load.size,
            pipeline: load.pipeline,
            verify: load.verify,
            deadline: Instant::now() + load.duration,
            cutoff: Instant::now() + load.duration + FINISH_GRACE,
        }
    }

    pub(super) fn keep_going(&self, attempted: u64) -> bool {
        attempted < MAX_REQUESTS_PER_CONN && Instant::now() < self.deadline
    }
}

/// One client's counts, owned by its task (no locks on the hot path) and merged at the end.
#[derive(Debug)]
pub(super) struct ConnStats {
    requests: u64,
    errors: u64,
    connect_errors: u64,
    mismatches: u64,
    pub(super) lost: u64,
    latency: Latency,
    first_error: Option<String>,
}

impl ConnStats {
    pub(super) fn new() -> Self {
        ConnStats {
            requests: 0,
            errors: 0,
            connect_errors: 0,
            mismatches: 0,
            lost: 0,
            latency: Latency::new(),
            first_error: None,
        }
    }

    fn echoed(&mut self, latency: Duration) {
        self.requests += 1;
        self.latency.record(latency);
    }

    /// Counts one echoed message, checking it against what was sent when `verify` is on.
    pub(super) fn check(&mut self, verify: bool, sent: &[u8], echoed: &[u8], latency: Duration) {
        if verify && sent != echoed {
            self.mismatched(sent.len(), echoed.len());
        } else {
            self.echoed(latency);
        }
    }

    pub(super) fn mismatched(&mut self, sent: usize, echoed: usize) {
        self.mismatches += 1;
        self.failed(format!(
            "echo of a {sent}-byte message differs ({echoed} bytes came back)"
        ));
    }

    pub(super) fn failed(&mut self, err: impl std::fmt::Display) {
        self.errors += 1;
        keep_first(&mut self.first_error, err);
    }

    pub(super) fn connect_failed(&mut self, err: impl std::fmt::Display) {
        self.connect_errors += 1;
        self.failed(err);
    }

    fn merge(&mut self, other: ConnStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.connect_errors += other.connect_errors;
        self.mismatches += other.mismatches;
        self.lost += other.lost;
        self.latency.merge(&other.latency);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Waits for every client and merges their counts; the elapsed time runs from `start`.
pub(super) async fn collect(
    mut tasks: JoinSet<ConnStats>,
    mut stats: ConnStats,
    start: Instant,
) -> Result<(ConnStats, Duration), BenchError> {
    while let Some(joined) = tasks.join_next().await {
        stats.merge(joined.map_err(io::Error::other)?);
    }
    Ok((stats, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{closed_tcp_port, silent_server, stream_echo, udp_echo};
    use super::super::IO_TIMEOUT;
    use super::*;

    fn load(addr: Addr) -> EchoLoad {
        EchoLoad {
            addr,
            conns: 2,
            size: 100,
            duration: Duration::from_millis(200),
            pipeline: 4,
            udp: false,
            verify: true,
            connect_per_request: false,
        }
    }

    fn assert_clean(report: &EchoReport) {
        assert!(report.requests > 0, "{report:?}");
        assert_eq!(report.errors, 0, "{report:?}");
        assert_eq!(report.bytes, report.requests * report.size as u64);
        assert!(
            report.p50_us > 0 && report.p50_us <= report.max_us,
            "{report:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_tcp_echo_is_counted_and_verified() {
        let addr = stream_echo("127.0.0.1:0", None).await;
        let report = run_echo(&load(addr)).await.unwrap();
        assert_clean(&report);
        assert_eq!(report.transport, Transport::Tcp);
        assert!(report.requests_per_sec() > 0.0 && report.mb_per_sec() > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_larger_than_socket_buffers_do_not_deadlock() {
        let addr = stream_echo("127.0.0.1:0", None).await;
        // 16 MiB in flight per round: on a loaded 2-core machine the first reply can take
        // longer than the other tests' 200 ms, which would leave nothing to assert on.
        let big = EchoLoad {
            size: 1 << 20,
            pipeline: 16,
            conns: 1,
            duration: Duration::from_secs(2),
            ..load(addr)
        };
        assert_clean(&run_echo(&big).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unix_stream_echo_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("echo.sock");
        let addr = stream_echo(&format!("unix:{}", path.display()), None).await;
        let report = run_echo(&load(addr)).await.unwrap();
        assert_clean(&report);
        assert_eq!(report.transport, Transport::Unix);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_echo_gets_replies() {
        let udp = EchoLoad {
            udp: true,
            ..load(udp_echo().await)
        };
        let report = run_echo(&udp).await.unwrap();
        assert!(report.requests > 0, "{report:?}");
        assert_eq!(report.mismatches, 0, "{report:?}");
        assert!(report.table().contains("lost"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupted_echo_is_reported_by_verify() {
        let addr = stream_echo("127.0.0.1:0", Some(1234)).await;
        let report = run_echo(&load(addr)).await.unwrap();
        assert!(report.errors > 0, "{report:?}");
        assert!(report
            .failure()
            .is_some_and(|f| f.contains("operations failed")));
        assert_eq!(report.errors, report.mismatches);
        assert!(report.requests > 0);
        assert!(report.first_error.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupted_echo_passes_unnoticed_without_verify() {
        let addr = stream_echo("127.0.0.1:0", Some(1234)).await;
        let unverified = EchoLoad {
            verify: false,
            ..load(addr)
        };
        assert_clean(&run_echo(&unverified).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_per_request_opens_a_connection_per_message() {
        let addr = stream_echo("127.0.0.1:0", None).await;
        let per_request = EchoLoad {
            pipeline: 1,
            connect_per_request: true,
            ..load(addr)
        };
        let report = run_echo(&per_request).await.unwrap();
        assert_clean(&report);
        assert!(report.connect_per_request);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_server_fails_the_load_within_its_duration_and_grace() {
        let started = Instant::now();
        let report = run_echo(&load(silent_server().await)).await.unwrap();
        assert_eq!((report.requests, report.errors), (0, 2), "{report:?}");
        let first = report.first_error.clone().unwrap();
        assert!(first.contains("after the run's end"), "{first}");
        // 200 ms of load, then the grace; never the 5 s I/O timeout.
        assert!(started.elapsed() < FINISH_GRACE + Duration::from_secs(1));
        assert!(started.elapsed() < IO_TIMEOUT);
        let failure = report.failure().expect("a load with nothing echoed failed");
        assert!(failure.contains("no message was echoed"), "{failure}");
        assert!(report.table().contains("FAILED"), "{}", report.table());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clean_load_has_no_failure_and_says_ok() {
        let report = run_echo(&load(stream_echo("127.0.0.1:0", None).await))
            .await
            .unwrap();
        assert_eq!(report.failure(), None, "{report:?}");
        assert!(report.table().contains("result") && report.table().contains("ok"));
    }

    #[tokio::test]
    async fn closed_port_fails_fast_with_connect_error() {
        let addr = closed_tcp_port().await;
        for mode in [
            load(addr.clone()),
            EchoLoad {
                pipeline: 1,
                connect_per_request: true,
                ..load(addr.clone())
            },
        ] {
            let started = Instant::now();
            let err = run_echo(&mode).await.unwrap_err();
            assert!(matches!(err, BenchError::Connect { .. }), "{err:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }

    #[tokio::test]
    async fn udp_to_closed_port_fails_with_connect_error() {
        let udp = EchoLoad {
            udp: true,
            ..load(closed_tcp_port().await)
        };
        let err = run_echo(&udp).await.unwrap_err();
        assert!(matches!(err, BenchError::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn invalid_loads_are_rejected_before_connecting() {
        let base = load(closed_tcp_port().await);
        let unix: Addr = "unix:/nonexistent/echo.sock".parse().unwrap();
        let bad = [
            EchoLoad {
                conns: 0,
                ..base.clone()
            },
            EchoLoad {
                size: 0,
                ..base.clone()
            },
            EchoLoad {
                pipeline: 0,
                ..base.clone()
            },
            EchoLoad {
                duration: Duration::ZERO,
                ..base.clone()
            },
            EchoLoad {
                size: MAX_BATCH_BYTES,
                pipeline: 2,
                ..base.clone()
            },
            EchoLoad {
                size: usize::MAX,
                pipeline: 2,
                ..base.clone()
            },
            EchoLoad {
                connect_per_request: true,
                ..base.clone()
            },
            EchoLoad {
                udp: true,
                addr: unix,
                ..base.clone()
            },
            EchoLoad {
                udp: true,
                size: UDP_SEQ_BYTES - 1,
                ..base.clone()
            },
            EchoLoad {
                udp: true,
                size: MAX_UDP_PAYLOAD_BYTES + 1,
                pipeline: 1,
                ..base.clone()
            },
            EchoLoad {
                udp: true,
                pipeline: 1,
                connect_per_request: true,
                ..base.clone()
            },
        ];
        for load in bad {
            let err = run_echo(&load).await.unwrap_err();
            assert!(
                matches!(err, BenchError::InvalidLoad(_)),
                "{load:?}: {err:?}"
            );
        }
    }

    #[test]
    fn empty_report_has_zero_rates_and_a_table() {
        let report = EchoReport {
            addr: "127.0.0.1:1".into(),
            transport: Transport::Tcp,
            connect_per_request: false,
            conns: 1,
            size: 1,
            pipeline: 1,
            verify: false,
            requests: 0,
            errors: 0,
            connect_errors: 0,
            mismatches: 0,
            lost: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
            max_us: 0,
            mean_us: 0.0,
            first_error: None,
        };
        assert_eq!(report.requests_per_sec(), 0.0);
        let table = report.table();
        for row in ["requests/s", "MB/s", "p50", "p99", "p99.9", "errors"] {
            assert!(
                table.lines().any(|l| l.starts_with(row)),
                "{row} in\n{table}"
            );
        }
        assert!(!table.contains("lost"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["requests_per_sec"], 0.0);
        assert_eq!(json["transport"], "tcp");
    }
}
