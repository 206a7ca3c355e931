#!/usr/bin/env bash
# Benchmarks the vault's hot path on this machine and prints the figures the issue asks for:
#   - authenticated GET /api/entries/{id} with audit on, 64 connections, vs a bare axum handler
#     returning a body of the same size, in the same run: requests/s, p99, and their ratio
#   - idle RSS, RSS under that load with a 10,000-entry vault
#   - search latency over 10,000 entries (p99)
#   - the stripped release binary size
# Usage: bash bench/read.sh [seconds-per-run]   (default 4)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-4}

bash scripts/install-test-deps.sh >/dev/null
cargo build --release --quiet --bin clavitor --example bare_axum
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/clavitor
bare=$target/release/examples/bare_axum

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a server in the background; sets $addr and $pid from its "listening on" line.
start() {
  local out=$1; shift
  "$@" >"$out" 2>"$out.err" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 200); do
    addr=$(grep -o 'listening on http://[0-9.:]*' "$out" | sed 's|listening on http://||' || true)
    [[ -n $addr ]] && return 0
    sleep 0.05
  done
  echo "server did not start: $(cat "$out.err")" >&2
  exit 1
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
# wrk prints e.g. "Requests/sec:  12345.67" and, with --latency, "99%  1.23ms".
rps_of() { awk '/^Requests\/sec/ {print $2}' "$1"; }
p99_of() { awk '$1 == "99%" {print $2}' "$1"; }
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

data="$work/data"
"$bin" --data-dir "$data" init >/dev/null
# The owner comes from the break-glass path: no passkey ceremony is needed to read.
token=$("$bin" --data-dir "$data" agent add --name bench --all-access --json | grep -o 'cvt_[A-Za-z0-9]*')
seq 1 10000 | awk '{printf "{\"title\":\"Service %d\",\"type\":\"login\",\"url\":\"https://svc%d.example.com/login\",\"scopes\":[\"0001\"],\"fields\":[{\"name\":\"username\",\"kind\":\"text\",\"value\":\"user%d\"},{\"name\":\"password\",\"kind\":\"secret\",\"value\":\"pw-%d-0123456789abcdef\"}]}\n",$1,$1,$1,$1}' >"$work/entries.jsonl"
"$bin" --data-dir "$data" entry import --file "$work/entries.jsonl" >/dev/null

start "$work/vault.out" env CLAVITOR_LOG=warn "$bin" --data-dir "$data" serve --listen 127.0.0.1:0
vault_addr=$addr vault_pid=$pid
sleep 1
idle_kb=$(rss_kb "$vault_pid")
size=$(curl -s -o /dev/null -w '%{size_download}' -H "Authorization: Bearer $token" "http://$vault_addr/api/entries/5000")

start "$work/bare.out" "$bare" 127.0.0.1:0 "$size"
bare_addr=$addr

# Alternate vault and bare runs so that load from anything else on the machine hits both alike.
# The ratio is the median of the per-round ratios: each pairs two runs seconds apart, which
# cancels most of the drift a shared machine shows over a minute.
rounds=5
for round in $(seq 1 $rounds); do
  wrk -t2 -c64 -d"${secs}s" --latency -H "Authorization: Bearer $token" "http://$vault_addr/api/entries/5000" >"$work/vault.$round.wrk"
  wrk -t2 -c64 -d"${secs}s" --latency "http://$bare_addr/x" >"$work/bare.$round.wrk"
done
load_kb=$(hwm_kb "$vault_pid")
wrk -t1 -c1 -d"${secs}s" --latency -H "Authorization: Bearer $token" "http://$vault_addr/api/search?q=svc9999.example" >"$work/search.wrk"

median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for kind in vault bare; do
  for f in "$work/$kind".*.wrk; do rps_of "$f"; done | median >"$work/$kind.rps"
  for f in "$work/$kind".*.wrk; do to_ms "$(p99_of "$f")"; echo; done | median >"$work/$kind.p99"
done
vault_rps=$(cat "$work/vault.rps") bare_rps=$(cat "$work/bare.rps")
vault_p99=$(cat "$work/vault.p99") bare_p99=$(cat "$work/bare.p99")
search_p99=$(to_ms "$(p99_of "$work/search.wrk")") search_rps=$(rps_of "$work/search.wrk")
ratios=$(for round in $(seq 1 $rounds); do
  awk -v a="$(rps_of "$work/vault.$round.wrk")" -v b="$(rps_of "$work/bare.$round.wrk")" 'BEGIN { printf "%.3f\n", a / b }'
done)
ratio=$(echo "$ratios" | median)
ratio=$(awk -v r="$ratio" 'BEGIN { printf "%.2f", r }')
bin_mb=$(awk -v s="$(stat -c %s "$bin")" 'BEGIN { printf "%.1f", s / 1048576 }')
errors=$(grep -h 'Non-2xx\|Socket errors' "$work"/*.wrk || true)

cat <<REPORT

Clavitor read benchmark ($(nproc) cores, $rounds alternating ${secs}s runs each, medians; 10,000 entries, body $size bytes)
  GET /api/entries/{id}, audit on, 64 conns : $vault_rps req/s, p99 $vault_p99 ms
  bare axum, same body size, 64 conns      : $bare_rps req/s, p99 $bare_p99 ms
  ratio vault/bare (median of rounds)       : $ratio   (target >= 0.5; rounds: $(echo $ratios))
  idle RSS                                  : $((idle_kb / 1024)) MB   (target <= 20 MB)
  peak RSS under load                       : $((load_kb / 1024)) MB   (target <= 64 MB)
  search over 10,000 entries, 1 conn        : p99 $search_p99 ms, $search_rps req/s   (target p99 <= 5 ms)
  release binary (stripped)                 : $bin_mb MB   (target <= 15 MB)
REPORT
[[ -z $errors ]] || echo "  wrk reported: $errors"
