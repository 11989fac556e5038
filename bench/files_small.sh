#!/usr/bin/env bash
# Many small files, side by side in one run on one machine (issue 13): one `sockit put` of
# N files of 4 KiB (one connection, pipelined, each file verified by BLAKE3 and fsynced before
# it is renamed into place and answered) to a `sockit files serve` on 127.0.0.1, against
#   rsync -a SRC/ DST/          (local, no network, no fsync)
#   tar -C SRC -cf - . | tar -C DST -xf -   (a pipe, no network, no fsync)
# into a disk-backed directory. Runs are interleaved (sockit, rsync, tar, sockit, ...), each
# into a fresh directory, with `sync` (untimed) after each so no cell shares the disk with the
# previous cell's writeback. The machine may be shared: read medians, not single runs.
#
# usage: bench/files_small.sh [REPS (5)]
# env:   N=5000 (files), SIZE=4096 (bytes each), OUT=DIR (raw results; default a temp dir),
#        SOCKIT=/path/to/sockit (measure that build instead of building one),
#        BEFORE=/path/to/older/sockit (also measure that build, interleaved, as sockit-before).
# output: a markdown table on stdout; raw lines in $OUT/raw.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${1:-5}
N=${N:-5000}
SIZE=${SIZE:-4096}
OUT=${OUT:-$(mktemp -d /tmp/sockit-small-bench.XXXXXX)}
mkdir -p "$OUT"
RAW=$OUT/raw.tsv
: >"$RAW"
log() { echo "# $*" >&2; }

if ! command -v rsync >/dev/null; then
  log "installing rsync"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >&2
fi
if [ -z "${SOCKIT:-}" ]; then
  cargo build --release --quiet --bin sockit
  SOCKIT=${CARGO_TARGET_DIR:-$PWD/target}/release/sockit
fi

T=$(mktemp -d /tmp/sfs.XXXXXX)
server_pid=""
before_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "$before_pid" ] && kill "$before_pid" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

log "making $N files of $SIZE bytes"
mkdir -p "$T/src"
python3 - "$T/src" "$N" "$SIZE" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(os.urandom(size))
PY
sync

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$SOCKIT" files serve --dir "$T/recv" --listen "127.0.0.1:$port" -q 2>"$OUT/server.log" &
server_pid=$!
wait_port() {
  for _ in $(seq 1 500); do
    [ -n "$(ss -Hltn "sport = :$1")" ] && return
    sleep 0.01
  done
}
wait_port "$port"
if [ -n "${BEFORE:-}" ]; then
  before_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BEFORE" files serve --dir "$T/before" --listen "127.0.0.1:$before_port" -q 2>"$OUT/before.log" &
  before_pid=$!
  wait_port "$before_port"
fi

now() { date +%s.%N; }
# cell KIND REP CMD...: times CMD, records seconds, checks the copy, then settles.
cell() {
  local kind=$1 rep=$2 t0 t1
  shift 2
  t0=$(now)
  "$@" >/dev/null 2>>"$OUT/client.log"
  t1=$(now)
  printf '%s\t%s\t%s\n' "$kind" "$rep" "$(python3 -c "print(f'{$t1-$t0:.4f}')")" >>"$RAW"
  sync
}
tar_pipe() { tar -C "$T/src" -cf - . | tar -C "$1" -xf -; }

for rep in $(seq 1 "$REPS"); do
  log "rep $rep/$REPS"
  cell sockit-put "$rep" "$SOCKIT" put -q "127.0.0.1:$port" "$T/src" --to "run$rep"
  cmp -s "$T/src/f00042" "$T/recv/run$rep/src/f00042" || { log "sockit copy differs"; exit 1; }
  [ "$(ls "$T/recv/run$rep/src" | wc -l)" -eq "$N" ] || { log "sockit copy incomplete"; exit 1; }
  rm -rf "$T/recv/run$rep"
  if [ -n "$before_pid" ]; then
    cell sockit-before "$rep" "$BEFORE" put -q "127.0.0.1:$before_port" "$T/src" --to "run$rep"
    [ "$(ls "$T/before/run$rep/src" | wc -l)" -eq "$N" ] || { log "before copy incomplete"; exit 1; }
    rm -rf "$T/before/run$rep"
  fi
  mkdir -p "$T/rsync"
  cell rsync-a "$rep" rsync -a "$T/src/" "$T/rsync/"
  [ "$(ls "$T/rsync" | wc -l)" -eq "$N" ] || { log "rsync copy incomplete"; exit 1; }
  rm -rf "$T/rsync"
  mkdir -p "$T/tar"
  cell tar-pipe "$rep" tar_pipe "$T/tar"
  rm -rf "$T/tar"
  sync
done

python3 - "$RAW" "$N" "$SIZE" <<'PY'
import statistics, sys
from collections import defaultdict
raw, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vals = defaultdict(list)
for line in open(raw):
    kind, rep, v = line.rstrip("\n").split("\t")
    vals[kind].append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
print(f"{n} files of {size} bytes, median of {len(vals['sockit-put'])} interleaved runs\n")
print("| copy | median s | runs (s) | files/s | sockit put × faster |")
print("|---|---:|---|---:|---:|")
for kind in ("sockit-put", "sockit-before", "rsync-a", "tar-pipe"):
    if kind not in vals:
        continue
    runs = " ".join(f"{x:.2f}" for x in vals[kind])
    print(f"| {kind} | {med[kind]:.2f} | {runs} | {n/med[kind]:.0f} | "
          f"{med[kind]/med['sockit-put']:.2f} |")
PY
