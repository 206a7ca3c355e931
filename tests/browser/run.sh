#!/usr/bin/env bash
# Browser test of the owner's pages: Debian's headless Chromium, driven by playwright-core with
# a WebAuthn virtual authenticator. Installs its npm dependency from package-lock.json, builds
# the binary unless CLAVITOR_BIN names one, and saves screenshots and the server log under
# tests/output/browser/.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
if [[ -z ${CLAVITOR_BIN:-} ]]; then
  (cd "$root" && cargo build --quiet)
  CLAVITOR_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/clavitor"
fi
command -v chromium >/dev/null || { echo "chromium is not installed (scripts/install-test-deps.sh)" >&2; exit 1; }
npm ci --no-audit --no-fund --silent
out="$root/tests/output/browser"
rm -rf "$out"
mkdir -p "$out"
# If the test dies or times out before stopping its server, stop that one process here.
cleanup() {
  for pidfile in "$out/server.pid" "$out/server-commercial.pid" "$out/chromium-extension.pid"; do
    if [[ -f $pidfile ]]; then
      kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT
CLAVITOR_BIN="$CLAVITOR_BIN" OUT_DIR="$out" timeout --kill-after=10 300 node owner-flow.mjs
# Issue 17: names, who-can-read views, import of every format.
CLAVITOR_BIN="$CLAVITOR_BIN" OUT_DIR="$out" timeout --kill-after=10 120 node names-import.mjs
# Issue 17 §3: the browser extension loaded unpacked (sign-in, fill, iframe refusal, revoke).
# About 25 s.
CLAVITOR_BIN="$CLAVITOR_BIN" OUT_DIR="$out" timeout --kill-after=10 120 node extension.mjs
# The commercial pages (bulk agents, autoscope: issue 16): a commercial build, unless
# CLAVITOR_COMMERCIAL_BIN names one. About 10 s plus the link of the commercial binary.
if [[ -z ${CLAVITOR_COMMERCIAL_BIN:-} ]]; then
  (cd "$root" && cargo build --quiet --features commercial)
  CLAVITOR_COMMERCIAL_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/clavitor"
fi
CLAVITOR_BIN="$CLAVITOR_COMMERCIAL_BIN" OUT_DIR="$out" timeout --kill-after=10 120 node commercial-flow.mjs
