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
# Then the browser's way in (issue 15): one `sockit chat serve --line-listen --web-listen`, the
# same WS_SHAPE (1 sender × 100 receivers) once over the line protocol and once over the chat
# page's WebSocket protocol (`bench chat --ws`: JSON messages in WebSocket frames), alternating
# line/ws WS_RUNS times so both see the same machine load; each run's ws ÷ line ratio and the
# medians. The target is ws ≥ 0.5× line.
#
# usage: bench/chat.sh [DURATION (5s)]
# env:   SHAPES="1x100 10x100 1x999@1000" (SENDERSxRECEIVERS[@RATE]; empty skips the three-broker
#        table), WINDOW=100 (senders × WINDOW must stay under sockit's 4,096-message client
#        queue), PACED_DURATION=10s, WS_SHAPE=1x100, WS_RUNS=5 (0 skips the WebSocket
#        comparison), OUT=DIR for raw JSON.
# output: markdown tables on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-5s}
SHAPES=${SHAPES-"1x100 10x100 1x999@1000"}
PACED_DURATION=${PACED_DURATION:-10s}
WINDOW=${WINDOW:-100}
WS_SHAPE=${WS_SHAPE:-1x100}
WS_RUNS=${WS_RUNS:-5}
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

if [ -n "$SHAPES" ]; then
  echo "| shape (senders×receivers[@msg/s]) | broker | deliveries/s | p50 µs | p99 µs | delivered/expected | out of order | server RSS KiB |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
fi
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
# The browser's protocol against the line protocol, on one server, runs interleaved.
if [ "$WS_RUNS" -gt 0 ]; then
  LINE_PORT=$(free_port); WEB_PORT=$(free_port)
  "$SOCKIT" -q chat serve --listen 127.0.0.1:0 --line-listen "127.0.0.1:$LINE_PORT" \
    --web-listen "127.0.0.1:$WEB_PORT" --rate 1000000 --burst 1000000 2>"$OUT/sockit-web.err" &
  pids+=($!); WEB_PID=$!
  for p in "$LINE_PORT" "$WEB_PORT"; do wait_port "$p"; done
  S=${WS_SHAPE%x*}; R=${WS_SHAPE#*x}
  for run in $(seq "$WS_RUNS"); do
    for proto in line ws; do
      case $proto in
        line) target=("127.0.0.1:$LINE_PORT") ;;
        ws) target=(--ws "127.0.0.1:$WEB_PORT") ;;
      esac
      "$SOCKIT" -q bench chat "${target[@]}" --senders "$S" --receivers "$R" \
        --duration "$DURATION" --window "$WINDOW" --json >"$OUT/web-$proto-$run.json" || true
      rss_kib "$WEB_PID" >"$OUT/web-$proto-$run.rss"
    done
  done
  python3 - "$OUT" "$WS_RUNS" "$WS_SHAPE" <<'EOF'
import json, statistics, sys
out, runs, shape = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(proto, run):
    r = json.load(open(f"{out}/web-{proto}-{run}.json"))
    r["rss"] = open(f"{out}/web-{proto}-{run}.rss").read().strip()
    return r
print()
print(f"WebSocket vs line protocol, {shape}, one `sockit chat serve`, runs interleaved:")
print()
print("| run | protocol | deliveries/s | p50 µs | p99 µs | delivered/expected | out of order | server RSS KiB | ws ÷ line |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
ratios = []
rates = {"line": [], "ws": []}
p99s = {"line": [], "ws": []}
for run in range(1, runs + 1):
    rows = {p: load(p, run) for p in ("line", "ws")}
    ok = all(not r.get("failure") for r in rows.values()) and rows["line"]["deliveries_per_sec"] > 0
    ratio = rows["ws"]["deliveries_per_sec"] / rows["line"]["deliveries_per_sec"] if ok else None
    if ratio is not None:
        ratios.append(ratio)
    for p, r in rows.items():
        expected = r["sent"] * r["receivers"]
        failed = bool(r.get("failure"))
        rate = "FAILED" if failed else f"{r['deliveries_per_sec']:,.0f}"
        if not failed:
            rates[p].append(r["deliveries_per_sec"])
            p99s[p].append(r["p99_us"])
        last = f"{ratio:.2f}" if p == "ws" and ratio is not None else ""
        print(f"| {run} | {p} | {rate} | {r['p50_us']} | {r['p99_us']} | {r['deliveries']}/{expected} "
              f"| {r['out_of_order']} | {r['rss']} | {last} |")
        if failed:
            print(f"  {p} run {run} failed: {r['failure']}", file=sys.stderr)
print()
if ratios:
    med = statistics.median(ratios)
    print(f"median deliveries/s: line {statistics.median(rates['line']):,.0f}, "
          f"ws {statistics.median(rates['ws']):,.0f}; median ws ÷ line {med:.2f} "
          f"(runs: {', '.join(f'{x:.2f}' for x in ratios)}); median p99 µs: "
          f"line {statistics.median(p99s['line'])}, ws {statistics.median(p99s['ws'])}; "
          f"target ws >= 0.5x line: {'met' if med >= 0.5 else 'NOT met'}")
else:
    print("no run where both loads completed: no ratio")
EOF
fi
log "raw JSON in $OUT"
