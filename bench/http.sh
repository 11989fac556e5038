#!/usr/bin/env bash
# Side-by-side static file benchmark, in one run on one machine:
#   sockit http serve  vs  Debian's nginx (config written here)  vs  python3 -m http.server
# serving one directory, driven by wrk over keep-alive: a 13-byte file and a 4 KiB file with
# 64 connections, and a 1 MiB file with 8. Servers are interleaved within each repetition.
# Both sockit and nginx run without access logs (sockit -q, nginx access_log off); nginx has
# one worker per core and sendfile on.
# PIN=1 puts the servers on CPU 0 and wrk on CPU 1.
#
# usage: bench/http.sh [SECONDS_PER_CELL (5)] [REPETITIONS (3)]
# output: a markdown table on stdout; raw wrk output in $OUT (default a temp dir).
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

SOCKIT_PORT=$(free_port)
$SRV "$SOCKIT" -q http serve --dir "$WWW" --listen "127.0.0.1:$SOCKIT_PORT" 2>"$OUT/sockit.log" &
pids+=($!)

NGINX_PORT=$(free_port)
mkdir -p "$OUT/nginx"
cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes $(nproc);
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log;
daemon off;
events { worker_connections 4096; }
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
pids+=($!)

PY_PORT=$(free_port)
$SRV python3 -m http.server --bind 127.0.0.1 --directory "$WWW" "$PY_PORT" >"$OUT/python.log" 2>&1 &
pids+=($!)

wait_port "$SOCKIT_PORT"; wait_port "$NGINX_PORT"; wait_port "$PY_PORT"

# run NAME PORT FILE CONNS REP: one wrk cell; prints "req/s p99_ms MB/s".
run() {
  local f="$OUT/$1-$3-c$4-r$5.txt"
  $CLI wrk -t1 -c"$4" -d"${DUR}s" --latency "http://127.0.0.1:$2/$3" >"$f"
  python3 - "$f" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
def mb(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"B": 1e-6, "KB": 1e-3 * 1.024, "MB": 1.048576, "GB": 1073.741824}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p99 = ms(re.search(r"99%\s+(\S+)", t).group(1))
tput = mb(re.search(r"Transfer/sec:\s+(\S+)", t).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p99:.2f} {tput:.1f}" + (f" ERR{errors.group(1)}" if errors else ""))
PY
}

CELLS=("13.txt 64" "4k.bin 64" "1m.bin 8")
declare -A RES
for rep in $(seq 1 "$REPS"); do
  for cell in "${CELLS[@]}"; do
    set -- $cell
    # Rotate the order each repetition so no server always runs first.
    order=(sockit nginx python)
    [ $((rep % 3)) = 2 ] && order=(nginx python sockit)
    [ $((rep % 3)) = 0 ] && order=(python sockit nginx)
    for name in "${order[@]}"; do
      case $name in sockit) port=$SOCKIT_PORT ;; nginx) port=$NGINX_PORT ;; python) port=$PY_PORT ;; esac
      RES["$name $1 $rep"]=$(run "$name" "$port" "$1" "$2" "$rep")
    done
  done
done

# The median of the repetitions' values of field $3 (1 req/s, 2 p99 ms, 3 MB/s).
median() {
  for rep in $(seq 1 "$REPS"); do echo "${RES["$1 $2 $rep"]}" | cut -d' ' -f"$3"; done |
    sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}

echo "| file, conns | sockit req/s | nginx req/s | python req/s | sockit/nginx req/s | p99 sockit / nginx (ms) | sockit / nginx MB/s |"
echo "|---|---|---|---|---|---|---|"
for cell in "${CELLS[@]}"; do
  set -- $cell
  s=$(median sockit "$1" 1); n=$(median nginx "$1" 1); p=$(median python "$1" 1)
  sp=$(median sockit "$1" 2); np=$(median nginx "$1" 2)
  st=$(median sockit "$1" 3); nt=$(median nginx "$1" 3)
  ratio=$(python3 -c "print(f'{$s/$n:.2f}')")
  echo "| $1, -c$2 | $s | $n | $p | $ratio | $sp / $np | $st / $nt |"
done
echo
echo "raw wrk output: $OUT"
