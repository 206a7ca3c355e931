#!/usr/bin/env bash
# Bulk agents (issue 16 §2): the time to create 500 agents in one passkey-approved
# POST /api/mgmt/agents/bulk, and to revoke them in one DELETE, against the real commercial
# server with a soft passkey (examples/bulk_bench.rs). Prints the figures; asserts nothing.
# Usage: bash bench/bulk.sh [rounds]   (default 3)
#        PROFILE=dev bash bench/bulk.sh   uses the debug build (quicker to build, slower to run)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
rounds=${1:-3}
profile=${PROFILE:-ci-release}

cargo build --quiet --profile "$profile" --features commercial --bin clavitor --example bulk_bench
target=${CARGO_TARGET_DIR:-target}
dir=$profile; [[ $profile == dev ]] && dir=debug
bin=$target/$dir/clavitor
bench=$target/$dir/examples/bulk_bench

work=$(mktemp -d)
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

data="$work/data"
code=$("$bin" --data-dir "$data" init | grep -o 'setup#code=[0-9a-f]*' | sed 's/.*=//')
license=$("$bench" license "$work")
CLAVITOR_LOG=warn CLAVITOR_LICENSE_TOKEN=$license "$bin" --data-dir "$data" \
  --tenant-id bench --license-public-key "$work/vendor.pub.pem" \
  serve --listen 127.0.0.1:0 >"$work/out" 2>"$work/err" &
pid=$!
addr=$(listening_addr "$work/out" "$work/err")

echo "== bulk agents: 500 per request, $rounds rounds ($profile build)"
"$bench" "http://$addr" "$code" "$rounds" | tee "$work/figures"
awk '{ sum[$1] += $2; n[$1]++ } END { for (k in sum) printf "mean %s %.1f\n", k, sum[k] / n[k] }' "$work/figures" | sort
