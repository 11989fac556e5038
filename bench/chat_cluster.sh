#!/usr/bin/env bash
# Chat across nodes (issue 15): 3 `sockit chat serve --redis` nodes sharing 1 Redis, against
# Redis pub/sub alone (the engine carrying the cluster), in one run on one machine, all on
# 127.0.0.1, runs interleaved (cluster, pub/sub, cluster, …) so both see the same load.
#
# The same client drives both: `sockit bench chat` with S senders and R receivers in one room,
# 32-byte messages, each sender at most WINDOW messages ahead of the slowest receiver. For the
# cluster its clients are spread round-robin over the three nodes' line ports, so most
# deliveries cross Redis (a node → XADD in a MULTI → every other node's XREAD → its clients).
# Redis pub/sub alone is one PUBLISH per message and one push per subscriber, with no
# persistence, no history, no order or exactly-once guarantee across a reconnect: the ceiling
# the cluster is measured against, not an equal.
#
# A shape `SxR@RATE` paces each sender at RATE messages/s for PACED_DURATION (the issue's
# "1,000 clients over 3 nodes, one sender at 1,000 msg/s").
#
# usage: bench/chat_cluster.sh [DURATION (5s)]
# env:   SHAPES="1x100 10x100 1x999@1000", RUNS=3, WINDOW=100, PACED_DURATION=10s, OUT=DIR.
# output: markdown tables on stdout (each run, then medians and cluster ÷ pub/sub).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-5s}
SHAPES=${SHAPES-"1x100 10x100 1x999@1000"}
RUNS=${RUNS:-3}
WINDOW=${WINDOW:-100}
PACED_DURATION=${PACED_DURATION:-10s}
OUT=${OUT:-$(mktemp -d /tmp/sockit-chat-cluster-bench.XXXXXX)}
mkdir -p "$OUT"
log() { echo "# $*" >&2; }

if ! command -v redis-server >/dev/null; then
  log "installing redis-server"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
fi

# SOCKIT=/path/to/sockit measures that build instead.
if [ -z "${SOCKIT:-}" ]; then
  cargo build --release --quiet --bin sockit
  SOCKIT=${CARGO_TARGET_DIR:-$PWD/target}/release/sockit
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # bounded wait until something listens on $1
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1)).close()" 2>/dev/null && return 0
    sleep 0.05
  done
  log "nothing listens on $1"; return 1
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# The cluster's Redis (as an operator would run it, without persistence for the benchmark)
# and a second, idle-until-its-turn Redis for pub/sub alone.
CLUSTER_REDIS=$(free_port)
redis-server --port "$CLUSTER_REDIS" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$OUT" >"$OUT/redis-cluster.log" 2>&1 &
pids+=($!); CLUSTER_REDIS_PID=$!
PUBSUB_REDIS=$(free_port)
redis-server --port "$PUBSUB_REDIS" --bind 127.0.0.1 --save '' --appendonly no \
  --client-output-buffer-limit "pubsub 0 0 0" --dir "$OUT" >"$OUT/redis-pubsub.log" 2>&1 &
pids+=($!); PUBSUB_REDIS_PID=$!
for p in "$CLUSTER_REDIS" "$PUBSUB_REDIS"; do wait_port "$p"; done

nodes=(); node_pids=()
for i in 1 2 3; do
  port=$(free_port)
  "$SOCKIT" -q chat serve --listen 127.0.0.1:0 --line-listen "127.0.0.1:$port" \
    --rate 1000000 --burst 1000000 --redis "redis://127.0.0.1:$CLUSTER_REDIS/" \
    2>"$OUT/node$i.err" &
  pids+=($!); node_pids+=($!)
  wait_port "$port"
  nodes+=("127.0.0.1:$port")
done

for shape in $SHAPES; do
  clients=${shape%@*}
  S=${clients%x*}; R=${clients#*x}
  pace=(); duration=$DURATION
  if [ "$clients" != "$shape" ]; then pace=(--rate "${shape#*@}"); duration=$PACED_DURATION; fi
  for run in $(seq "$RUNS"); do
    for broker in cluster pubsub; do
      case $broker in
        cluster) target=("${nodes[@]}") ;;
        pubsub) target=(--redis "127.0.0.1:$PUBSUB_REDIS") ;;
      esac
      json=$OUT/$broker-$shape-$run.json
      "$SOCKIT" -q bench chat "${target[@]}" --senders "$S" --receivers "$R" "${pace[@]}" \
        --duration "$duration" --window "$WINDOW" --json >"$json" || true  # a failed load is still reported
      case $broker in
        cluster) rss="$(rss_kib "${node_pids[0]}")/$(rss_kib "${node_pids[1]}")/$(rss_kib "${node_pids[2]}") + redis $(rss_kib "$CLUSTER_REDIS_PID")" ;;
        pubsub) rss="redis $(rss_kib "$PUBSUB_REDIS_PID")" ;;
      esac
      echo "$rss" >"$json.rss"
    done
  done
done

python3 - "$OUT" "$RUNS" $SHAPES <<'EOF'
import json, statistics, sys
out, runs, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(broker, shape, run):
    r = json.load(open(f"{out}/{broker}-{shape}-{run}.json"))
    r["rss"] = open(f"{out}/{broker}-{shape}-{run}.json.rss").read().strip()
    return r
print("| shape (senders×receivers[@msg/s]) | run | broker | deliveries/s | p50 µs | p99 µs | delivered/expected | out of order | RSS KiB (nodes + redis) |")
print("|---|---|---|---:|---:|---:|---:|---:|---|")
summary = []
for shape in shapes:
    rates = {"cluster": [], "pubsub": []}
    p99 = {"cluster": [], "pubsub": []}
    for run in range(1, runs + 1):
        for broker in ("cluster", "pubsub"):
            r = load(broker, shape, run)
            expected = r["sent"] * r["receivers"]
            failed = bool(r.get("failure"))
            rate = "FAILED" if failed else f"{r['deliveries_per_sec']:,.0f}"
            if not failed:
                rates[broker].append(r["deliveries_per_sec"])
                p99[broker].append(r["p99_us"])
            print(f"| {shape} | {run} | {broker} | {rate} | {r['p50_us']} | {r['p99_us']} "
                  f"| {r['deliveries']}/{expected} | {r['out_of_order']} | {r['rss']} |")
            if failed:
                print(f"  {broker} {shape} run {run} failed: {r['failure']}", file=sys.stderr)
    if rates["cluster"] and rates["pubsub"]:
        c, p = statistics.median(rates["cluster"]), statistics.median(rates["pubsub"])
        summary.append(f"| {shape} | {c:,.0f} | {p:,.0f} | {c / p:.2f} | "
                       f"{statistics.median(p99['cluster'])} | {statistics.median(p99['pubsub'])} |")
    else:
        summary.append(f"| {shape} | – | – | no run where both completed | | |")
print()
print("| shape | cluster deliveries/s (median) | pub/sub deliveries/s (median) | cluster ÷ pub/sub | cluster p99 µs | pub/sub p99 µs |")
print("|---|---:|---:|---:|---:|---:|")
print("\n".join(summary))
EOF
log "raw JSON in $OUT"
