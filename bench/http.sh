#!/usr/bin/env bash
# Side-by-side static file benchmark, in one run on one machine:
#   sockit http serve  vs  Debian's nginx (config written here)  vs  python3 -m http.server
# serving one directory, driven by wrk over keep-alive: a 13-byte file and a 4 KiB file with
# 64 connections, and a 1 MiB file with 8. Servers are interleaved within each repetition.
# Both sockit and nginx run without access logs (sockit -q, nginx access_log off); nginx has
# one worker process per core and sendfile on, sockit one runtime worker thread per core
# (TOKIO_WORKER_THREADS=$(nproc): pinned to one CPU, tokio would otherwise start one, and on a
# CPU shared with other work each runnable thread gets its own share, so the counts must match).
# PIN=1 puts the servers on CPU 0 and wrk on CPU 1.
# BEFORE=path/to/an/older/sockit adds that build as a fourth server, interleaved with the
# others, so a change is measured before and after in one run.
# Besides req/s, each cell reports the server's CPU time per request (utime+stime of all its
# processes and threads over the cell, from /proc): on a machine shared with other work
# that figure moves much less than req/s does.
# Then IDLE_CONNS (10000) idle keep-alive connections (each has made one request) are held
# to sockit (and the BEFORE build) and to nginx in turn and their RSS growth per connection is
# reported, against a baseline read with one such connection held for 2 s (as the rest are).
#
# usage: bench/http.sh [SECONDS_PER_CELL (5)] [REPETITIONS (3)]
# output: markdown tables on stdout (medians, then each repetition's sockit/nginx req/s ratio);
# raw wrk output in $OUT (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${1:-5}
REPS=${2:-3}
if [ "${PIN:-0}" = 1 ]; then SRV="taskset -c 0"; CLI="taskset -c 1"; else SRV=""; CLI=""; fi
OUT=${OUT:-$(mktemp -d /tmp/sockit-http-bench.XXXXXX)}
NGINX=${NGINX:-/usr/sbin/nginx}
if [ -z "${SOCKIT:-}" ]; then
  cargo build --release --quiet --bin sockit
  SOCKIT=${CARGO_TARGET_DIR:-target}/release/sockit
fi
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
IDLE_CONNS=${IDLE_CONNS:-10000}
# Room for the idle connections on both ends (servers and the client inherit it).
ulimit -n $((IDLE_CONNS * 2 + 4096)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT: waits (bounded) until something accepts on 127.0.0.1:PORT.
wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return; fi
    sleep 0.05
  done
  echo "nothing listens on $1" >&2; exit 1
}

# The files, readable by nginx's workers (user nobody when started as root).
WWW="$OUT/www"
mkdir -p "$WWW"
chmod 755 "$OUT" "$WWW"
printf 'Hello World!\n' >"$WWW/13.txt"
head -c 4096 /dev/urandom >"$WWW/4k.bin"
head -c $((1 << 20)) /dev/urandom >"$WWW/1m.bin"
chmod 644 "$WWW"/*

MAX_CONNS=$((IDLE_CONNS + 1000))
SOCKIT_PORT=$(free_port)
TOKIO_WORKER_THREADS=$(nproc) $SRV "$SOCKIT" -q http serve --dir "$WWW" --listen "127.0.0.1:$SOCKIT_PORT" --max-conns "$MAX_CONNS" \
  2>"$OUT/sockit.log" &
SOCKIT_PID=$!
pids+=($!)
NAMES=(sockit nginx python)
if [ -n "${BEFORE:-}" ]; then
  BEFORE_PORT=$(free_port)
  TOKIO_WORKER_THREADS=$(nproc) $SRV "$BEFORE" -q http serve --dir "$WWW" --listen "127.0.0.1:$BEFORE_PORT" --max-conns "$MAX_CONNS" \
    2>"$OUT/before.log" &
  BEFORE_PID=$!
  pids+=($!)
  NAMES=(sockit before nginx python)
fi

NGINX_PORT=$(free_port)
mkdir -p "$OUT/nginx"
cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes $(nproc);
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log;
daemon off;
worker_rlimit_nofile $((MAX_CONNS * 2));
events { worker_connections $MAX_CONNS; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $OUT/nginx/body;
  proxy_temp_path $OUT/nginx/proxy;
  fastcgi_temp_path $OUT/nginx/fastcgi;
  uwsgi_temp_path $OUT/nginx/uwsgi;
  scgi_temp_path $OUT/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WWW;
  }
}
CONF
$SRV "$NGINX" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log" &
NGINX_PID=$!
pids+=($!)

PY_PORT=$(free_port)
$SRV python3 -m http.server --bind 127.0.0.1 --directory "$WWW" "$PY_PORT" >"$OUT/python.log" 2>&1 &
PY_PID=$!
pids+=($!)

wait_port "$SOCKIT_PORT"; wait_port "$NGINX_PORT"; wait_port "$PY_PORT"
[ -n "${BEFORE:-}" ] && wait_port "$BEFORE_PORT"

# server_pids NAME: the PIDs of that server's processes (nginx: its master and workers).
server_pids() {
  case $1 in
    sockit) echo "$SOCKIT_PID" ;;
    before) echo "$BEFORE_PID" ;;
    python) echo "$PY_PID" ;;
    nginx) echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true) ;;
  esac
}

# cpu_ticks NAME: utime+stime of that server's processes (all threads), in clock ticks.
cpu_ticks() {
  local total=0 pid
  for pid in $(server_pids "$1"); do
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the name.
    total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

# run NAME PORT FILE CONNS REP: one wrk cell; prints "req/s p99_ms MB/s cpu_us_per_request".
run() {
  local f="$OUT/$1-$3-c$4-r$5.txt" before after
  before=$(cpu_ticks "$1")
  $CLI wrk -t1 -c"$4" -d"${DUR}s" --latency "http://127.0.0.1:$2/$3" >"$f"
  after=$(cpu_ticks "$1")
  python3 - "$f" "$((after - before))" "$HZ" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
ticks, hz = int(sys.argv[2]), int(sys.argv[3])
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
def mb(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"B": 1e-6, "KB": 1e-3 * 1.024, "MB": 1.048576, "GB": 1073.741824}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
tput = mb(re.search(r"Transfer/sec:\s+(\S+)", t).group(1))
requests = int(re.search(r"(\d+) requests in", t).group(1))
cpu_us = ticks * 1e6 / hz / max(requests, 1)
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p99:.2f} {tput:.1f} {cpu_us:.1f}" + (f" ERR{errors.group(1)}" if errors else ""))
PY
}

CELLS=("13.txt 64" "4k.bin 64" "1m.bin 8")
declare -A RES
for rep in $(seq 1 "$REPS"); do
  for cell in "${CELLS[@]}"; do
    set -- $cell
    # Rotate the order each repetition so no server always runs first.
    n=${#NAMES[@]}
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${NAMES[$(((i + rep) % n))]}"); done
    for name in "${order[@]}"; do
      case $name in
        sockit) port=$SOCKIT_PORT ;; before) port=$BEFORE_PORT ;;
        nginx) port=$NGINX_PORT ;; python) port=$PY_PORT ;;
      esac
      RES["$name $1 $rep"]=$(run "$name" "$port" "$1" "$2" "$rep")
    done
  done
done

# The median of the repetitions' values of field $3 (1 req/s, 2 p99 ms, 3 MB/s, 4 CPU us/req).
median() {
  for rep in $(seq 1 "$REPS"); do echo "${RES["$1 $2 $rep"]}" | cut -d' ' -f"$3"; done |
    sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

echo "Medians of $REPS repetitions, ${DUR}s each."
echo
echo "| file, conns | sockit req/s | nginx req/s | python req/s | sockit/nginx req/s | p99 sockit / nginx (ms) | sockit / nginx MB/s | CPU us/req sockit / nginx | sockit/nginx CPU per req |"
echo "|---|---|---|---|---|---|---|---|---|"
for cell in "${CELLS[@]}"; do
  set -- $cell
  s=$(median sockit "$1" 1); n=$(median nginx "$1" 1); p=$(median python "$1" 1)
  sp=$(median sockit "$1" 2); np=$(median nginx "$1" 2)
  st=$(median sockit "$1" 3); nt=$(median nginx "$1" 3)
  sc=$(median sockit "$1" 4); nc=$(median nginx "$1" 4)
  echo "| $1, -c$2 | $s | $n | $p | $(ratio "$s" "$n") | $sp / $np | $st / $nt | $sc / $nc | $(ratio "$sc" "$nc") |"
done
# Per repetition, sockit's req/s over nginx's in the same repetition: on a shared machine the
# medians of the two columns can come from different moments, these ratios cannot.
echo
echo "| file, conns | sockit/nginx req/s per repetition, sorted | median | reps ≥ 1.0 |"
echo "|---|---|---|---|"
for cell in "${CELLS[@]}"; do
  set -- $cell
  for rep in $(seq 1 "$REPS"); do
    s=$(echo "${RES["sockit $1 $rep"]}" | cut -d' ' -f1)
    n=$(echo "${RES["nginx $1 $rep"]}" | cut -d' ' -f1)
    ratio "$s" "$n"
  done | sort -g | awk -v cell="$1, -c$2" '
    { a[NR] = $1; list = list (NR > 1 ? " " : "") $1; if ($1 >= 1.0) met++ }
    END {
      med = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
      printf "| %s | %s | %.2f | %d of %d |\n", cell, list, med, met, NR
    }'
done
if [ -n "${BEFORE:-}" ]; then
  echo
  echo "| file, conns | before req/s | after req/s | after/before req/s | before/nginx | after/nginx | CPU us/req before / after |"
  echo "|---|---|---|---|---|---|---|"
  for cell in "${CELLS[@]}"; do
    set -- $cell
    b=$(median before "$1" 1); s=$(median sockit "$1" 1); n=$(median nginx "$1" 1)
    bc=$(median before "$1" 4); sc=$(median sockit "$1" 4)
    echo "| $1, -c$2 | $b | $s | $(ratio "$s" "$b") | $(ratio "$b" "$n") | $(ratio "$s" "$n") | $bc / $sc |"
  done
fi

# rss_kib NAME: the summed VmRSS of that server's processes, KiB.
rss_kib() {
  local total=0 pid
  for pid in $(server_pids "$1"); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
  done
  echo "$total"
}

# idle NAME PORT: holds IDLE_CONNS keep-alive connections (each has made one request) and
# prints "connections_alive rss_before_kib rss_after_kib".
idle() {
  # The baseline is read with one keep-alive connection held idle for 2 s, as the rest will
  # be: sockit gives its allocator's free pages back (malloc_trim) within 1 s of connections
  # parking, which would otherwise also return what the wrk cells left and hide the cost.
  local before
  python3 - "$2" "$OUT/idle-$1.warm" <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET /13.txt HTTP/1.1\r\nHost: b\r\n\r\n")
s.recv(4096)
open(sys.argv[2], "w").close()
time.sleep(4)
PY
  local warm=$!
  for _ in $(seq 1 100); do [ -e "$OUT/idle-$1.warm" ] && break; sleep 0.1; done
  sleep 2
  before=$(rss_kib "$1")
  wait "$warm" || true
  rm -f "$OUT/idle-$1"
  python3 - "$2" "$IDLE_CONNS" "$OUT/idle-$1" >"$OUT/idle-$1.alive" <<'PY' &
import os, socket, sys, time
port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
request = b"GET /13.txt HTTP/1.1\r\nHost: b\r\n\r\n"
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(request)
    got = b""
    while not got.endswith(b"Hello World!\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    conns.append(s)
open(ready, "w").close()
time.sleep(4)  # the RSS is read now
alive = 0
for s in conns:
    try:
        s.sendall(request)
        if s.recv(4096):
            alive += 1
    except OSError:
        pass
print(alive)
PY
  local client=$!
  for _ in $(seq 1 1200); do [ -e "$OUT/idle-$1" ] && break; sleep 0.1; done
  sleep 2
  local after
  after=$(rss_kib "$1")
  wait "$client" || true
  echo "$(cat "$OUT/idle-$1.alive") $before $after"
}

echo
echo "| $IDLE_CONNS idle keep-alive connections | still alive after | RSS before (KiB) | RSS with them (KiB) | per connection (bytes) |"
echo "|---|---|---|---|---|"
for name in sockit ${BEFORE:+before} nginx; do
  case $name in sockit) port=$SOCKIT_PORT ;; before) port=$BEFORE_PORT ;; nginx) port=$NGINX_PORT ;; esac
  read -r alive b a <<<"$(idle "$name" "$port")"
  echo "| $name | $alive | $b | $a | $(( (a - b) * 1024 / IDLE_CONNS )) |"
  sleep 2  # let the closed connections go before the next server's
done
echo
echo "raw wrk output: $OUT"
