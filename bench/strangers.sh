#!/usr/bin/env bash
# Issue 12 §1: strangers cannot make the node hold unbounded memory, and an agent keeps reading.
# Against an optimised build with the default limits: 5,000 connections from 100 loopback
# addresses (127.0.0.2..) that send a partial head or a partial body trickling below the floor
# rate (each starts again when the server lets go), plus 500 concurrent 64 KiB
# POST /api/setup/start bodies (127.1.x.y), while one agent on a keep-alive connection from
# 127.0.0.1 reads /api/entries every 10 ms. Prints RSS idle/peak, the agent's p50/p99/max, and
# what happened to the strangers' connections; then the 500 uploads alone (so that they really
# are concurrent). With --check, fails unless the peak RSS stays under 64 MB in both, the agent
# never failed, its p99 was under 50 ms under the issue's load (phase 1), and 408s were seen.
#
# Usage: bash bench/strangers.sh [--check] [seconds]       (default 40: past the 30 s timeouts)
# Profile: BENCH_PROFILE=ci-release (default; release without LTO, see Cargo.toml) or release.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
check=0
if [[ ${1:-} == --check ]]; then check=1; shift; fi
secs=${1:-40}
profile=${BENCH_PROFILE:-ci-release}

cargo build --profile "$profile" --quiet --bin clavitor --example strangers
target=${CARGO_TARGET_DIR:-target}
bin=$target/$profile/clavitor
gen=$target/$profile/examples/strangers
work=$(mktemp -d)
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# 5,500 client sockets here, as many server sockets in the node (which raises its own limit).
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) >= 12000 )) || { echo "the open-file limit ($(ulimit -n)) is too low for this bench" >&2; exit 1; }

"$bin" --data-dir "$work/data" init >/dev/null
token=$("$bin" --data-dir "$work/data" agent add --name reader --all-access --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
[[ -n $token ]] || { echo "no agent token" >&2; exit 1; }
CLAVITOR_LOG=warn "$bin" --data-dir "$work/data" serve --listen 127.0.0.1:0 >"$work/out" 2>&1 &
pid=$!
addr=$(listening_addr "$work/out")
sleep 1

fig() { awk -v k="$1" '$1 == k {print $2}' "$work/figures"; }
fail=0
# Phase 1 (the issue's load): the caps fill up with stalled strangers; most uploads are refused.
# Phase 2: the 500 uploads alone, so that they really are concurrent: the body budget holds
# (same server, so it starts from what phase 1 left in the allocator).
for phase in mixed uploads; do
  if [[ $phase == mixed ]]; then
    "$gen" "$addr" "$pid" "$token" "$secs" --stalled 5000 --uploads 500 --per-address 50 >"$work/figures"
    title="5,000 stalled + 500 uploads, ${secs} s"
  else
    "$gen" "$addr" "$pid" "$token" 15 --stalled 0 --uploads 500 >"$work/figures"
    title="500 concurrent 64 KiB uploads alone, 15 s"
  fi
  kill -0 "$pid" 2>/dev/null || { echo "the server died: $(cat "$work/out")" >&2; exit 1; }
  cat <<REPORT

Strangers vs. the listener ($profile build, default limits): $title
  RSS idle / peak              : $(( $(fig rss_idle_kb) / 1024 )) MB / $(( $(fig rss_peak_kb) / 1024 )) MB ($(fig rss_peak_kb) kB)   (target < 64 MB)
  agent reads                  : $(fig agent_reads) ok, $(fig agent_errors) failed
  agent read p50 / p99 / max   : $(fig agent_p50_ms) / $(fig agent_p99_ms) / $(fig agent_max_ms) ms   (target p99 < 50 ms)
  stranger connections open    : $(fig stranger_peak_open) at most (client side)
  refused / closed at once     : $(fig refused_at_once)   (the connection caps; a refused stranger retries after 200 ms)
  closed without an answer     : $(fig closed_without_answer)   (30 s head timeout)
  answered 408 / 413 / 431     : $(fig answered_408) / $(fig answered_413) / $(fig answered_431)
  answered otherwise           : $(fig answered_other)   (setup bodies read in full and refused by the handler)
  connect failures             : $(fig connect_failed)
REPORT
  if (( check )); then
    (( $(fig rss_peak_kb) < 64 * 1024 )) || { echo "FAIL: peak RSS $(fig rss_peak_kb) kB >= 64 MB"; fail=1; }
    # Phase 2 is a CPU test more than a memory one (the uploaders send ~450 MB/s on loopback):
    # its p99 is reported, and held to the target only in phase 1, the issue's load.
    if [[ $phase == mixed ]]; then
      awk -v p="$(fig agent_p99_ms)" 'BEGIN { exit !(p < 50) }' || { echo "FAIL: agent p99 $(fig agent_p99_ms) ms >= 50 ms"; fail=1; }
    fi
    (( $(fig agent_errors) == 0 )) || { echo "FAIL: $(fig agent_errors) agent reads failed"; fail=1; }
    (( $(fig agent_reads) > 100 )) || { echo "FAIL: only $(fig agent_reads) agent reads"; fail=1; }
    (( $(fig answered_other) > 0 )) || { echo "FAIL: no setup upload was answered"; fail=1; }
    if [[ $phase == mixed ]]; then
      (( $(fig answered_408) > 0 )) || { echo "FAIL: no 408 seen for the slow bodies"; fail=1; }
      (( $(fig refused_at_once) > 0 )) || { echo "FAIL: the connection cap never refused a stranger"; fail=1; }
    fi
  fi
done

if (( check )); then
  (( fail == 0 )) || exit 1
  echo "strangers: all targets met"
fi
