#!/usr/bin/env bash
# Side-by-side echo benchmark, in one run on one machine:
#   sockit echo  vs  a minimal tokio echo (bench/tokio_echo.rs)  vs  Python ThreadingTCPServer
# driven by `sockit bench echo` over {1,64 conns} x {64 B, 16 KiB} x {pipeline 1,16}, plus
# connection rate and UDP echo with 1 and 16 clients. Peers are interleaved within each
# repetition; the summary quotes medians and sockit/tokio ratios.
# PIN=1 pins servers and load generator to separate cores.
# MATRIX=0 skips the throughput matrix; ONLY=REGEX runs only the cells whose name matches. Then (unless HOLD=0) idle-connection memory: 10,000 and 50,000 held connections.
#
# usage: bench/compare.sh [SECONDS_PER_CELL (3)] [REPETITIONS (3)]
# output: a markdown summary on stdout; raw JSON lines in $OUT (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${1:-3}
REPS=${2:-3}
HOLD=${HOLD:-1}
# HOLD_IDLE: sockit's --idle-timeout while holding ("0" for builds older than `never`).
HOLD_IDLE=${HOLD_IDLE:-never}
# HOLD_FLAGS: more sockit flags while holding; the load comes from several 127.0.0.x sources,
# so the per-source cap is lifted ("" for builds older than --max-conns-per-source).
HOLD_FLAGS=${HOLD_FLAGS---max-conns-per-source 60000}
MATRIX=${MATRIX:-1}
# PIN=1: servers on CPU 0, the load generator on CPU 1, so they do not steal each other's core.
if [ "${PIN:-0}" = 1 ]; then SRV="taskset -c 0"; CLI="taskset -c 1"; else SRV=""; CLI=""; fi
OUT=${OUT:-$(mktemp -d /tmp/sockit-bench.XXXXXX)}
mkdir -p "$OUT"

# TOKIO=/path/to/tokio_echo uses a ready build of the reference server (no cargo run here).
if [ -z "${TOKIO:-}" ]; then
  cargo build --release --quiet --example tokio_echo
  TOKIO=target/release/examples/tokio_echo
fi
# SOCKIT=/path/to/sockit measures that build instead (e.g. the one before a change).
if [ -z "${SOCKIT:-}" ]; then
  cargo build --release --quiet --bin sockit
  SOCKIT=target/release/sockit
fi

# Everything here may open tens of thousands of sockets.
ulimit -n "$(ulimit -Hn)" || true

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# wait_addr FILE: waits (bounded) until a server has written its address into FILE.
wait_addr() {
  for _ in $(seq 1 200); do
    if [ -s "$1" ]; then grep -oE '[0-9.]+:[0-9]+' "$1" | head -n1; return; fi
    sleep 0.05
  done
  echo "server did not start: $1" >&2; exit 1
}

start_servers() { # $1 = "" or "--udp"
  local udp=$1 tag=${1:+udp}
  tag=${tag:-tcp}
  $SRV "$SOCKIT" echo --listen 127.0.0.1:0 --max-conns 60000 $udp 2>"$OUT/sockit-$tag.addr" &
  pids+=($!)
  $SRV "$TOKIO" $udp >"$OUT/tokio-$tag.addr" &
  pids+=($!)
  $SRV python3 bench/py_upper_echo.py $udp >"$OUT/python-$tag.addr" &
  pids+=($!)
}

start_servers ""
start_servers "--udp"
declare -A ADDR
for peer in sockit tokio python; do
  for tag in tcp udp; do ADDR[$peer-$tag]=$(wait_addr "$OUT/$peer-$tag.addr"); done
done

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
run_cell() { # cell-name peer transport bench-args...
  local cell=$1 peer=$2 tag=$3
  shift 3
  local json
  json=$($CLI "$SOCKIT" -q bench echo "${ADDR[$peer-$tag]}" --duration "${DUR}s" --json "$@" || echo '{}')
  printf '{"cell":"%s","peer":"%s","report":%s}\n' "$cell" "$peer" "$json" >>"$RESULTS"
}

CELLS=()
for conns in 1 64; do
  for size in 64 16384; do
    for pipe in 1 16; do
      CELLS+=("tcp c=$conns size=$size p=$pipe|tcp|--conns $conns --size $size --pipeline $pipe")
    done
  done
done
CELLS+=("connect rate c=16|tcp|--conns 16 --size 64 --connect-per-request")
CELLS+=("udp c=1|udp|--udp --conns 1 --size 64")
CELLS+=("udp c=16|udp|--udp --conns 16 --size 64")

[ "$MATRIX" = 1 ] || REPS=0
for rep in $(seq 1 "$REPS"); do
  for spec in "${CELLS[@]}"; do
    IFS='|' read -r cell tag args <<<"$spec"
    [[ "$cell" =~ ${ONLY:-.} ]] || continue
    # Rotate the order of peers each repetition so no peer always runs first.
    case $((rep % 3)) in
      1) order="sockit tokio python" ;;
      2) order="tokio python sockit" ;;
      0) order="python sockit tokio" ;;
    esac
    for peer in $order; do
      # shellcheck disable=SC2086
      run_cell "$cell" "$peer" "$tag" $args
    done
    echo "rep $rep: $cell" >&2
  done
done
cleanup
pids=()

HOLD_RESULTS="$OUT/hold.jsonl"
: >"$HOLD_RESULTS"
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Each side needs one descriptor per held connection. Raise the limit if this machine lets us
# (prlimit needs CAP_SYS_RESOURCE to go past the hard limit); otherwise say so and skip.
fd_limit_for() { # conns -> prints the nofile limit to use, or nothing if it cannot be had
  local want=$(($1 + 1000))
  if [ "$want" -le "$(ulimit -Hn)" ]; then echo "$(ulimit -Hn)";
  elif prlimit --nofile="$want:$want" -- true 2>/dev/null; then echo "$want"; fi
}
hold_run() { # peer conns
  local peer=$1 conns=$2 pid addr base peak json limit
  limit=$(fd_limit_for "$conns")
  if [ -z "$limit" ]; then
    echo "hold: skipping $conns connections: the hard fd limit is $(ulimit -Hn) and cannot be raised here" >&2
    printf '{"peer":"%s","conns":%s,"skipped":"hard fd limit %s cannot be raised (no CAP_SYS_RESOURCE)"}\n' \
      "$peer" "$conns" "$(ulimit -Hn)" >>"$HOLD_RESULTS"
    return
  fi
  case $peer in
    sockit) prlimit --nofile="$limit:$limit" -- "$SOCKIT" echo --listen 127.0.0.1:0 \
              --max-conns 60000 --idle-timeout "$HOLD_IDLE" $HOLD_FLAGS 2>"$OUT/hold-$peer.addr" & ;;
    tokio) prlimit --nofile="$limit:$limit" -- "$TOKIO" >"$OUT/hold-$peer.addr" & ;;
  esac
  pid=$!
  pids+=("$pid")
  addr=$(wait_addr "$OUT/hold-$peer.addr")
  base=$(rss_kib "$pid")
  prlimit --nofile="$limit:$limit" -- "$SOCKIT" -q bench hold "$addr" --conns "$conns" \
    --seconds 8s --json >"$OUT/hold-$peer-$conns.json" &
  local bench=$!
  peak=$base
  while kill -0 "$bench" 2>/dev/null; do
    r=$(rss_kib "$pid"); [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.2
  done
  wait "$bench" || true
  json=$(cat "$OUT/hold-$peer-$conns.json")
  printf '{"peer":"%s","conns":%s,"base_kib":%s,"peak_kib":%s,"report":%s}\n' \
    "$peer" "$conns" "$base" "$peak" "${json:-null}" >>"$HOLD_RESULTS"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
if [ "$HOLD" = 1 ]; then
  for conns in 10000 50000; do
    for peer in sockit tokio; do
      echo "hold: $peer $conns" >&2
      hold_run "$peer" "$conns"
    done
  done
fi

python3 bench/summarize.py "$RESULTS" "$HOLD_RESULTS"
echo "raw results: $OUT" >&2
