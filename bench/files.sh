#!/usr/bin/env bash
# Side-by-side file-transfer benchmark, in one run on one machine, everything on 127.0.0.1:
#   sockit put/get (BLAKE3 and SHA-256 verified, fsync before rename)
#   vs ncat and socat piping the same file (unverified, no fsync) vs iperf3 (memory to memory).
#
#   1. throughput of one SIZE file (default 2 GiB) from the page cache, into a tmpfs directory
#      (page cache to page cache: fsync costs nothing) and into a disk-backed directory (where
#      sockit's fsync really waits for the disk and ncat/socat's data is left dirty in the cache).
#      Peak RSS of the clients (GNU time) and of the sockit servers (VmHWM). A local `cp` of
#      the same file into the same directory (no network, no hash) marks what this machine's
#      page cache allows at all.
#   2. SMALL files of 4 KiB (default 10,000): one `sockit put DIR` (one connection, pipelined)
#      vs a loop of `sockit send FILE`, one connection (and one process) per file, into a
#      disk-backed directory.
#   3. resume: a put of the SIZE file is killed once the server holds 90% of it, then run
#      again; reports the bytes the second run sent.
#
# usage: bench/files.sh [REPS (3)]
# env:   SIZE=2G (head -c syntax), SMALL=10000, OUT=DIR (raw results; default a temp dir),
#        WAIT_FILE=PATH WAIT_MAX=900: wait (bounded) for PATH to exist before measuring.
# output: a markdown summary on stdout; raw lines in $OUT/raw.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${1:-3}
SIZE=${SIZE:-2G}
SMALL=${SMALL:-10000}
OUT=${OUT:-$(mktemp -d /tmp/sockit-files-bench.XXXXXX)}
mkdir -p "$OUT"
RAW=$OUT/raw.tsv
: >"$RAW"
log() { echo "# $*" >&2; }

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ncat >/dev/null || need+=(ncat)
command -v socat >/dev/null || need+=(socat)
[ -x /usr/bin/time ] || need+=(time)
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

T=$(mktemp -d /tmp/sfb.XXXXXX)      # disk-backed
M=$(mktemp -d /dev/shm/sfb.XXXXXX)  # tmpfs
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$T" "$M"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# wait_listen PORT: bounded wait until something listens on PORT (without connecting to it).
wait_listen() {
  for _ in $(seq 1 500); do
    [ -n "$(ss -Hltn "sport = :$1")" ] && return 0
    sleep 0.01
  done
  echo "nothing listens on port $1" >&2
  return 1
}
now() { date +%s.%N; }
# record KIND DEST REP VALUE
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; }
gbps() { python3 -c "print(f'{$1/($3-$2)/1e9:.4f}')"; }

log "making a $SIZE file and $SMALL small files"
head -c "$SIZE" /dev/urandom >"$T/big"
BYTES=$(stat -c %s "$T/big")
mkdir -p "$T/small"
python3 - "$T/small" "$SMALL" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(4096))
EOF
mkdir -p "$M/src"
cp "$T/big" "$M/src/big"
cat "$T/big" "$M/src/big" >/dev/null

# Long-running sockit servers: receivers on disk and tmpfs, a read-only source for `get`.
start_server() { # NAME DIR EXTRA...
  local name=$1 dir=$2 port
  shift 2
  port=$(free_port)
  "$SOCKIT" files serve --dir "$dir" --listen "127.0.0.1:$port" -q "$@" 2>"$OUT/$name.log" &
  pids+=($!)
  wait_listen "$port"
  eval "${name}_port=$port ${name}_pid=$!"
}
start_server disk "$T/recv" --overwrite
start_server shm "$M/recv" --overwrite
start_server src "$M/src" --read-only
start_server small "$T/recv-small"

if [ -n "${WAIT_FILE:-}" ]; then
  log "waiting up to ${WAIT_MAX:-900}s for $WAIT_FILE"
  for _ in $(seq 1 "${WAIT_MAX:-900}"); do [ -e "$WAIT_FILE" ] && break; sleep 1; done
  [ -e "$WAIT_FILE" ] && log "found $WAIT_FILE" || log "no $WAIT_FILE: measuring anyway"
fi

# timed KIND DEST REP CMD...: runs CMD under GNU time, records GB/s and the client's peak RSS.
timed() {
  local kind=$1 dest=$2 rep=$3 t0 t1
  shift 3
  t0=$(now)
  /usr/bin/time -f '%M' -o "$OUT/rss" "$@" >/dev/null 2>>"$OUT/client.log"
  t1=$(now)
  record "$kind" "$dest" "$rep" "$(gbps "$BYTES" "$t0" "$t1")"
  record "$kind-rss-kib" "$dest" "$rep" "$(cat "$OUT/rss")"
}

pipe_ncat() { # DEST_FILE REP LABEL
  local port pid t0 t1
  port=$(free_port)
  ncat -l 127.0.0.1 "$port" --recv-only >"$1" &
  pid=$!
  wait_listen "$port"
  t0=$(now)
  ncat --send-only 127.0.0.1 "$port" <"$T/big"
  wait "$pid"
  t1=$(now)
  record ncat "$3" "$2" "$(gbps "$BYTES" "$t0" "$t1")"
}

pipe_socat() { # DEST_FILE REP LABEL
  local port pid t0 t1
  port=$(free_port)
  socat -u "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr" "OPEN:$1,creat,trunc" &
  pid=$!
  wait_listen "$port"
  t0=$(now)
  socat -u "OPEN:$T/big" "TCP:127.0.0.1:$port"
  wait "$pid"
  t1=$(now)
  record socat "$3" "$2" "$(gbps "$BYTES" "$t0" "$t1")"
}

local_cp() { # DEST_FILE REP LABEL
  local t0 t1
  t0=$(now)
  cp "$T/big" "$1"
  t1=$(now)
  record cp "$3" "$2" "$(gbps "$BYTES" "$t0" "$t1")"
}

# This VM hands freed memory back to its host (virtio-balloon free page reporting) a couple of
# seconds after it is freed, and the next touch of such memory costs a host fault: writing
# 2 GiB into tmpfs then takes about twice as long. Each cell below deletes the previous cell's
# output just before it starts, so it reuses memory still held; the first cell of a block gets
# the same by writing and deleting a SIZE file in tmpfs first (tmpfs, so no writeback follows).
warm() {
  head -c "$SIZE" /dev/zero >"$M/warm"
  rm -f "$M/warm"
}

# settle: untimed, after each cell: flush what the cell left dirty (ncat, socat and cp leave
# their data to writeback; sockit has already fsynced), so the next cell does not share the
# machine with that writeback.
settle() { sync; }

iperf() { # REP
  local port pid bps
  port=$(free_port)
  iperf3 -s -1 -p "$port" -B 127.0.0.1 >/dev/null &
  pid=$!
  wait_listen "$port"
  bps=$(iperf3 -c 127.0.0.1 -p "$port" -t 5 -J |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
  wait "$pid" || true
  record iperf3 mem "$1" "$(python3 -c "print(f'{$bps/8e9:.4f}')")"
}

for rep in $(seq 1 "$REPS"); do
  log "throughput rep $rep/$REPS"
  iperf "$rep"
  for dest in shm disk; do
    if [ "$dest" = shm ]; then base=$M; port=$shm_port; else base=$T; port=$disk_port; fi
    rm -f "$base/pipe" "$base/recv/big" "$base/got/big" "$base/cp"
    warm
    pipe_ncat "$base/pipe" "$rep" "$dest"
    settle
    rm -f "$base/pipe"
    pipe_socat "$base/pipe" "$rep" "$dest"
    settle
    rm -f "$base/pipe"
    timed put-blake3 "$dest" "$rep" "$SOCKIT" put -q "127.0.0.1:$port" "$T/big"
    settle
    rm -f "$base/recv/big"
    timed put-sha256 "$dest" "$rep" "$SOCKIT" put -q --hash sha256 "127.0.0.1:$port" "$T/big"
    settle
    rm -f "$base/recv/big"
    mkdir -p "$base/got"
    timed get-blake3 "$dest" "$rep" "$SOCKIT" get -q -o "$base/got" --overwrite "127.0.0.1:$src_port" big
    settle
    rm -f "$base/got/big"
    local_cp "$base/cp" "$rep" "$dest"
    settle
    rm -f "$base/cp"
  done
done
for name in disk shm src; do
  pid_var=${name}_pid
  record server-hwm-kib "$name" 0 "$(awk '/VmHWM/ {print $2}' "/proc/${!pid_var}/status")"
done

log "small files: one put of $SMALL files vs a loop of sockit send"
for rep in $(seq 1 "$REPS"); do
  t0=$(now)
  "$SOCKIT" put -q "127.0.0.1:$small_port" "$T/small" --to "one-$rep" >/dev/null 2>>"$OUT/client.log"
  t1=$(now)
  record small-put-s disk "$rep" "$(python3 -c "print(f'{$t1-$t0:.3f}')")"
  t0=$(now)
  for f in "$T"/small/*; do
    "$SOCKIT" send -q "127.0.0.1:$small_port" "$f" --to "loop-$rep" >/dev/null 2>>"$OUT/client.log"
  done
  t1=$(now)
  record small-send-loop-s disk "$rep" "$(python3 -c "print(f'{$t1-$t0:.3f}')")"
done

log "resume after a cut at 90%"
partial_dir=$T/recv/.sockit-partial
for rep in $(seq 1 "$REPS"); do
  rm -f "$T/recv/big"
  rm -rf "$partial_dir"
  "$SOCKIT" put -q "127.0.0.1:$disk_port" "$T/big" >/dev/null 2>>"$OUT/client.log" &
  put_pid=$!
  cut=0
  for _ in $(seq 1 3000); do
    held=$(stat -c %s "$partial_dir"/*.part 2>/dev/null | head -1 || true)
    if [ -n "$held" ] && [ "$held" -ge $((BYTES * 9 / 10)) ]; then
      kill -9 "$put_pid" 2>/dev/null || true
      cut=$held
      break
    fi
    sleep 0.005
  done
  wait "$put_pid" 2>/dev/null || true
  # The server notices the cut and unlocks the partial; retry briefly if it is still busy.
  second=""
  for _ in $(seq 1 50); do
    if line=$("$SOCKIT" put "127.0.0.1:$disk_port" "$T/big" 2>&1 >/dev/null); then
      second=$(grep -o '[0-9]* bytes transferred' <<<"$line" | awk '{print $1}')
      break
    fi
    sleep 0.1
  done
  record resume-cut-bytes disk "$rep" "$cut"
  record resume-second-run-bytes disk "$rep" "${second:-nan}"
  cmp -s "$T/big" "$T/recv/big" && record resume-file-identical disk "$rep" 1 || record resume-file-identical disk "$rep" 0
done

python3 - "$RAW" "$BYTES" "$SMALL" <<'EOF'
import statistics, sys
from collections import defaultdict
raw, size, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vals = defaultdict(list)
for line in open(raw):
    kind, dest, rep, v = line.rstrip("\n").split("\t")
    try:
        vals[(kind, dest)].append(float(v))
    except ValueError:
        pass
med = {k: statistics.median(v) for k, v in vals.items() if v}
def m(kind, dest):
    return med.get((kind, dest), float("nan"))
ip = m("iperf3", "mem")
print(f"file: {size} bytes; iperf3 loopback median {ip:.2f} GB/s ({ip*8:.1f} Gbit/s)\n")
print("| transfer | into | median GB/s | runs | × ncat | × socat | × iperf3 | × local cp | client peak RSS |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|")
for dest in ("shm", "disk"):
    for kind in ("ncat", "socat", "put-blake3", "put-sha256", "get-blake3", "cp"):
        v = m(kind, dest)
        runs = " ".join(f"{x:.2f}" for x in vals.get((kind, dest), []))
        rss = m(kind + "-rss-kib", dest)
        rss_s = f"{rss/1024:.1f} MiB" if rss == rss else "–"
        print(f"| {kind} | {'tmpfs' if dest == 'shm' else 'disk'} | {v:.2f} | {runs} | "
              f"{v/m('ncat', dest):.2f} | {v/m('socat', dest):.2f} | {v/ip:.2f} | "
              f"{v/m('cp', dest):.2f} | {rss_s} |")
print()
for name in ("disk", "shm", "src"):
    print(f"- server `{name}` peak RSS (VmHWM): {m('server-hwm-kib', name)/1024:.1f} MiB")
one, loop = m("small-put-s", "disk"), m("small-send-loop-s", "disk")
print(f"- {small} files of 4 KiB: one `put` {one:.2f} s, a loop of `send` {loop:.2f} s: {loop/one:.1f}× faster")
cut, second = m("resume-cut-bytes", "disk"), m("resume-second-run-bytes", "disk")
same = vals.get(("resume-file-identical", "disk"), [])
print(f"- resume: cut at {cut/size:.1%} held; second run sent {second:.0f} bytes = {second/size:.2%} of the file"
      f" (files identical after resume: {int(sum(same))}/{len(same)})")
EOF
