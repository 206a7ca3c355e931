#!/usr/bin/env bash
# Issue 14: replication's figures between two real commercial servers on loopback (TLS with a
# test CA): the catch-up rate of a 10,000-entry backlog written while the backup was down, and
# the lag (CLI commit on the primary -> seen on the backup) of single writes (deletes: the test
# license caps live entries at 10,000) under a steady write load (one every 250 ms), at the
# review's defaults (1 request/s per POP, 100 entries a batch) and with batch_size = 1000 and the
# rate limit lifted. Targets: lag p99 <= 1 s; catch-up at the defaults
# within 10 % of the 100 entries/s they allow; lifted >= 5,000 entries/s. Prints, asserts nothing.
# It is tests/replication.rs's ignored `bench_replication` (it reuses the pair set-up there),
# driving the `ci-release` build (optimised; see Cargo.toml) through CLAVITOR_TEST_BIN.
#
# Usage: bash bench/replication.sh [backlog] [writes]      (default 10000 entries, 40 writes)
#        BENCH_PROFILE=ci-release (default) | release; BENCH_ONLY=defaults|lifted runs one case
# Not in tests/run-all.sh: at the defaults the catch-up alone takes about 100 s.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-ci-release}
cargo build --quiet --profile "$profile" --features commercial --bin clavitor
bin=${CARGO_TARGET_DIR:-$PWD/target}/$profile/clavitor
CLAVITOR_TEST_BIN=$bin BENCH_BACKLOG=${1:-10000} BENCH_WRITES=${2:-40} \
  cargo test --quiet --features commercial --test replication -- --ignored --exact bench_replication --nocapture
