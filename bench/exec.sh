#!/usr/bin/env bash
# Side-by-side remote-exec benchmark, in one run on one machine, everything on 127.0.0.1:
#   sockit exec (TLS and plaintext)  vs  OpenSSH (fresh and through a ControlMaster)
#   vs  ncat --exec (plaintext and --ssl)
#
#   1. round trip of running `true`: one hyperfine invocation comparing
#      `sockit exec run --tls --tls-pin FP ADDR -- true` (fresh connection, auth + TLS),
#      `sockit exec run ADDR -- true` (plaintext), `ssh -o ControlPath=CM 127.0.0.1 true`
#      (through an already-open master) and `ssh 127.0.0.1 true` (fresh connection).
#   2. throughput: `cat` of a page-cached file (1 GiB) to /dev/null through
#      `sockit exec run [--tls] ADDR -- cat FILE` vs `ncat --recv-only` against
#      `ncat --exec "/bin/cat FILE" -l --keep-open`, and the same with `--ssl` on both ncat
#      ends (the like-for-like TLS peer), REPS times, peers interleaved.
#   3. 100 concurrent `sockit exec run ADDR -- sleep 1`, end to end, with the server's peak
#      VmRSS (sampled every 20 ms), REPS times.
#
# usage: bench/exec.sh [HYPERFINE_RUNS (50)] [REPS (3)]
# env:   SIZE=1G (the cat file; head -c syntax), CONC=100 (concurrent runs),
#        WAIT_FILE=PATH WAIT_MAX=900: after setup, wait (bounded) for PATH to exist before
#        measuring (for shared machines); the summary says whether it appeared.
#        OUT=DIR for raw results (default a temp dir).
# output: a markdown summary on stdout; hyperfine JSON/markdown and raw lines in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-50}
REPS=${2:-3}
SIZE=${SIZE:-1G}
CONC=${CONC:-100}
OUT=${OUT:-$(mktemp -d /tmp/sockit-exec-bench.XXXXXX)}
mkdir -p "$OUT"
log() { echo "# $*" >&2; }

# --- peers' packages ------------------------------------------------------------------------
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ncat >/dev/null || need+=(ncat)
command -v hyperfine >/dev/null || need+=(hyperfine)
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

# Short path: the ControlMaster socket path must fit in sun_path.
T=$(mktemp -d /tmp/sxb.XXXXXX)
pids=()
cleanup() {
  [ -S "$T/cm" ] && ssh -o ControlPath="$T/cm" -O exit 127.0.0.1 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# wait_for FILE PATTERN: bounded wait until a server has printed PATTERN into FILE; prints the match.
wait_for() {
  for _ in $(seq 1 200); do
    if grep -qoE "$2" "$1" 2>/dev/null; then grep -oE "$2" "$1" | head -n1; return; fi
    sleep 0.05
  done
  echo "server did not start: $1" >&2
  cat "$1" >&2 || true
  exit 1
}

# --- sshd on loopback, own host key and config, one generated client key -----------------------
ssh-keygen -q -t ed25519 -N '' -f "$T/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$T/id"
cp "$T/id.pub" "$T/authorized_keys"
SSH_PORT=$(free_port)
mkdir -p /run/sshd # privilege-separation directory
cat >"$T/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $T/host_key
AuthorizedKeysFile $T/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
UseDNS no
PidFile $T/sshd.pid
LogLevel ERROR
# sshd runs every command as `$SHELL -c CMD`, and Debian's bash sources ~/.bashrc when started
# by sshd with SHLVL unset; this machine's root .bashrc runs `pyenv init` (~70 ms). SHLVL=1 skips
# that, so ssh is timed without the local rc file (sockit runs argv directly, no shell).
SetEnv SHLVL=1
EOF
/usr/sbin/sshd -f "$T/sshd_config" -D -E "$T/sshd.log" &
pids+=($!)
SSH=(ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes
  -o LogLevel=ERROR -i "$T/id" -p "$SSH_PORT")
ok=0
for _ in $(seq 1 100); do
  if "${SSH[@]}" 127.0.0.1 true 2>/dev/null; then ok=1; break; fi
  sleep 0.1
done
[ $ok = 1 ] || { echo "sshd did not come up" >&2; cat "$T/sshd.log" >&2; exit 1; }
"${SSH[@]}" -o ControlMaster=yes -o ControlPath="$T/cm" -N -f 127.0.0.1
"${SSH[@]}" -o ControlPath="$T/cm" -O check 127.0.0.1 2>/dev/null

# --- sockit exec serve, plaintext and --tls, one token file (0600) ---------------------------
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/token")
chmod 600 "$T/token"
"$SOCKIT" exec serve --listen 127.0.0.1:0 --token-file "$T/token" >"$T/plain.out" 2>"$T/plain.err" &
PLAIN_PID=$!
pids+=($PLAIN_PID)
"$SOCKIT" exec serve --listen 127.0.0.1:0 --token-file "$T/token" --tls >"$T/tls.out" 2>"$T/tls.err" &
TLS_PID=$!
pids+=($TLS_PID)
PLAIN=$(wait_for "$T/plain.err" '127\.0\.0\.1:[0-9]+')
TLS=$(wait_for "$T/tls.err" '127\.0\.0\.1:[0-9]+')
PIN=$(wait_for "$T/tls.out" 'sha256:[0-9A-Fa-f:]+')
RUN_PLAIN=("$SOCKIT" exec run --token-file "$T/token" "$PLAIN")
RUN_TLS=("$SOCKIT" exec run --token-file "$T/token" --tls --tls-pin "$PIN" "$TLS")
"${RUN_PLAIN[@]}" -- true
"${RUN_TLS[@]}" -- true

# --- the big file, in page cache, and ncat --exec streaming it ----------------------------------
BIG=$T/big
head -c "$SIZE" /dev/urandom >"$BIG"
BYTES=$(stat -c %s "$BIG")
cat "$BIG" >/dev/null # warm the page cache
NCAT_PORT=$(free_port)
ncat --exec "/bin/cat $BIG" -l 127.0.0.1 "$NCAT_PORT" --keep-open &
pids+=($!)
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$NCAT_PORT),1).close()" 2>/dev/null && break
  sleep 0.05
done
NCAT=(ncat --recv-only 127.0.0.1 "$NCAT_PORT")
# The same with TLS on both ends (ncat makes a throwaway certificate; the client does not verify).
NCAT_SSL_PORT=$(free_port)
ncat --ssl --exec "/bin/cat $BIG" -l 127.0.0.1 "$NCAT_SSL_PORT" --keep-open 2>/dev/null &
pids+=($!)
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$NCAT_SSL_PORT),1).close()" 2>/dev/null && break
  sleep 0.05
done
NCAT_SSL=(ncat --ssl --recv-only 127.0.0.1 "$NCAT_SSL_PORT")

# --- wait for a quiet machine (bounded) -------------------------------------------------------
QUIET="not requested"
if [ -n "${WAIT_FILE:-}" ]; then
  QUIET="not seen after ${WAIT_MAX:-900} s; measured anyway"
  start=$(date +%s)
  while [ $(($(date +%s) - start)) -lt "${WAIT_MAX:-900}" ]; do
    if [ -e "$WAIT_FILE" ]; then QUIET="present after $(($(date +%s) - start)) s of waiting"; break; fi
    sleep 5
  done
  log "quiet file $WAIT_FILE: $QUIET"
fi
uptime >&2

# --- 1. round trip of `true` -------------------------------------------------------------------
log "round trip: hyperfine, $RUNS runs each"
hyperfine -N --warmup 5 --runs "$RUNS" --style basic \
  --export-json "$OUT/rtt.json" --export-markdown "$OUT/rtt.md" \
  -n "sockit tls" "${RUN_TLS[*]} -- true" \
  -n "sockit plain" "${RUN_PLAIN[*]} -- true" \
  -n "ssh controlmaster" "${SSH[*]} -o ControlPath=$T/cm 127.0.0.1 true" \
  -n "ssh fresh" "${SSH[*]} 127.0.0.1 true" >&2

# --- 2. throughput of cat BIG > /dev/null -----------------------------------------------------
# check: every peer delivers exactly BYTES (untimed; doubles as a warm-up).
for peer in tls plain ncat ncatssl; do
  case $peer in
    tls) got=$(timeout 120 "${RUN_TLS[@]}" -- cat "$BIG" | wc -c) ;;
    plain) got=$(timeout 120 "${RUN_PLAIN[@]}" -- cat "$BIG" | wc -c) ;;
    ncat) got=$(timeout 120 "${NCAT[@]}" </dev/null | wc -c) ;;
    ncatssl) got=$(timeout 120 "${NCAT_SSL[@]}" </dev/null 2>/dev/null | wc -c) ;;
  esac
  [ "$got" = "$BYTES" ] || { echo "$peer delivered $got of $BYTES bytes" >&2; exit 1; }
done
: >"$OUT/cat.txt"
peers=(tls plain ncat ncatssl)
for rep in $(seq 1 "$REPS"); do
  # rotate the order each repetition
  for i in 0 1 2 3; do
    peer=${peers[$(((i + rep - 1) % 4))]}
    t0=$(date +%s%N)
    case $peer in
      tls) timeout 120 "${RUN_TLS[@]}" -- cat "$BIG" >/dev/null ;;
      plain) timeout 120 "${RUN_PLAIN[@]}" -- cat "$BIG" >/dev/null ;;
      ncat) timeout 120 "${NCAT[@]}" </dev/null >/dev/null ;;
      ncatssl) timeout 120 "${NCAT_SSL[@]}" </dev/null >/dev/null 2>&1 ;;
    esac
    t1=$(date +%s%N)
    echo "$peer $rep $((t1 - t0))" >>"$OUT/cat.txt"
    log "cat $peer rep $rep: $(((t1 - t0) / 1000000)) ms"
  done
done

# --- 3. CONC concurrent `sleep 1` ---------------------------------------------------------------
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
: >"$OUT/conc.txt"
for rep in $(seq 1 "$REPS"); do
  before=$(rss "$PLAIN_PID")
  # sampler: bounded to 30 s, stops when told
  (
    peak=0
    for _ in $(seq 1 1500); do
      [ -e "$T/stop" ] && break
      r=$(rss "$PLAIN_PID")
      [ "$r" -gt "$peak" ] && peak=$r
      sleep 0.02
    done
    echo "$peak" >"$T/peak"
  ) &
  sampler=$!
  t0=$(date +%s%N)
  jobs_=()
  for _ in $(seq 1 "$CONC"); do
    timeout 30 "${RUN_PLAIN[@]}" -- sleep 1 &
    jobs_+=($!)
  done
  fails=0
  for j in "${jobs_[@]}"; do wait "$j" || fails=$((fails + 1)); done
  t1=$(date +%s%N)
  touch "$T/stop"
  wait "$sampler"
  rm -f "$T/stop"
  echo "$rep $((t1 - t0)) $before $(cat "$T/peak") $fails" >>"$OUT/conc.txt"
  log "concurrent rep $rep: $(((t1 - t0) / 1000000)) ms, rss before $before KiB, peak $(cat "$T/peak") KiB, failures $fails"
  sleep 1
done
after=$(rss "$PLAIN_PID")

# --- summary ----------------------------------------------------------------------------------
python3 - "$OUT" "$BYTES" "$CONC" "$QUIET" "$after" <<'EOF'
import json, statistics as st, sys
out, size, conc, quiet, after = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rtt = {r["command"]: r for r in json.load(open(f"{out}/rtt.json"))["results"]}
med = {k: v["median"] * 1000 for k, v in rtt.items()}
print("### Round trip of `true` (hyperfine -N, median)\n")
print("| command | median ms | mean ± σ ms | min ms | runs |")
print("|---|---:|---:|---:|---:|")
for k, v in rtt.items():
    print(f"| {k} | {v['median']*1000:.2f} | {v['mean']*1000:.2f} ± {v['stddev']*1000:.2f} "
          f"| {v['min']*1000:.2f} | {len(v['times'])} |")
r = med["sockit tls"] / med["ssh controlmaster"]
print(f"\nsockit TLS / ssh ControlMaster = **{r:.2f}** (target ≤ 1.0: {'met' if r <= 1.0 else 'MISSED'}); "
      f"sockit plain / ssh ControlMaster = {med['sockit plain']/med['ssh controlmaster']:.2f}; "
      f"ssh fresh / sockit TLS = {med['ssh fresh']/med['sockit tls']:.1f}\n")
runs = {}
for line in open(f"{out}/cat.txt"):
    peer, rep, ns = line.split()
    runs.setdefault(peer, []).append(size / int(ns))  # bytes per ns = GB/s
print(f"### cat of a {size/2**30:g} GiB page-cached file to /dev/null (GB/s, 10^9 B/s)\n")
m = {p: st.median(v) for p, v in runs.items()}
names = {"tls": "sockit exec run --tls", "plain": "sockit exec run", "ncat": "ncat --exec",
         "ncatssl": "ncat --ssl --exec"}
print("| peer | runs GB/s | median GB/s | vs ncat | vs ncat --ssl |")
print("|---|---|---:|---:|---:|")
for p in ("tls", "plain", "ncat", "ncatssl"):
    print(f"| {names[p]} | {', '.join(f'{x:.2f}' for x in runs[p])} | {m[p]:.2f} "
          f"| {m[p]/m['ncat']:.2f}× | {m[p]/m['ncatssl']:.2f}× |")
def verdict(x):
    return f"**{x:.2f}×** (target ≥ 2×: {'met' if x >= 2 else 'MISSED'})"
print(f"\nplaintext: sockit exec run / ncat --exec = {verdict(m['plain']/m['ncat'])}")
print(f"\nTLS like for like: sockit exec run --tls / ncat --ssl --exec = "
      f"{verdict(m['tls']/m['ncatssl'])}")
print(f"\nTLS against plaintext ncat: sockit exec run --tls / ncat --exec = "
      f"{verdict(m['tls']/m['ncat'])}\n")
rows = [list(map(int, l.split())) for l in open(f"{out}/conc.txt")]
print(f"### {conc} concurrent `sockit exec run ADDR -- sleep 1` (plaintext)\n")
print("| rep | wall s | server RSS before KiB | server RSS peak KiB | failed runs |")
print("|---:|---:|---:|---:|---:|")
for rep, ns, b, p, f in rows:
    print(f"| {rep} | {ns/1e9:.3f} | {b} | {p} | {f} |")
w = st.median(r[1] for r in rows) / 1e9
pk = st.median(r[3] for r in rows)
print(f"\nmedian wall **{w:.3f} s** (target ≤ 1.5 s: {'met' if w <= 1.5 else 'MISSED'}); "
      f"median peak RSS {pk:.0f} KiB; RSS after all reps {after} KiB\n")
print(f"Quiet-machine gate: {quiet}.")
EOF
