#!/usr/bin/env bash
# Offline tests of the Nix side (issue 7), with Debian's nix-bin 2.8, age, shellcheck and jq.
#
#   CLAVITOR_BIN=target/debug/clavitor bash tests/nix/run.sh
#
# No network: nothing is fetched (nixpkgs is not needed: only pure files are evaluated; the flake's
# outputs are applied to recording stand-ins); the deploy app runs against stand-ins of ssh and
# nixos-rebuild. Temporary files live in one mktemp directory, removed on exit.
# Ends with the line "N passed, M failed" (", K skipped" when a tool is missing); exit 1 on any
# failure.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tests/nix"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$root" || exit 2

# Quiet nix-bin on a machine without the nixbld group; never reach out (loopback proxy, 1 try).
export NIX_CONFIG=$'build-users-group =\nexperimental-features = nix-command flakes\nconnect-timeout = 2\ndownload-attempts = 1'
export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 all_proxy=http://127.0.0.1:9
export HTTP_PROXY=$http_proxy HTTPS_PROXY=$https_proxy ALL_PROXY=$all_proxy

passed=0 failed=0 skipped=0
pass() {
  passed=$((passed + 1))
  printf 'ok   %s\n' "$1"
}
fail() {
  failed=$((failed + 1))
  printf 'FAIL %s\n' "$1"
  if [[ -n "${2:-}" ]]; then printf '%s\n' "$2" | head -n 20 | sed 's/^/     | /'; fi
}
skip() {
  skipped=$((skipped + 1))
  printf 'skip %s (%s)\n' "$1" "$2"
}
check() { # check NAME COMMAND... : pass when the command succeeds, else fail with its output
  local name="$1" out
  shift
  if out="$("$@" 2>&1)"; then pass "$name"; else fail "$name" "$out"; fi
}
section() { printf '\n== %s\n' "$1"; }

# Runs a tests/nix/*.nix file that evaluates to [ { name; ok; msg; } ] and counts each entry.
nix_checks() {
  local file="$1" out
  shift
  if ! out="$(nix-instantiate --eval --strict --json "$file" "$@" 2>"$tmp/nix.err")"; then
    fail "evaluate $file" "$(tail -n 15 "$tmp/nix.err")"
    return
  fi
  while IFS=$'\t' read -r ok name msg; do
    if [[ "$ok" == true ]]; then pass "$name"; else fail "$name" "$msg"; fi
  done < <(jq -r '.[] | [(.ok | tostring), .name, (.msg // "")] | @tsv' <<<"$out")
}

for tool in nix-instantiate jq; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: run scripts/install-test-deps.sh" >&2
    echo "0 passed, 1 failed"
    exit 1
  }
done

# -----------------------------------------------------------------------------------------------
section "every .nix file parses"
nix_files=()
while IFS= read -r -d '' f; do nix_files+=("${f#./}"); done < <(
  find . \( -name .git -o -name target -o -name node_modules -o -name result \) -prune -o \
    -name '*.nix' -type f -print0 | sort -z
)
if ((${#nix_files[@]} < 30)); then fail "found the repo's .nix files" "only ${#nix_files[@]}"; fi
for f in "${nix_files[@]}"; do
  check "parse $f" nix-instantiate --parse "$f"
done

# -----------------------------------------------------------------------------------------------
section "inventory (hosts/inventory.nix)"
nix_checks tests/nix/inventory-test.nix
nix_checks tests/nix/replication-test.nix
inventory_json="$tmp/inventory.json"
if nix-instantiate --eval --strict --json hosts/inventory.nix >"$inventory_json" 2>"$tmp/nix.err"; then
  bad=""
  while read -r name key; do
    n="$(printf '%s' "$key" | base64 -d 2>/dev/null | wc -c)"
    [[ "$n" == 32 ]] || bad+="$name($n bytes) "
  done < <(jq -r '.hosts[] | "\(.name) \(.wgPublicKey)"' "$inventory_json")
  if [[ -z "$bad" ]]; then pass "inventory: WireGuard keys decode to 32 bytes"; else fail "inventory: WireGuard keys decode to 32 bytes" "$bad"; fi
  if command -v age >/dev/null; then
    bad=""
    while IFS= read -r key; do
      age -r "$key" -o /dev/null <<<"probe" 2>/dev/null || bad+="$key"$'\n'
    done < <(jq -r '(.hosts[].hostKey), (.admins[].sshKey)' "$inventory_json")
    if [[ -z "$bad" ]]; then pass "inventory: host and admin keys are valid ed25519 points (age accepts them)"; else fail "inventory: host and admin keys are valid ed25519 points" "$bad"; fi
  else
    skip "inventory: host keys accepted by age" "age not installed"
  fi
else
  fail "evaluate hosts/inventory.nix" "$(tail -n 15 "$tmp/nix.err")"
fi

# -----------------------------------------------------------------------------------------------
section "services.clavitor (modules/clavitor.nix) evaluated with a stand-in lib"
nix_checks tests/nix/module-test.nix

# -----------------------------------------------------------------------------------------------
section "WireGuard mesh helper (modules/lib/mesh.nix)"
nix_checks tests/nix/mesh-test.nix

# -----------------------------------------------------------------------------------------------
section "option -> flag mapping (modules/lib/clavitor-args.nix) against clavitor serve --help"
# CLAVITOR_BINS: the binaries to check, space-separated (tests/run-all.sh gives both editions:
# the commercial flags must be in the one's help and in none of the other's); else CLAVITOR_BIN.
bins="${CLAVITOR_BINS:-${CLAVITOR_BIN:-}}"
if [[ -z "$bins" ]]; then
  for c in target/release/clavitor target/debug/clavitor; do [[ -x "$c" ]] && bins="$root/$c" && break; done
fi
[[ -n "$bins" ]] || fail "CLAVITOR_BINS or CLAVITOR_BIN names the built clavitor binary" "(build it with cargo build first)"
for bin in $bins; do
  if [[ -x "$bin" ]] && "$bin" serve --help >"$tmp/help.txt" 2>&1; then
    help_json="$(grep -oE -- '--[a-z][a-z0-9-]*' "$tmp/help.txt" | sort -u | jq -R . | jq -sc .)"
    echo "     (flags in $bin serve --help: $(jq -r 'join(" ")' <<<"$help_json"))"
    nix_checks tests/nix/args-test.nix --argstr helpJson "$help_json"
  else
    fail "$bin serve --help runs" "$(head -n 20 "$tmp/help.txt" 2>/dev/null)"
  fi
done

# -----------------------------------------------------------------------------------------------
section "flake.lock and flake.nix inputs"
check "flake.lock is valid JSON" jq -e . flake.lock
pins_md="${NIX_PINS_MD:-$root/../shared/nix-pins.md}"
pins_json="$(jq -cS . "$here/expected-pins.json")"
if [[ -r "$pins_md" ]]; then
  md_json="$(awk -F'|' '/^\| *(nixpkgs|agenix|systems)/ {
      for (i = 2; i <= 6; i++) gsub(/ /, "", $i); sub(/\(.*/, "", $2)
      printf "%s\t%s\t%s\t%s\t%s\n", $2, $3, $4, $5, $6 }' "$pins_md" |
    jq -R -s -cS 'split("\n") | map(select(length > 0) | split("\t")
      | {key: .[0], value: {original: .[1], rev: .[2], lastModified: (.[3] | tonumber), narHash: .[4]}})
      | from_entries')"
  if [[ "$md_json" == "$pins_json" ]]; then
    pass "nix-pins.md ($pins_md) = tests/nix/expected-pins.json"
  else
    fail "nix-pins.md ($pins_md) = tests/nix/expected-pins.json" "$md_json"
  fi
  pins_json="$md_json"
else
  echo "     ($pins_md not found: using tests/nix/expected-pins.json)"
fi
nix_checks tests/nix/flake-lock-test.nix --argstr pinsJson "$pins_json"
# nix itself: the lock must be complete and current for flake.nix (else it would try to fetch).
if command -v nix >/dev/null; then
  mkdir -p "$tmp/flake"
  cp flake.nix flake.lock "$tmp/flake/"
  if out="$(timeout 120 nix flake metadata --offline --no-update-lock-file --no-write-lock-file --json "path:$tmp/flake" 2>&1)"; then
    if jq -e '.locks.version == 7 and (.locks.nodes | keys == ["agenix","nixpkgs","root","systems"])' <<<"$out" >/dev/null 2>&1; then
      pass "nix flake metadata accepts flake.lock as current for flake.nix (offline)"
    else
      fail "nix flake metadata accepts flake.lock as current for flake.nix (offline)" "$out"
    fi
  elif grep -qiE 'read-only|permission denied|cannot open connection|opening lock file' <<<"$out"; then
    skip "nix flake metadata (offline)" "no writable nix store"
  else
    fail "nix flake metadata accepts flake.lock as current for flake.nix (offline)" "$out"
  fi
else
  skip "nix flake metadata (offline)" "nix command not installed"
fi

# -----------------------------------------------------------------------------------------------
section "flake outputs and VM tests (applied to recording stand-ins of nixpkgs)"
nix_checks tests/nix/flake-outputs-test.nix -A results
if command -v python3 >/dev/null; then
  if nix-instantiate --eval --strict --json tests/nix/flake-outputs-test.nix -A testScripts >"$tmp/scripts.json" 2>"$tmp/nix.err"; then
    for t in $(jq -r 'keys[]' "$tmp/scripts.json"); do
      jq -r --arg t "$t" '.[$t]' "$tmp/scripts.json" >"$tmp/$t.py"
      check "VM test $t: testScript is valid Python" python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$tmp/$t.py"
    done
  else
    fail "evaluate VM test scripts" "$(tail -n 15 "$tmp/nix.err")"
  fi
else
  skip "VM test scripts are valid Python" "python3 not installed"
fi

# -----------------------------------------------------------------------------------------------
section "secrets (agenix recipients, age round trip)"
nix_checks tests/nix/secrets-test.nix
if command -v age >/dev/null && command -v age-keygen >/dev/null; then
  keys="$tmp/keys"
  mkdir -p "$keys"
  for k in zurich tokyo admin; do age-keygen -o "$keys/$k.key" 2>/dev/null; done
  pub() { age-keygen -y "$keys/$1.key"; }
  # The real rules (secrets/rules.nix) applied to a two-host inventory with throwaway keys.
  jq --arg z "$(pub zurich)" --arg t "$(pub tokyo)" --arg a "$(pub admin)" '
    .hosts |= map(select(.name == "zurich" or .name == "tokyo")
      | .hostKey = (if .name == "zurich" then $z else $t end))
    | .admins = [{name: "admin", sshKey: $a}]' "$inventory_json" >"$tmp/test-inventory.json"
  if nix-instantiate --eval --strict --json -E \
    "import $root/secrets/rules.nix (builtins.fromJSON (builtins.readFile $tmp/test-inventory.json))" \
    >"$tmp/test-secrets.json" 2>"$tmp/nix.err"; then
    mkdir -p "$tmp/enc"
    enc_ok=1
    while IFS= read -r file; do
      recipients=()
      while IFS= read -r r; do recipients+=(-r "$r"); done < <(jq -r --arg f "$file" '.[$f].publicKeys[]' "$tmp/test-secrets.json")
      printf 'secret of %s %s' "$file" "$RANDOM$RANDOM" >"$tmp/enc/$file.plain"
      age "${recipients[@]}" -o "$tmp/enc/$file" "$tmp/enc/$file.plain" || enc_ok=0
    done < <(jq -r 'keys[]' "$tmp/test-secrets.json")
    n="$(jq 'length' "$tmp/test-secrets.json")"
    if ((enc_ok)) && [[ "$n" == 6 ]]; then pass "age: encrypt the 6 secrets of 2 hosts to their recipients"; else fail "age: encrypt the 6 secrets of 2 hosts" "n=$n"; fi
    can() { age -d -i "$keys/$1.key" "$tmp/enc/$2" 2>/dev/null | cmp -s - "$tmp/enc/$2.plain"; }
    own=1 other=0 admin=1
    for kind in wg master-key kuma-push; do
      can zurich "$kind-zurich.age" || own=0
      can tokyo "$kind-tokyo.age" || own=0
      can zurich "$kind-tokyo.age" && other=1
      can tokyo "$kind-zurich.age" && other=1
      can admin "$kind-zurich.age" || admin=0
      can admin "$kind-tokyo.age" || admin=0
    done
    if ((own)); then pass "age: a host decrypts its own secrets"; else fail "age: a host decrypts its own secrets"; fi
    if ((!other)); then pass "age: a host cannot decrypt another host's secrets"; else fail "age: a host cannot decrypt another host's secrets"; fi
    if ((admin)); then pass "age: the SOC admin decrypts every secret"; else fail "age: the SOC admin decrypts every secret"; fi
  else
    fail "evaluate secrets/rules.nix on the throwaway inventory" "$(tail -n 15 "$tmp/nix.err")"
  fi
else
  skip "age round trip" "age not installed"
fi
# Nothing secret in plain text in the repository.
secret_patterns=("AGE-SECRET""-KEY-1" "BEGIN OPENSSH ""PRIVATE KEY" "BEGIN ""PRIVATE KEY" "BEGIN RSA ""PRIVATE KEY")
hits="$(grep -rlF --exclude-dir=.git --exclude-dir=target --exclude-dir=node_modules \
  "${secret_patterns[@]/#/-e}" . 2>/dev/null || true)"
if [[ -z "$hits" ]]; then pass "no private key material in the repository"; else fail "no private key material in the repository" "$hits"; fi
age_files="$(find secrets -name '*.age' -type f | wc -l)"
echo "     ($age_files *.age files in secrets/: created by the SOC with agenix once the real host keys exist)"

# -----------------------------------------------------------------------------------------------
section "deploy app (deploy/deploy.sh)"
if command -v shellcheck >/dev/null; then
  check "shellcheck deploy/deploy.sh" shellcheck deploy/deploy.sh
  check "shellcheck tests/nix/run.sh and the stand-ins" shellcheck -x tests/nix/run.sh tests/nix/standins/ssh tests/nix/standins/nixos-rebuild
else
  skip "shellcheck" "shellcheck not installed"
fi

# Stand-ins for ssh and nixos-rebuild first on PATH; a fleet inventory with real-looking keys.
export FAKE_LOG="$tmp/deploy.log" FAKE_STATE="$tmp/deploy-state"
export CLAVITOR_DEPLOY_HEALTH_TRIES=2 CLAVITOR_DEPLOY_HEALTH_DELAY=0
jq '.hosts |= map(.placeholderKeys = false)' "$inventory_json" >"$tmp/fleet.json"
addr_of() { jq -r --arg n "$1" '.hosts[] | select(.name == $n) | .wgAddress' "$tmp/fleet.json"; }
run_deploy() { # run_deploy SCENARIO [args...]: fresh log and node states, output in $tmp/SCENARIO.out
  local scenario="$1"
  shift
  : >"$FAKE_LOG"
  rm -rf "$FAKE_STATE"
  mkdir -p "$FAKE_STATE"
  PATH="$here/standins:$PATH" timeout 120 bash deploy/deploy.sh "$@" >"$tmp/$scenario.out" 2>&1
  echo $? >"$tmp/$scenario.rc"
}
rc_of() { cat "$tmp/$1.rc"; }
# the hosts in the order they were switched
switched() { awk '$1 == "nixos-rebuild" { sub(/.*#/, "", $3); print $3 }' "$FAKE_LOG" | tr '\n' ' ' | sed 's/ $//'; }
expected_order="warsaw $(jq -r '[.hosts[].name | select(. != "warsaw" and . != "zurich")] | join(" ")' "$tmp/fleet.json") zurich"

# 1. a full rollout
run_deploy full --inventory "$tmp/fleet.json"
if [[ "$(rc_of full)" == 0 ]]; then pass "deploy: full rollout exits 0"; else fail "deploy: full rollout exits 0" "$(tail -n 20 "$tmp/full.out")"; fi
if [[ "$(switched)" == "$expected_order" ]]; then
  pass "deploy: order is canary (warsaw) first, inventory order, hub (zurich) last"
else
  fail "deploy: order is canary first, hub last" "got:  $(switched)"$'\n'"want: $expected_order"
fi
# per node exactly: readlink (remember), switch, health, in this order; nothing else
want_log=""
for h in $expected_order; do
  a="$(addr_of "$h")"
  want_log+="ssh root@$a readlink -f /nix/var/nix/profiles/system"$'\n'
  want_log+="nixos-rebuild switch .#$h root@$a"$'\n'
  want_log+="ssh root@$a clavitor-health"$'\n'
done
if [[ "$(cat "$FAKE_LOG")"$'\n' == "$want_log" ]]; then
  pass "deploy: each node is remembered, switched over WireGuard SSH, then health-checked, one at a time"
else
  fail "deploy: per-node sequence" "$(diff <(printf '%s' "$want_log") "$FAKE_LOG" | head -n 20)"
fi
if [[ "$(grep -c ' ok$' "$tmp/full.out")" == 16 ]] && grep -q 'Deploy summary' "$tmp/full.out"; then
  pass "deploy: summary lists 16 hosts ok"
else
  fail "deploy: summary lists 16 hosts ok" "$(tail -n 20 "$tmp/full.out")"
fi

# 2. an unhealthy node: rolled back to its previous system, rollout stops
dubai="$(addr_of dubai)"
FAKE_UNHEALTHY="$dubai" run_deploy unhealthy --inventory "$tmp/fleet.json"
if [[ "$(rc_of unhealthy)" == 1 ]]; then pass "deploy: unhealthy node -> exit 1"; else fail "deploy: unhealthy node -> exit 1" "rc=$(rc_of unhealthy)"; fi
if [[ "$(switched)" == "warsaw tokyo amsterdam dubai" ]]; then
  pass "deploy: rollout stops at the failing node (no switch after it)"
else
  fail "deploy: rollout stops at the failing node" "switched: $(switched)"
fi
rollback_line="ssh root@$dubai nix-env --profile /nix/var/nix/profiles/system --set /nix/store/0000-nixos-system-$dubai-old && /nix/store/0000-nixos-system-$dubai-old/bin/switch-to-configuration switch"
if grep -qxF "$rollback_line" "$FAKE_LOG" &&
  [[ "$(grep -c "^ssh root@$dubai clavitor-health" "$FAKE_LOG")" == 3 ]] &&
  [[ "$(tail -n 1 "$FAKE_LOG")" == "ssh root@$dubai clavitor-health" ]] &&
  [[ "$(cat "$FAKE_STATE/$dubai")" == "/nix/store/0000-nixos-system-$dubai-old" ]]; then
  pass "deploy: failing node rolled back to its previous system, then health-checked again"
else
  fail "deploy: failing node rolled back" "$(tail -n 8 "$FAKE_LOG")"
fi
if grep -qE '^  dubai .*FAILED \(unhealthy after switch\), rolled back, healthy' "$tmp/unhealthy.out" &&
  grep -qE '^  zurich .* skipped$' "$tmp/unhealthy.out"; then
  pass "deploy: summary shows the rolled-back node and the skipped rest"
else
  fail "deploy: summary after a failure" "$(tail -n 20 "$tmp/unhealthy.out")"
fi

# 3. the switch itself fails on the canary: rolled back, nothing else touched
warsaw="$(addr_of warsaw)"
FAKE_SWITCH_FAIL="$warsaw" run_deploy switchfail --inventory "$tmp/fleet.json"
if [[ "$(rc_of switchfail)" == 1 && "$(switched)" == "warsaw" ]] &&
  grep -qF "ssh root@$warsaw nix-env --profile /nix/var/nix/profiles/system --set /nix/store/0000-nixos-system-$warsaw-old" "$FAKE_LOG" &&
  [[ "$(cat "$FAKE_STATE/$warsaw")" == "/nix/store/0000-nixos-system-$warsaw-old" ]]; then
  pass "deploy: failed switch on the canary -> rolled back, no other node touched"
else
  fail "deploy: failed switch on the canary" "$(cat "$FAKE_LOG")"
fi

# 4. an unreachable node: nothing is changed on it, rollout stops
tokyo="$(addr_of tokyo)"
FAKE_UNREACHABLE="$tokyo" run_deploy unreachable --inventory "$tmp/fleet.json"
if [[ "$(rc_of unreachable)" == 1 && "$(switched)" == "warsaw" ]] && ! grep -q "^nixos-rebuild .*$tokyo" "$FAKE_LOG"; then
  pass "deploy: unreachable node -> not switched, rollout stops"
else
  fail "deploy: unreachable node" "$(cat "$FAKE_LOG")"
fi

# 5. dry run: prints the plan, contacts nobody, changes nothing
run_deploy dry --dry-run --inventory "$tmp/fleet.json"
if [[ "$(rc_of dry)" == 0 && ! -s "$FAKE_LOG" && -z "$(ls -A "$FAKE_STATE")" ]] &&
  [[ "$(grep -c '^would run: nixos-rebuild switch' "$tmp/dry.out")" == 16 ]] &&
  [[ "$(grep -m1 '^would run: nixos-rebuild' "$tmp/dry.out")" == "would run: nixos-rebuild switch --flake .#warsaw --target-host root@$warsaw" ]]; then
  pass "deploy: --dry-run prints the 16-node plan (canary first) and runs nothing"
else
  fail "deploy: --dry-run changes nothing" "log: $(cat "$FAKE_LOG")"$'\n'"$(head -n 5 "$tmp/dry.out")"
fi

# 6. selection: named hosts, explicit canary first
run_deploy select --canary tokyo --inventory "$tmp/fleet.json" zurich seoul mumbai
if [[ "$(rc_of select)" == 0 && "$(switched)" == "tokyo seoul mumbai zurich" ]]; then
  pass "deploy: named hosts with --canary: canary first, hub last"
else
  fail "deploy: named hosts with --canary" "rc=$(rc_of select) switched: $(switched)"
fi

# 7. refusals before anything runs: unknown host, placeholder keys
run_deploy unknown --inventory "$tmp/fleet.json" atlantis
if [[ "$(rc_of unknown)" == 2 && ! -s "$FAKE_LOG" ]] && grep -q "unknown host 'atlantis'" "$tmp/unknown.out"; then
  pass "deploy: unknown host -> exit 2, nothing run"
else
  fail "deploy: unknown host" "$(cat "$tmp/unknown.out")"
fi
run_deploy placeholder --inventory "$inventory_json"
if [[ "$(rc_of placeholder)" == 2 && ! -s "$FAKE_LOG" ]] && grep -q "placeholder keys" "$tmp/placeholder.out"; then
  pass "deploy: hosts with placeholder keys are refused, nothing run"
else
  fail "deploy: placeholder keys refused" "$(cat "$tmp/placeholder.out")"
fi

# 8. without --inventory: the inventory is evaluated from the flake with nix-instantiate
CLAVITOR_DEPLOY_FLAKE="$root" run_deploy evaluated --dry-run --allow-placeholder
if [[ "$(rc_of evaluated)" == 0 && ! -s "$FAKE_LOG" ]] &&
  [[ "$(grep -c '^would run: nixos-rebuild switch' "$tmp/evaluated.out")" == 16 ]]; then
  pass "deploy: reads the inventory with nix-instantiate --eval --json when no JSON is given"
else
  fail "deploy: inventory from nix-instantiate" "$(tail -n 10 "$tmp/evaluated.out")"
fi

# -----------------------------------------------------------------------------------------------
section "docs"
bad=""
for flag in $(nix-instantiate --eval --strict --json -E "let a = import $root/modules/lib/clavitor-args.nix; in builtins.attrValues (a.flags // a.commercialFlags)" 2>/dev/null | jq -r '.[]'); do
  grep -qF -- "$flag" docs/operations.md || bad+="$flag "
done
if [[ -f docs/operations.md && -z "$bad" ]]; then pass "docs/operations.md documents every mapped flag"; else fail "docs/operations.md documents every mapped flag" "missing: $bad"; fi
missing=""
for heading in "## Deploying" "## Adding a host" "## Kuma push monitors" "## Module options and binary flags"; do
  grep -qF "$heading" docs/operations.md 2>/dev/null || missing+="'$heading' "
done
if [[ -z "$missing" ]]; then pass "docs/operations.md covers deploying, adding a host, Kuma push monitors, options"; else fail "docs/operations.md sections" "missing: $missing"; fi
check "secrets/README.md exists" test -s secrets/README.md

echo
if ((skipped)); then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
((failed == 0))
