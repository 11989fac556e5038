#!/usr/bin/env bash
# sockit put/get vs rsync across a real (virtual) faulty link, in one run on one machine:
# two network namespaces joined by a veth pair, RATE at each end (tc tbf) and LOSS % random
# loss at each end (nftables numgen). rsync runs as `rsync --daemon` in the server namespace
# (no ssh here), so both tools move the file over one plain TCP connection and check a digest
# of the whole file (sockit BLAKE3 plus fsync before rename; rsync its whole-file checksum).
#
#   1. throughput of one SIZE file (default 256 MiB), from the page cache, pushed (sockit put,
#      rsync SRC rsync://…) and pulled (sockit get, rsync rsync://… DST), REPS times each,
#      order rotated; medians.
#   2. resume: a put is cut (client's link down, client killed) once the server holds half of
#      the file; reported: how long the server took to notice the vanished sender with
#      `--keepalive 2s` (its session gone from `ss`), then, with the link back, the bytes the
#      rerun sent.
#
# Delay and reordering (tc netem) are measured too where the kernel has sch_netem; where it
# does not, the script says so and measures loss and rate only.
#
# usage: sudo bench/faults.sh [REPS (3)]
# env:   SIZE=256M (head -c syntax), RATE=200mbit, LOSS=1, OUT=DIR (raw results).
# output: a markdown summary on stdout; raw lines in $OUT/raw.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${1:-3}
SIZE=${SIZE:-256M}
RATE=${RATE:-200mbit}
LOSS=${LOSS:-1}
OUT=${OUT:-$(mktemp -d /tmp/sockit-faults-bench.XXXXXX)}
mkdir -p "$OUT"
RAW=$OUT/raw.tsv
: >"$RAW"
log() { echo "# $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "bench/faults.sh needs root (network namespaces)" >&2; exit 2; }
need=()
command -v rsync >/dev/null || need+=(rsync)
command -v nft >/dev/null || need+=(nftables)
command -v ss >/dev/null || need+=(iproute2)
command -v bc >/dev/null || need+=(bc)
command -v ethtool >/dev/null || need+=(ethtool)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

if [ -z "${SOCKIT:-}" ]; then
  cargo build --release --quiet --bin sockit
  SOCKIT=${CARGO_TARGET_DIR:-$PWD/target}/release/sockit
fi

S=sockit-bench-s-$$ C=sockit-bench-c-$$ SIF=bs$$ CIF=bc$$
SIP=10.203.0.1 CIP=10.203.0.2
T=$(mktemp -d /tmp/sfaults.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$S" 2>/dev/null || true
  ip netns del "$C" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

ip netns add "$S"
ip netns add "$C"
ip link add "$SIF" netns "$S" type veth peer name "$CIF" netns "$C"
ip -n "$S" addr add "$SIP/30" dev "$SIF"
ip -n "$C" addr add "$CIP/30" dev "$CIF"
for x in "$S $SIF" "$C $CIF"; do
  set -- $x
  ip -n "$1" link set "$2" up
  ip -n "$1" link set lo up
done
netem=no
if ip netns exec "$S" tc qdisc add dev "$SIF" root netem delay 25ms reorder 0.5% 50% rate "$RATE" 2>/dev/null; then
  netem=yes
  ip netns exec "$C" tc qdisc add dev "$CIF" root netem delay 25ms reorder 0.5% 50% rate "$RATE"
  shaping="tc netem: 25 ms each way (50 ms RTT), 0.5 % reordering, $RATE"
else
  for x in "$S $SIF" "$C $CIF"; do
    set -- $x
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$RATE" burst 256kb latency 50ms
  done
  shaping="tc tbf $RATE (no delay, no reordering: this kernel has no sch_netem)"
  log "no sch_netem on this kernel: delay and reordering are NOT measured, only loss and rate"
fi
# One packet is one MTU-sized segment, as on a wire (not a 64 KiB offload super-packet).
ip netns exec "$S" ethtool -K "$SIF" tso off gso off gro off
ip netns exec "$C" ethtool -K "$CIF" tso off gso off gro off
for ns in "$S" "$C"; do
  ip netns exec "$ns" nft add table inet sockit
  ip netns exec "$ns" nft add chain inet sockit in '{ type filter hook input priority 0 ; }'
  ip netns exec "$ns" nft add rule inet sockit in numgen random mod 100 lt "$LOSS" counter drop
done

SRC=$T/src
mkdir -p "$SRC" "$T/store" "$T/rsync" "$T/out"
head -c "$SIZE" /dev/urandom >"$SRC/big.bin"
BYTES=$(stat -c %s "$SRC/big.bin")
TOKEN=$T/token
head -c 24 /dev/urandom | base64 >"$TOKEN"
chmod 600 "$TOKEN"

# Servers: sockit files (keepalive 2 s so the resume part measures detection quickly), rsyncd.
ip netns exec "$S" "$SOCKIT" files serve --dir "$T/store" --listen "$SIP:0" --token-file "$TOKEN" \
  --overwrite --keepalive 2s 2>"$T/files.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$T/files.log" && break; sleep 0.1; done
ADDR=$(grep -o "listening on [^ ]*" "$T/files.log" | head -1 | cut -d' ' -f3)
cat >"$T/rsyncd.conf" <<EOF
use chroot = false
[m]
path = $T/rsync
read only = false
uid = root
gid = root
EOF
RPORT=8873
ip netns exec "$S" rsync --daemon --no-detach --config="$T/rsyncd.conf" --address="$SIP" --port=$RPORT &
pids+=($!)
for _ in $(seq 100); do ip netns exec "$S" ss -tlnH | grep -q ":$RPORT" && break; sleep 0.1; done

in_c() { ip netns exec "$C" "$@"; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

run() { # name
  case $1 in
  sockit-put) rm -f "$T/store/big.bin"; secs in_c "$SOCKIT" put "$ADDR" "$SRC/big.bin" --token-file "$TOKEN" ;;
  rsync-push) rm -f "$T/rsync/big.bin"; secs in_c rsync -t "$SRC/big.bin" "rsync://$SIP:$RPORT/m/" ;;
  sockit-get) rm -f "$T/out/big.bin"; secs in_c "$SOCKIT" get "$ADDR" big.bin -o "$T/out" --token-file "$TOKEN" ;;
  rsync-pull) rm -f "$T/out/big.bin"; secs in_c rsync -t "rsync://$SIP:$RPORT/m/big.bin" "$T/out/" ;;
  esac
}
check() { cmp -s "$SRC/big.bin" "$1" || { echo "MISMATCH: $1" >&2; exit 1; }; }

# Pulls may come before the first push: both servers start with the file.
cp "$SRC/big.bin" "$T/store/big.bin"
cp "$SRC/big.bin" "$T/rsync/big.bin"
order=(sockit-put rsync-push sockit-get rsync-pull)
for rep in $(seq "$REPS"); do
  for i in "${!order[@]}"; do
    name=${order[$(((i + rep) % ${#order[@]}))]}
    s=$(run "$name")
    case $name in
    sockit-put) check "$T/store/big.bin" ;; rsync-push) check "$T/rsync/big.bin" ;;
    *) check "$T/out/big.bin" ;;
    esac
    mbs=$(echo "$BYTES / $s / 1000000" | bc -l)
    printf '%s\t%s\t%.2f\t%.1f\n' "$name" "$rep" "$s" "$mbs" | tee -a "$RAW" >&2
  done
done

# Resume: cut once half the file has arrived.
partial_bytes() { find "$T/store/.sockit-partial" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
rm -f "$T/store/big.bin"
in_c "$SOCKIT" put "$ADDR" "$SRC/big.bin" --token-file "$TOKEN" >/dev/null 2>&1 &
put=$!
pids+=($put)
half=$((BYTES / 2))
for _ in $(seq 1200); do
  have=$(partial_bytes)
  [ "${have:-0}" -ge "$half" ] && break
  sleep 0.05
done
ip -n "$C" link set "$CIF" down
kill -9 "$put" 2>/dev/null || true
wait "$put" 2>/dev/null || true
t0=$(date +%s.%N)
for _ in $(seq 1200); do
  [ "$(ip netns exec "$S" ss -tnpH state connected exclude time-wait | grep -c "users:(")" = 0 ] && break
  sleep 0.05
done
detect=$(echo "$(date +%s.%N) - $t0" | bc -l)
kept=$(partial_bytes)
ip -n "$C" link set "$CIF" up
resent=$(in_c "$SOCKIT" put "$ADDR" "$SRC/big.bin" --token-file "$TOKEN" 2>&1 |
  grep -o '[0-9]* bytes transferred' | cut -d' ' -f1)
check "$T/store/big.bin"
dropped=$(for ns in "$S" "$C"; do ip netns exec "$ns" nft list chain inet sockit in; done |
  grep -o 'packets [0-9]*' | awk '{s += $2} END {print s}')

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
m() { awk -v n="$1" '$1 == n {print $4}' "$RAW" | median; }
echo "Link: veth between two namespaces, $shaping, $LOSS % random loss each way (nftables);"
echo "file $BYTES bytes from the page cache; $REPS repetitions, order rotated; medians."
echo "Packets dropped by the loss rules over the whole run: $dropped."
echo
echo "| transfer | sockit MB/s | rsync MB/s | sockit / rsync |"
echo "|---|---|---|---|"
for pair in "push:sockit-put:rsync-push" "pull:sockit-get:rsync-pull"; do
  IFS=: read -r what a b <<<"$pair"
  ma=$(m "$a") mb=$(m "$b")
  printf '| %s | %.1f | %.1f | %.2f |\n' "$what" "$ma" "$mb" "$(echo "$ma / $mb" | bc -l)"
done
echo
printf 'Resume: put cut (client link down, client killed) with %s of %s bytes on the server;\n' "$kept" "$BYTES"
printf 'server noticed the vanished sender and freed the session after %.1f s (--keepalive 2s);\n' "$detect"
printf 'rerun re-sent %s bytes (%.1f %% of the file).\n' "$resent" "$(echo "100 * $resent / $BYTES" | bc -l)"
[ "$netem" = yes ] || echo "Delay and reordering were not measured: this kernel has no sch_netem."
