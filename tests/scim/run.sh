#!/usr/bin/env bash
# SCIM 2.0 conformance: the PyPI scim2-tester (through scim2-cli's `scim test`, both pinned, in a
# venv this script creates under target/) against the real commercial server's /api/scim/v2/,
# with a provisioning token the owner made with a (software) passkey. Fails on any failed check
# (ERROR, CRITICAL or DEVIATION); a SKIPPED check is one the tester did not run.
#
#   bash tests/scim/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

CLI_VERSION=0.6.0
TESTER_VERSION=0.5.2
target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target/venv-scim"
if ! "$venv/bin/pip" show scim2-tester 2>/dev/null | grep -qx "Version: $TESTER_VERSION" \
  || ! "$venv/bin/pip" show scim2-cli 2>/dev/null | grep -qx "Version: $CLI_VERSION"; then
  echo "installing scim2-cli $CLI_VERSION and scim2-tester $TESTER_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "scim2-cli==$CLI_VERSION" "scim2-tester==$TESTER_VERSION"
fi

CLAVITOR_SCIM_CLI="$venv/bin/scim" cargo test --features commercial --test scim -- \
  --ignored --exact scim2_tester_passes --nocapture
