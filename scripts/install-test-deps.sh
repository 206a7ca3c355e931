#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (run as root, or with sudo on PATH).
# Idempotent: packages already present are skipped, so a warm machine pays nothing.
set -euo pipefail

packages=(
  sqlite3          # tests inspect raw vault files
  nix-bin          # parse and evaluate every .nix file
  age              # agenix secrets round trip
  shellcheck       # the deploy app and the scripts
  jq               # shell tests read JSON
  wrk              # bench/read.sh load generator
  curl             # bench/read.sh probes; tests/node.rs fetches over HTTPS; tests/proxy.rs is an agent
  chromium         # tests/browser: the owner's pages in a real browser
  nodejs           # tests/browser: playwright-core drives chromium
  pebble           # tests/node.rs: ACME test CA (pebble + pebble-challtestsrv)
  openssl          # tests/node.rs, tests/client.rs: test certificates, the served certificate's expiry;
                   # tests/license.rs, license-minter/tests: Ed25519 vendor keys (genpkey)
  faketime         # tests/replication.rs: a backup POP's clock 4 and 6 minutes off (libfaketime)
  binutils         # tests/license.rs: `nm` shows the node binary defines no signing function
  wireguard-go     # tests/node.rs: userspace WireGuard in network namespaces
  wireguard-tools  # tests/node.rs: `wg set` configures the tunnels from clavitor's keys
  iproute2         # tests/node.rs: network namespaces and the veth pair
  iputils-ping     # tests/node.rs: ping across the tunnel
  python3-venv     # tests/schemathesis, tests/proxy.rs: the fuzzer and Python requests (PyPI, pinned) in venvs
)
# tests/browser installs playwright-core with npm. Debian ships it as its own package, which
# conflicts with a nodejs build that bundles npm (e.g. NodeSource's): add it only when missing.
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) == 0 ]] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
