#!/usr/bin/env bash
# Commercial edition: RSS of the server with 1000 connections held in the tarpit, against idle.
# Target: at most 16 MB above idle.   Usage: bash bench/tarpit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
cargo build --release --quiet --features commercial --bin clavitor --example hold_connections
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/clavitor
hold=$target/release/examples/hold_connections
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

"$bin" --data-dir "$work/data" init >/dev/null
CLAVITOR_LOG=warn "$bin" --data-dir "$work/data" serve --listen 127.0.0.1:0 >"$work/out" 2>&1 &
pid=$!
addr=$(listening_addr "$work/out")
sleep 1
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
idle=$(rss)
"$hold" "$addr" 1000 /wp-login.php 8 >"$work/hold.out" &
holder=$!
for _ in $(seq 1 300); do grep -q '^held' "$work/hold.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^held 1000' "$work/hold.out" || { echo "could not hold 1000 connections" >&2; exit 1; }
sleep 2
held=$(rss)
wait "$holder" || true
cat <<REPORT

Tarpit memory (commercial edition)
  idle RSS                     : $((idle / 1024)) MB
  RSS with 1000 held           : $((held / 1024)) MB
  above idle                   : $(((held - idle) / 1024)) MB ($((held - idle)) kB)   (target <= 16 MB)
REPORT
