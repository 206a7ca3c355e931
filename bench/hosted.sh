#!/usr/bin/env bash
# Commercial edition, hosted vaults (issue 16): a node with N vaults (default 10,000). A few
# are created through POST /api/mgmt/vaults; the rest in bulk by examples/hosted_fill.rs, which
# runs the product's own vault creation (DataDir::add_vault, as the API does) and gives each
# vault an owner-like agent and one entry (vault::ops, as the CLI does). Then the node is
# restarted. Prints the start time with N vaults, the idle node's threads, open files and RSS
# (after start, and again after the reads), the latency of entry reads spread over more vaults
# than may be open (so each finds its vault closed), and the audit feed's throughput to a
# collector (events/s, pages of 1000). Figures are printed, not asserted. Targets (issue 16):
# threads and open files bounded whatever N, idle RSS <= 64 MB, p99 of a read on a closed
# vault <= 20 ms.
#   Usage: bash bench/hosted.sh [vaults] [sampled vaults]
#          BENCH_PROFILE=ci-release|release|dev (default ci-release), MAX_OPEN (default 64),
#          FILL_THREADS (default 4), VAULT_IDLE (the node's --vault-idle-secs, default 10),
#          QUIET_WAIT (longest wait for the node's start-up jobs, default 300 s)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
n=${1:-10000}
sampled=${2:-200}
profile=${BENCH_PROFILE:-ci-release}
cargo build --quiet --profile "$profile" --features commercial --bin clavitor --example hosted_fill
cargo build --quiet --profile "$profile" -p clavitor-license
target=${CARGO_TARGET_DIR:-target}
dir=$profile
[[ $profile == dev ]] && dir=debug
bin=$target/$dir/clavitor
minter=$target/$dir/clavitor-license
fill=$target/$dir/examples/hosted_fill
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

openssl genpkey -algorithm ed25519 -out "$work/vendor.pem" 2>/dev/null
openssl pkey -pubout -in "$work/vendor.pem" -out "$work/vendor.pub" 2>/dev/null
"$minter" --private-key "$work/vendor.pem" --public-key "$work/vendor.pub" --tenant bench --expires 2100-01-01 \
  --max-vaults "$n" --max-agents-per-vault 100 --max-entries-per-vault 100 --output "$work/lic" --verify >/dev/null
export CLAVITOR_TENANT_ID=bench CLAVITOR_LICENSE_PUBLIC_KEY=$work/vendor.pub CLAVITOR_LICENSE_FILE=$work/lic
data=$work/data
"$bin" --data-dir "$data" init >/dev/null
vaults_tok=$("$bin" --data-dir "$data" mgmt token add --name bench --scope vaults 2>/dev/null)
feed_tok=$("$bin" --data-dir "$data" mgmt token add --name bench --scope audit-feed 2>/dev/null)

start() {
  CLAVITOR_VAULT_IDLE_SECS=${VAULT_IDLE:-10} CLAVITOR_LOG=warn CLAVITOR_MAX_OPEN_VAULTS=${MAX_OPEN:-64} "$bin" --data-dir "$data" serve --listen 127.0.0.1:0 \
    >"$work/out" 2>"$work/err" &
  pid=$!
  # A start that scans thousands of vault files may take minutes: up to 10 min.
  addr=$(listening_addr "$work/out" "$work/err" 12000)
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

start
api_n=$(( n < 10 ? n - 1 : 9 ))
t0=$(date +%s.%N)
for _ in $(seq 1 "$api_n"); do
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $vaults_tok" "http://$addr/api/mgmt/vaults"
done
t1=$(date +%s.%N)
stop
# The first vault (from init) and the API's have no agent; the bulk ones each have one.
bulk=$(( n - 1 - api_n ))
t2=$(date +%s.%N)
"$fill" "$data" "$bulk" "${FILL_THREADS:-4}" >"$work/tokens.all"
t3=$(date +%s.%N)
[[ $(wc -l <"$work/tokens.all") == "$bulk" ]] || { echo "hosted_fill made $(wc -l <"$work/tokens.all") of $bulk vaults" >&2; exit 1; }
head -n "$sampled" "$work/tokens.all" | cut -d' ' -f2 >"$work/tokens"

ts=$(date +%s.%N)
start
te=$(date +%s.%N)
# Idle: the node's start-up jobs over every file (the audit feed's first pass, the license's
# retention run and cap check, the integrity check) have finished: its CPU use stays under 5 %
# for 2 s (at most QUIET_WAIT seconds, default 300).
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
tq0=$(date +%s.%N)
for _ in $(seq 1 $(( ${QUIET_WAIT:-300} / 2 ))); do
  c0=$(cpu); sleep 2; c1=$(cpu)
  (( c1 - c0 < 10 )) && break
done
tq1=$(date +%s.%N)
threads=$(ls "/proc/$pid/task" | wc -l)
fds=$(ls "/proc/$pid/fd" | wc -l)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")

# Entry reads, one per sampled vault in turn: with more sampled vaults than MAX_OPEN (default
# 64), each read finds its vault closed (least recently used) and opens it.
lat=$(python3 - "$addr" "$work/tokens" <<'PY'
import http.client, sys, time
addr, tokens = sys.argv[1], [t.strip() for t in open(sys.argv[2]) if t.strip()]
host, port = addr.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
ms = []
for round in range(3):
    for t in tokens:
        s = time.perf_counter()
        c.request("GET", "/api/entries/1", headers={"Authorization": "Bearer " + t})
        r = c.getresponse(); r.read()
        ms.append((time.perf_counter() - s) * 1000)
        assert r.status == 200, r.status
ms.sort()
print(f"{ms[len(ms)//2]:.2f} ms p50, {ms[int(len(ms)*0.99)]:.2f} ms p99, {ms[-1]:.2f} ms max over {len(ms)} reads")
PY
)
sleep 2
threads2=$(ls "/proc/$pid/task" | wc -l)
fds2=$(ls "/proc/$pid/fd" | wc -l)
rss2=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
# Idle again: every vault unused for VAULT_IDLE seconds (default 10) has been closed.
sleep $(( ${VAULT_IDLE:-10} + 6 ))
threads3=$(ls "/proc/$pid/task" | wc -l)
fds3=$(ls "/proc/$pid/fd" | wc -l)
rss3=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
tl0=$(date +%s.%N)
listed=$(curl -sf -H "Authorization: Bearer $vaults_tok" "http://$addr/api/mgmt/vaults?limit=1000" | python3 -c \
  'import json,sys; print(len(json.load(sys.stdin)["vaults"]))')
tl1=$(date +%s.%N)
[[ $listed == $(( n < 1000 ? n : 1000 )) ]] || { echo "the first page lists $listed vaults" >&2; exit 1; }

# The feed, from the start, in pages of 1000, as a collector reads it.
feed=$(python3 - "$addr" "$feed_tok" <<'PY'
import http.client, sys, time
addr, tok = sys.argv[1], sys.argv[2]
host, port = addr.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
cursor, n, s = "", 0, time.perf_counter()
while True:
    q = "/api/mgmt/audit?limit=1000" + (f"&cursor={cursor}" if cursor else "")
    c.request("GET", q, headers={"Authorization": "Bearer " + tok})
    r = c.getresponse(); body = r.read()
    lines = body.splitlines()
    if not lines:
        break
    n += len(lines)
    cursor = r.getheader("clavitor-cursor")
el = time.perf_counter() - s
print(f"{n} events in {el:.2f} s = {n/el:.0f} events/s")
PY
)
stop

cat <<REPORT

Hosted vaults (commercial edition, profile $profile)
  vaults                       : $n  ($api_n through the API in $(python3 -c "print(f'{$t1-$t0:.1f}')") s, $bulk by hosted_fill in $(python3 -c "print(f'{$t3-$t2:.1f}')") s)
  start with $n vaults         : $(python3 -c "print(f'{$te-$ts:.1f}')") s to listening, then $(python3 -c "print(f'{$tq1-$tq0:.0f}')") s of start-up jobs over every file before the node is quiet
  threads                      : $threads idle after start, $threads2 just after the reads, $threads3 idle again   (target: bounded whatever the vault count)
  open files                   : $fds idle after start, $fds2 just after the reads, $fds3 idle again   (target: bounded whatever the vault count)
  RSS                          : $((rss / 1024)) MB idle after start, $((rss2 / 1024)) MB just after the reads (${MAX_OPEN:-64} vaults open), $((rss3 / 1024)) MB idle again   (target: idle <= 64 MB)
  reads of closed vaults       : $lat   ($sampled vaults in turn, at most ${MAX_OPEN:-64} open; target p99 <= 20 ms)
  machine load                 : $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) on $(nproc) cores
  list, first page of $listed    : $(python3 -c "print(f'{$tl1-$tl0:.2f}')") s
  audit feed to a collector    : $feed
REPORT
