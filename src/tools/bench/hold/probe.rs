//! Latency probes during a hold: one round trip on a fresh connection and one on a held one.

use super::conn::round_trip;
use super::PROBE_BYTES;
use crate::net::{Addr, Stream};
use crate::tools::bench::{connect_stream, fill_pattern, keep_first, Latency};

/// Latency probes during the hold: on one fresh connection (reopened after a failure) and on
/// a sample of the held ones.
pub(super) struct Prober {
    addr: Addr,
    fresh_conn: Option<Stream>,
    tx: [u8; PROBE_BYTES],
    rx: [u8; PROBE_BYTES],
    /// Round trips on the fresh connection.
    pub(super) fresh: Latency,
    /// Failed probes (and probe connects) on the fresh connection.
    pub(super) fresh_errors: u64,
    /// Round trips on held connections.
    pub(super) held: Latency,
    /// Failed probes on held connections.
    pub(super) held_errors: u64,
    /// The first probe error seen.
    pub(super) first_error: Option<String>,
}

impl Prober {
    pub(super) fn new(addr: Addr) -> Self {
        let mut tx = [0; PROBE_BYTES];
        fill_pattern(&mut tx, 0x9_0BE5);
        Prober {
            addr,
            fresh_conn: None,
            tx,
            rx: [0; PROBE_BYTES],
            fresh: Latency::new(),
            fresh_errors: 0,
            held: Latency::new(),
            held_errors: 0,
            first_error: None,
        }
    }

    /// One round trip on the fresh connection, opening it first if there is none.
    pub(super) async fn probe_fresh(&mut self) {
        let mut stream = match self.fresh_conn.take() {
            Some(stream) => stream,
            None => match connect_stream(&self.addr).await {
                Ok(stream) => stream,
                Err(e) => {
                    self.fresh_errors += 1;
                    keep_first(&mut self.first_error, e);
                    return;
                }
            },
        };
        match round_trip(&mut stream, &self.tx, &mut self.rx).await {
            Ok(latency) => {
                self.fresh.record(latency);
                self.fresh_conn = Some(stream);
            }
            Err(e) => {
                self.fresh_errors += 1;
                keep_first(&mut self.first_error, e);
            }
        }
    }

    /// A probe still running `grace` after the hold ended was cut off: one failure.
    pub(super) fn cut_off(&mut self, grace: std::time::Duration) {
        self.fresh_errors += 1;
        keep_first(
            &mut self.first_error,
            format!("a probe was unfinished {grace:?} after the hold's end"),
        );
    }

    /// One round trip on `stream`, a held connection.
    pub(super) async fn probe_held(&mut self, stream: &mut Stream) {
        match round_trip(stream, &self.tx, &mut self.rx).await {
            Ok(latency) => self.held.record(latency),
            Err(e) => {
                self.held_errors += 1;
                keep_first(&mut self.first_error, e);
            }
        }
    }
}
