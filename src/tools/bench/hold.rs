//! Hold load: opens many connections, keeps them idle, probes latency meanwhile, and checks at
//! the end that every held connection still echoes.
//!
//! `conn` opens and checks the held connections, `probe` measures latency during the hold.

mod conn;
mod probe;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::net::{Addr, Stream};
use crate::tools::bench::{
    ensure_fd_limit, keep_first, result_rows, run_bounded, serialize_secs, table_row, BenchError,
    CONNECT_PARALLELISM, FINISH_GRACE, IO_TIMEOUT, MAX_DURATION,
};
use conn::{check_echo, open_held, source_ip_count};
use probe::Prober;

/// Connections per loopback source address: under the ~28k ephemeral ports Linux gives each
/// source IP, with room for sockets in TIME_WAIT from earlier runs.
pub const CONNS_PER_SOURCE_IP: usize = 20_000;

/// Bytes per latency probe.
pub(crate) const PROBE_BYTES: usize = 64;

/// Bytes echoed on every held connection at the end to prove it is alive.
pub(crate) const HOLD_CHECK_BYTES: usize = 8;

/// Most probes one hold run may ask for.
pub(crate) const MAX_PROBES: usize = 100_000;

/// Many idle connections held open at once.
#[derive(Debug, Clone)]
pub struct HoldLoad {
    /// The echo server. For loopback IPv4 targets the source addresses are spread over
    /// 127.0.0.0/8 (see [`CONNS_PER_SOURCE_IP`]).
    pub addr: Addr,
    /// Connections to open and hold.
    pub conns: usize,
    /// How long to hold them once all are open.
    pub duration: Duration,
    /// Latency probes spread over the hold, each one round trip on a fresh connection and one
    /// on a held connection.
    pub probes: usize,
}

/// The outcome of [`run_hold`]. Latencies are in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldReport {
    /// The target, as given.
    pub addr: String,
    /// Connections asked for.
    pub requested: usize,
    /// Connections that opened and echoed once.
    pub established: usize,
    /// Connections that failed to open or to echo once.
    pub connect_errors: usize,
    /// Loopback source addresses used (0 when the kernel chose).
    pub source_ips: usize,
    /// Time to open them all.
    #[serde(rename = "open_secs", serialize_with = "serialize_secs")]
    pub open_elapsed: Duration,
    /// Time they were held.
    #[serde(rename = "held_secs", serialize_with = "serialize_secs")]
    pub held: Duration,
    /// Probe round trips that succeeded on the fresh probe connection.
    pub probes: u64,
    /// Probe round trips (and probe connects) that failed.
    pub probe_errors: u64,
    /// Median probe latency on the fresh connection.
    pub probe_p50_us: u64,
    /// 99th percentile probe latency on the fresh connection.
    pub probe_p99_us: u64,
    /// Slowest probe on the fresh connection.
    pub probe_max_us: u64,
    /// Probe round trips that succeeded on held connections.
    pub sampled: u64,
    /// Probe round trips on held connections that failed.
    pub sample_errors: u64,
    /// Median probe latency on held connections.
    pub sample_p50_us: u64,
    /// 99th percentile probe latency on held connections.
    pub sample_p99_us: u64,
    /// Held connections that still echoed at the end.
    pub alive_at_end: usize,
    /// RLIMIT_NOFILE soft limit during the run.
    pub fd_limit: u64,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
}

impl HoldLoad {
    /// Checks the load before anything is opened.
    ///
    /// # Errors
    /// [`BenchError::InvalidLoad`] naming the problem.
    pub(crate) fn validate(&self) -> Result<(), BenchError> {
        if self.conns == 0 {
            return Err(BenchError::InvalidLoad("conns must be at least 1".into()));
        }
        if self.duration > MAX_DURATION {
            let msg = format!("duration must be at most {MAX_DURATION:?}");
            return Err(BenchError::InvalidLoad(msg));
        }
        if self.probes > MAX_PROBES {
            let msg = format!("probes must be at most {MAX_PROBES}");
            return Err(BenchError::InvalidLoad(msg));
        }
        Ok(())
    }
}

impl HoldReport {
    /// A small aligned table for humans.
    pub fn table(&self) -> String {
        let mut out = String::new();
        table_row(&mut out, "requested", self.requested, "");
        table_row(&mut out, "established", self.established, "");
        table_row(&mut out, "connect errors", self.connect_errors, "");
        let open_ms = format!("{:.1}", self.open_elapsed.as_secs_f64() * 1e3);
        table_row(&mut out, "open time", open_ms, "ms");
        table_row(&mut out, "probe p50", self.probe_p50_us, "µs");
        table_row(&mut out, "probe p99", self.probe_p99_us, "µs");
        table_row(&mut out, "held p50", self.sample_p50_us, "µs");
        table_row(&mut out, "held p99", self.sample_p99_us, "µs");
        table_row(
            &mut out,
            "probe errors",
            self.probe_errors + self.sample_errors,
            "",
        );
        table_row(&mut out, "alive at end", self.alive_at_end, "");
        result_rows(&mut out, self.failure().as_deref());
        out
    }

    /// Why the load failed, `None` when it did not: a connection that could not be opened, a
    /// failed probe, or a held connection that no longer echoed at the end.
    pub fn failure(&self) -> Option<String> {
        let first = match &self.first_error {
            Some(e) => format!(" (first: {e})"),
            None => String::new(),
        };
        let mut problems = Vec::new();
        if self.established < self.requested {
            problems.push(format!(
                "{} of {} connections could not be opened",
                self.requested - self.established,
                self.requested
            ));
        }
        let probe_errors = self.probe_errors + self.sample_errors;
        if probe_errors > 0 {
            problems.push(format!("{probe_errors} probes failed"));
        }
        if self.alive_at_end < self.established {
            problems.push(format!(
                "{} of {} held connections no longer echoed at the end",
                self.established - self.alive_at_end,
                self.established
            ));
        }
        (!problems.is_empty()).then(|| format!("{}{first}", problems.join("; ")))
    }
}

/// Opens `conns` connections with bounded parallelism, holds them idle for `duration` while
/// probing latency, then echoes a few bytes on each to count the live ones. Raises the
/// process's RLIMIT_NOFILE soft limit.
///
/// # Errors
/// [`BenchError::InvalidLoad`] or [`BenchError::FdLimit`] before anything is opened;
/// [`BenchError::Connect`] when not a single connection opens.
pub async fn run_hold(load: &HoldLoad) -> Result<HoldReport, BenchError> {
    load.validate()?;
    let fd_limit = ensure_fd_limit(load.conns.saturating_add(1), 1)?;
    let open_start = Instant::now();
    let (mut held, mut first_error) = open_all(&load.addr, load.conns).await?;
    let open_elapsed = open_start.elapsed();

    let hold_start = Instant::now();
    let mut prober = Prober::new(load.addr.clone());
    for k in 0..load.probes {
        let at = load
            .duration
            .mul_f64((2 * k + 1) as f64 / (2 * load.probes) as f64);
        tokio::time::sleep_until((hold_start + at).into()).await;
        // Probes that time out (a server at its connection limit) must not stretch the run
        // past the hold duration: the remaining probes are skipped.
        if hold_start.elapsed() >= load.duration {
            break;
        }
        let sample = k * held.len() / load.probes;
        let probes = async {
            prober.probe_fresh().await;
            prober.probe_held(&mut held[sample]).await;
        };
        let cutoff = hold_start + load.duration + FINISH_GRACE;
        if tokio::time::timeout_at(cutoff.into(), probes)
            .await
            .is_err()
        {
            prober.cut_off(FINISH_GRACE);
            break;
        }
    }
    tokio::time::sleep_until((hold_start + load.duration).into()).await;
    let held_for = hold_start.elapsed();

    let established = held.len();
    let alive_at_end = count_alive(held).await?;

    if let Some(e) = prober.first_error.take() {
        keep_first(&mut first_error, e);
    }
    let (fresh, sampled) = (prober.fresh.summary(), prober.held.summary());
    Ok(HoldReport {
        addr: load.addr.to_string(),
        requested: load.conns,
        established,
        connect_errors: load.conns - established,
        source_ips: source_ip_count(&load.addr, load.conns),
        open_elapsed,
        held: held_for,
        probes: fresh.samples,
        probe_errors: prober.fresh_errors,
        probe_p50_us: fresh.p50_us,
        probe_p99_us: fresh.p99_us,
        probe_max_us: fresh.max_us,
        sampled: sampled.samples,
        sample_errors: prober.held_errors,
        sample_p50_us: sampled.p50_us,
        sample_p99_us: sampled.p99_us,
        alive_at_end,
        fd_limit,
        first_error,
    })
}

/// Opens `conns` held connections, [`CONNECT_PARALLELISM`] at a time, returning them with the
/// first failure's text.
async fn open_all(addr: &Addr, conns: usize) -> Result<(Vec<Stream>, Option<String>), BenchError> {
    let target = addr.clone();
    let opened = run_bounded((0..conns).collect(), CONNECT_PARALLELISM, move |i| {
        let target = target.clone();
        async move { open_held(&target, i).await }
    })
    .await?;
    let mut held = Vec::with_capacity(opened.len());
    let mut first_failure = None;
    for res in opened {
        match res {
            Ok(stream) => held.push(stream),
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        Some(source) if held.is_empty() => Err(BenchError::Connect {
            addr: addr.clone(),
            source,
        }),
        failure => Ok((held, failure.map(|e| e.to_string()))),
    }
}

/// Echoes on every held connection (closing each after), all within one [`IO_TIMEOUT`].
async fn count_alive(held: Vec<Stream>) -> Result<usize, BenchError> {
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    let checks = run_bounded(held, CONNECT_PARALLELISM, move |mut stream| async move {
        let alive = tokio::time::timeout_at(deadline, check_echo(&mut stream)).await;
        matches!(alive, Ok(Ok(())))
    })
    .await?;
    Ok(checks.into_iter().filter(|alive| *alive).count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::bench::testing::{closed_tcp_port, stream_echo};

    fn load(addr: Addr, conns: usize) -> HoldLoad {
        HoldLoad {
            addr,
            conns,
            duration: Duration::from_millis(200),
            probes: 4,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_held_connections_all_stay_alive() {
        let addr = stream_echo("127.0.0.1:0", None).await;
        let report = run_hold(&load(addr, 50)).await.unwrap();
        assert_eq!(report.established, 50, "{report:?}");
        assert_eq!(report.alive_at_end, 50, "{report:?}");
        assert_eq!((report.probes, report.sampled), (4, 4), "{report:?}");
        assert_eq!(report.probe_errors + report.sample_errors, 0);
        assert_eq!(report.source_ips, 1);
        assert!(report.held >= Duration::from_millis(200));
        assert!(report.table().contains("alive at end"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["alive_at_end"], 50);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_unix_connections_are_checked_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hold.sock");
        let addr = stream_echo(&format!("unix:{}", path.display()), None).await;
        let report = run_hold(&load(addr, 10)).await.unwrap();
        assert_eq!((report.established, report.alive_at_end), (10, 10));
        assert_eq!(report.source_ips, 0);
    }

    #[tokio::test]
    async fn holding_against_a_closed_port_is_a_connect_error() {
        let err = run_hold(&load(closed_tcp_port().await, 5))
            .await
            .unwrap_err();
        assert!(matches!(err, BenchError::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn invalid_hold_loads_are_rejected() {
        let addr = closed_tcp_port().await;
        for bad in [
            load(addr.clone(), 0),
            HoldLoad {
                probes: MAX_PROBES + 1,
                ..load(addr.clone(), 1)
            },
            HoldLoad {
                duration: Duration::MAX,
                ..load(addr.clone(), 1)
            },
        ] {
            let err = run_hold(&bad).await.unwrap_err();
            assert!(matches!(err, BenchError::InvalidLoad(_)), "{err:?}");
        }
        let err = run_hold(&load(addr, usize::MAX / 2)).await.unwrap_err();
        assert!(matches!(err, BenchError::FdLimit { .. }), "{err:?}");
    }
}
