//! Stream echo clients (TCP or Unix): pipelined batches on one connection each, or one
//! connection per request.

use std::io;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::echo::{collect, ConnStats, EchoLoad, Plan};
use super::{
    bounded, connect_stream, exchange, fill_pattern, run_bounded, BenchError, CONNECT_PARALLELISM,
};
use crate::net::{Addr, Stream};

pub(super) async fn run_stream_clients(
    load: &EchoLoad,
) -> Result<(ConnStats, Duration), BenchError> {
    let addr = load.addr.clone();
    let opened = run_bounded((0..load.conns).collect(), CONNECT_PARALLELISM, move |i| {
        let addr = addr.clone();
        async move { (i, connect_stream(&addr).await) }
    })
    .await?;
    let mut stats = ConnStats::new();
    let mut streams = Vec::with_capacity(opened.len());
    let mut first_err = None;
    for (i, res) in opened {
        match res {
            Ok(stream) => streams.push((i, stream)),
            Err(e) => {
                stats.connect_failed(&e);
                first_err.get_or_insert(e);
            }
        }
    }
    if let (true, Some(source)) = (streams.is_empty(), first_err) {
        return Err(BenchError::Connect {
            addr: load.addr.clone(),
            source,
        });
    }
    let plan = Plan::starting_now(load);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, stream) in streams {
        tasks.spawn(run_stream_client(stream, i as u64, plan));
    }
    collect(tasks, stats, start).await
}

/// Keeps `pipeline` messages in flight on one connection until the deadline.
async fn run_stream_client(mut stream: Stream, seed: u64, plan: Plan) -> ConnStats {
    let mut tx = vec![0; plan.size * plan.pipeline];
    fill_pattern(&mut tx, seed);
    let mut rx = vec![0; tx.len()];
    let mut stats = ConnStats::new();
    let mut attempted = 0;
    while plan.keep_going(attempted) {
        attempted += plan.pipeline as u64;
        if let Err(e) = echo_batch(&mut stream, &tx, &mut rx, plan, &mut stats).await {
            stats.failed(e);
            break;
        }
    }
    stats
}

/// Sends one batch and records each message as its echo completes.
async fn echo_batch(
    stream: &mut Stream,
    tx: &[u8],
    rx: &mut [u8],
    plan: Plan,
    stats: &mut ConnStats,
) -> io::Result<()> {
    let start = Instant::now();
    let batch = exchange(stream, tx, rx, plan.size, |sent, echoed, at| {
        stats.check(plan.verify, sent, echoed, at - start);
    });
    bounded("echo", plan.cutoff, batch).await
}

pub(super) async fn run_per_request_clients(
    load: &EchoLoad,
) -> Result<(ConnStats, Duration), BenchError> {
    // One connection first, so an unreachable target fails fast instead of as a flood of errors.
    connect_stream(&load.addr)
        .await
        .map_err(|source| BenchError::Connect {
            addr: load.addr.clone(),
            source,
        })?;
    let plan = Plan::starting_now(load);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..load.conns {
        tasks.spawn(run_per_request_client(load.addr.clone(), i as u64, plan));
    }
    collect(tasks, ConnStats::new(), start).await
}

/// Connects, echoes one message and closes, until the deadline.
async fn run_per_request_client(addr: Addr, seed: u64, plan: Plan) -> ConnStats {
    let mut tx = vec![0; plan.size];
    fill_pattern(&mut tx, seed);
    let mut rx = vec![0; plan.size];
    let mut stats = ConnStats::new();
    let mut attempted = 0;
    while plan.keep_going(attempted) {
        attempted += 1;
        let start = Instant::now();
        let mut stream = match bounded("connect", plan.cutoff, Stream::connect(&addr)).await {
            Ok(stream) => stream,
            Err(e) => {
                stats.connect_failed(e);
                continue;
            }
        };
        let batch = exchange(&mut stream, &tx, &mut rx, plan.size, |sent, echoed, at| {
            stats.check(plan.verify, sent, echoed, at - start);
        });
        if let Err(e) = bounded("echo", plan.cutoff, batch).await {
            stats.failed(e);
        }
    }
    stats
}
