#!/usr/bin/env bash
# Issue 18: the credential proxy's cost. Against an optimised build: an HTTPS upstream on
# loopback (examples/proxy_bench.rs), a vault with an inject rule for it, and a client that
# sends sequential GETs, interleaved request by request, over one kept connection directly and
# over one kept tunnel through the proxy (with an injected credential and its audit row, and
# passed through with no rule). Then it opens 1,000 tunnels and reads the server's RSS, and again
# once each tunnel has carried one request (so each also holds its upstream connection), and once
# more after those upstream connections were let go for being quiet.
# Prints p50/p99 per path, the proxy's p99 overhead over direct, and the RSS figures.
# Targets (issue 18): p99 overhead <= 1 ms for a reused tunnel, <= 64 MB RSS with 1,000 tunnels.
# No assertions on timings: the figures are printed for people to read.
#
# Usage: bash bench/proxy.sh [requests] [tunnels]          (default 2000 requests, 1000 tunnels)
# Profile: BENCH_PROFILE=ci-release (default; release without LTO, see Cargo.toml) or release.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}
tunnels=${2:-1000}
profile=${BENCH_PROFILE:-ci-release}

cargo build --profile "$profile" --quiet --bin clavitor --example proxy_bench
target=${CARGO_TARGET_DIR:-target}
bin=$target/$profile/clavitor
gen=$target/$profile/examples/proxy_bench
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) >= 3 * tunnels + 100 )) || { echo "the open-file limit ($(ulimit -n)) is too low" >&2; exit 1; }

"$gen" upstream "$work" >"$work/upstream.port" &
pids+=($!)
for _ in $(seq 1 100); do [[ -s $work/upstream.port && -s $work/ca.pem ]] && break; sleep 0.05; done
port=$(cat "$work/upstream.port")
[[ -n $port ]] || { echo "the upstream did not start" >&2; exit 1; }

"$bin" --data-dir "$work/data" init >/dev/null
agent=$("$bin" --data-dir "$work/data" agent add --name bench --json)
token=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' <<<"$agent")
id=$(sed -n 's/.*"id": *\([0-9]*\).*/\1/p' <<<"$agent")
scope=$(printf '%04x' "$id")
"$bin" --data-dir "$work/data" entry add --json-file - >/dev/null <<EOF
{"title": "bench API", "scopes": ["$scope"],
 "fields": [{"name": "api_key", "kind": "secret", "value": "sk-bench-0123456789abcdef"}],
 "inject": [{"host": "api.example.test", "path_prefix": "/v1/",
             "place": {"kind": "header", "name": "Authorization", "template": "Bearer {{api_key}}"}}]}
EOF

CLAVITOR_LOG=warn "$bin" --data-dir "$work/data" serve --listen 127.0.0.1:0 \
  --proxy-listen 127.0.0.1:0 --proxy-upstream-ca "$work/ca.pem" \
  --proxy-resolve api.example.test=127.0.0.1 \
  --proxy-max-tunnels $((tunnels + 16)) --proxy-max-tunnels-per-ip $((tunnels + 16)) \
  --proxy-rate 1000000 --proxy-burst 1000000 --proxy-upstream-idle-secs 2 >"$work/out" 2>&1 &
pid=$!
pids+=("$pid")
proxy=""
for _ in $(seq 1 200); do
  proxy=$(grep -o 'proxy listening on [0-9.:]*' "$work/out" | sed 's|proxy listening on ||' || true)
  [[ -n $proxy ]] && grep -q 'listening on http://' "$work/out" && break
  sleep 0.05
done
[[ -n $proxy ]] || { echo "server did not start: $(cat "$work/out")" >&2; exit 1; }
"$bin" --data-dir "$work/data" proxy ca >"$work/vault-ca.pem"

"$gen" client "$proxy" "$token" "$work/vault-ca.pem" "$work/ca.pem" "$port" "$pid" "$requests" "$tunnels" \
  >"$work/figures"
kill -0 "$pid" 2>/dev/null || { echo "the server died: $(cat "$work/out")" >&2; exit 1; }
fig() { awk -v k="$1" '$1 == k {print $2}' "$work/figures"; }
injected=$("$bin" --data-dir "$work/data" audit list --json --limit 1000000 | grep -o '"proxy.inject"' | wc -l)

echo "proxy bench ($profile, $requests sequential GETs per path over one kept connection/tunnel)"
printf '  %-28s p50 %6s us   p99 %6s us\n' "direct" "$(fig direct_p50_us)" "$(fig direct_p99_us)"
printf '  %-28s p50 %6s us   p99 %6s us\n' "proxied, injected + audited" "$(fig injected_p50_us)" "$(fig injected_p99_us)"
printf '  %-28s p50 %6s us   p99 %6s us\n' "proxied, passed through" "$(fig passthrough_p50_us)" "$(fig passthrough_p99_us)"
printf '  p99 overhead over direct: injected %s us, passed through %s us   (target <= 1000 us)\n' \
  $(( $(fig injected_p99_us) - $(fig direct_p99_us) )) $(( $(fig passthrough_p99_us) - $(fig direct_p99_us) ))
printf '  audit rows proxy.inject: %s\n' "$injected"
printf '  RSS before tunnels: %s kB\n' "$(fig rss_before_tunnels_kb)"
printf '  RSS with %s open tunnels (CONNECT + TLS, opened in %s s): %s kB (%s MB)   (target <= 64 MB)\n' \
  "$(fig tunnels_opened)" "$(fig tunnels_open_secs)" "$(fig rss_with_tunnels_kb)" $(( $(fig rss_with_tunnels_kb) / 1024 ))
printf '  RSS with each of them also holding its upstream connection: %s kB (%s MB)\n' \
  "$(fig rss_with_tunnels_and_upstreams_kb)" $(( $(fig rss_with_tunnels_and_upstreams_kb) / 1024 ))
printf '  RSS once they were quiet past --proxy-upstream-idle-secs (2 s here; freed, but glibc keeps it for reuse): %s kB (%s MB)\n' \
  "$(fig rss_after_upstream_idle_kb)" $(( $(fig rss_after_upstream_idle_kb) / 1024 ))
