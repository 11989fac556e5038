#!/usr/bin/env bash
# Side-by-side chat fan-out benchmark, in one run on one machine, everything on 127.0.0.1:
#   sockit chat (line protocol)  vs  ncat --chat  vs  Redis PUBLISH/SUBSCRIBE
#
# The same client drives all three: `sockit bench chat` with K receivers and S senders in one
# room, 32-byte messages, each sender at most WINDOW messages ahead of the slowest receiver.
# It reports deliveries/s (messages received by receivers, per second of wall time) and the
# send-to-delivery latency (p50/p99), and this script adds each server's VmRSS at the end.
#
# Fairness notes: sockit parses every line, checks the rate limit (raised here to 1,000,000/s
# so it does not cap the load), escapes the text, formats `<nick> text` once per message and
# batches each receiver's writes; it also echoes each message to its sender (drained, not
# counted). ncat --chat relays raw read chunks with no parsing (the ceiling for a broker that
# does per-message work) and does not echo. Redis gets RESP PUBLISH commands and sends RESP
# pushes. The load generator shares the machine's cores with the server under test.
#
# A shape `SxR@RATE` paces each sender at RATE messages/s instead of as fast as the window
# allows (the issue's "1,000 clients in one room, one sender at 1,000 msg/s"); it runs for
# PACED_DURATION and its latency is delivery latency, not queueing behind the window.
#
# usage: bench/chat.sh [DURATION (5s)]
# env:   SHAPES="1x100 10x100 1x999@1000" (SENDERSxRECEIVERS[@RATE]), WINDOW=100 (senders ×
#        WINDOW must stay under sockit's 4,096-message client queue), PACED_DURATION=10s,
#        OUT=DIR for raw JSON.
# output: a markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-5s}
SHAPES=${SHAPES:-"1x100 10x100 1x999@1000"}
PACED_DURATION=${PACED_DURATION:-10s}
WINDOW=${WINDOW:-100}
OUT=${OUT:-$(mktemp -d /tmp/sockit-chat-bench.XXXXXX)}
mkdir -p "$OUT"
log() { echo "# $*" >&2; }

need=()
command -v ncat >/dev/null || need+=(ncat)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

# SOCKIT=/path/to/sockit measures that build instead (e.g. the one before a change).
if [ -z "${SOCKIT:-}" ]; then
  cargo build --release --quiet --bin sockit
  SOCKIT=$PWD/target/release/sockit
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

SOCKIT_PORT=$(free_port)
"$SOCKIT" -q chat serve --listen 127.0.0.1:0 --line-listen "127.0.0.1:$SOCKIT_PORT" \
  --rate 1000000 --burst 1000000 2>"$OUT/sockit.err" &
pids+=($!); SOCKIT_PID=$!
NCAT_PORT=$(free_port)
ncat --chat --max-conns 10000 -l 127.0.0.1 "$NCAT_PORT" 2>"$OUT/ncat.err" &
pids+=($!); NCAT_PID=$!
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --client-output-buffer-limit "pubsub 0 0 0" >"$OUT/redis.log" 2>&1 &
pids+=($!); REDIS_PID=$!
for p in "$SOCKIT_PORT" "$NCAT_PORT" "$REDIS_PORT"; do wait_port "$p"; done

echo "| shape (senders×receivers[@msg/s]) | broker | deliveries/s | p50 µs | p99 µs | delivered/expected | out of order | server RSS KiB |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for shape in $SHAPES; do
  clients=${shape%@*}
  S=${clients%x*}; R=${clients#*x}
  pace=(); duration=$DURATION
  if [ "$clients" != "$shape" ]; then pace=(--rate "${shape#*@}"); duration=$PACED_DURATION; fi
  for broker in sockit ncat redis; do
    case $broker in
      sockit) addr=127.0.0.1:$SOCKIT_PORT; flag=""; pid=$SOCKIT_PID ;;
      ncat) addr=127.0.0.1:$NCAT_PORT; flag="--raw"; pid=$NCAT_PID ;;
      redis) addr=127.0.0.1:$REDIS_PORT; flag="--redis"; pid=$REDIS_PID ;;
    esac
    json=$OUT/$broker-$shape.json
    # shellcheck disable=SC2086
    "$SOCKIT" -q bench chat "$addr" $flag --senders "$S" --receivers "$R" "${pace[@]}" \
      --duration "$duration" --window "$WINDOW" --json >"$json" || true  # a failed load is still reported, with its "failure"
    python3 - "$json" "$shape" "$broker" "$(rss_kib "$pid")" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
shape, broker, rss = sys.argv[2:5]
expected = r["sent"] * r["receivers"]
rate = "FAILED" if r.get("failure") else f"{r['deliveries_per_sec']:,.0f}"
print(f"| {shape} | {broker} | {rate} | {r['p50_us']} | {r['p99_us']} "
      f"| {r['deliveries']}/{expected} | {r['out_of_order']} | {rss} |")
if r.get("failure"):
    print(f"  {broker} {shape} failed: {r['failure']}", file=sys.stderr)
EOF
  done
done
log "raw JSON in $OUT"
