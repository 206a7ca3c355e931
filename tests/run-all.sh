#!/usr/bin/env bash
# Runs every test: installs what the tests need, then lint, both editions' tests, and the nix checks.
# This is the README's test command and exactly what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s (%s, %ss into the run)\n' "$*" "$(date -u +%H:%M:%S)" "$SECONDS"; }

step "installing test dependencies (Debian packages)"
bash scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --check

step "clippy (community and commercial)"
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features commercial -- -D warnings
cargo clippy -p clavitor-license --all-targets -- -D warnings

step "tests: community edition"
cargo test

step "tests: commercial edition"
cargo test --features commercial

step "tests: the vendor's license minter (workspace crate license-minter/)"
cargo test -p clavitor-license

# --- openapi branch: the live server fuzzed against its own OpenAPI document ---
step "schemathesis: no 5xx, every response as documented (community and commercial, side by side)"
# A fixed seed keeps CI reproducible; SCHEMATHESIS_SEED=<n> (or a fresh number) explores further.
# (20261128 made the community run hit a CPython 3.11 ast bug inside hypothesis, "AST constructor
# recursion depth mismatch", once the merged API changed the generation sequence: a tool error,
# not a finding, so the seed moved on by one.)
export SCHEMATHESIS_SEED="${SCHEMATHESIS_SEED:-20261129}"
bash tests/schemathesis/run.sh install
fuzzed="$(mktemp -d)"
cargo build --quiet && cp "${CARGO_TARGET_DIR:-$PWD/target}/debug/clavitor" "$fuzzed/community"
cargo build --quiet --features commercial && cp "${CARGO_TARGET_DIR:-$PWD/target}/debug/clavitor" "$fuzzed/commercial"
# Side by side: each run spends its time in one Python process and in waits (its rate-limited
# token checks, the tarpit), so two of them on two cores take little longer than one.
CLAVITOR_BIN="$fuzzed/community" bash tests/schemathesis/run.sh community >"$fuzzed/community.log" 2>&1 &
community=$!
CLAVITOR_BIN="$fuzzed/commercial" bash tests/schemathesis/run.sh commercial >"$fuzzed/commercial.log" 2>&1 &
commercial=$!
community_rc=0 commercial_rc=0
wait "$community" || community_rc=$?
wait "$commercial" || commercial_rc=$?
cat "$fuzzed/community.log" "$fuzzed/commercial.log"
rm -rf "$fuzzed"
if [[ $community_rc != 0 || $commercial_rc != 0 ]]; then
  echo "schemathesis failed: community rc $community_rc, commercial rc $commercial_rc" >&2
  exit 1
fi
# --- end openapi branch ---

# --- scim branch: issue 16 §4 (commercial) ---
step "scim: scim2-tester (PyPI, pinned) against the commercial server's /api/scim/v2/"
bash tests/scim/run.sh
# --- end scim branch ---

# --- webauthn branch: the owner's pages in headless Chromium (tests/browser/run.sh) ---
step "browser: setup link, passkey, L1/L2 entry, scoped agent; commercial bulk agents and autoscope (headless Chromium)"
bash tests/browser/run.sh
# --- end webauthn branch ---

# --- listener branch: issue 12 §1 (ci-release build; about 2 min plus the build) ---
step "strangers: RSS < 64 MB and agent p99 < 50 ms under 5,000 stalled connections + 500 uploads"
bash bench/strangers.sh --check
# --- end listener branch ---

# --- proxy branch: issue 18's figures (printed, not asserted; ci-release build shared with the above) ---
step "proxy: proxied vs direct latency p50/p99, RSS with 1,000 tunnels"
bash bench/proxy.sh
# --- end proxy branch ---

step "nix: parse, evaluate, secrets, deploy orchestration"
# Both editions' binaries: the option -> flag check holds the commercial flags against each.
editions="$(mktemp -d)"
cargo build --quiet && cp "${CARGO_TARGET_DIR:-$PWD/target}/debug/clavitor" "$editions/community"
cargo build --quiet --features commercial && cp "${CARGO_TARGET_DIR:-$PWD/target}/debug/clavitor" "$editions/commercial"
CLAVITOR_BINS="$editions/community $editions/commercial" bash tests/nix/run.sh
rm -rf "$editions"

step "all tests passed"
