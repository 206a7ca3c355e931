#!/usr/bin/env bash
# Rolling deploy of the Clavitor fleet over WireGuard SSH: the program behind `nix run .#deploy`.
#
#   nix run .#deploy -- [--dry-run] [--canary NAME] [HOST...]
#
# One node at a time, canary first, the hub last:
#   1. remember the node's current system      ssh root@10.84.0.N readlink -f /nix/var/nix/profiles/system
#   2. switch                                  nixos-rebuild switch --flake FLAKE#NAME --target-host root@10.84.0.N
#   3. health check (bounded retries)          ssh root@10.84.0.N clavitor-health     (GET /healthz)
#   4. on failure: roll that node back to the system of step 1, check it again, and stop the
#      rollout (the remaining nodes are skipped). A summary is printed at the end.
#
# Hosts and addresses come from the inventory as JSON: --inventory FILE, or $CLAVITOR_INVENTORY_JSON
# (set by the flake app), or `nix-instantiate --eval --strict --json FLAKE/hosts/inventory.nix`.
# Run it from a machine inside the WireGuard mesh (the hub, or a SOC workstation peer).
set -euo pipefail

readonly PROFILE=/nix/var/nix/profiles/system

usage() {
  cat <<'EOF'
Usage: deploy.sh [options] [HOST...]

Deploys HOSTs (default: every host in the inventory) one at a time over WireGuard SSH.

Options:
  -n, --dry-run            print the plan and the commands; contact no host, change nothing
  -c, --canary NAME        deploy NAME first (default: the inventory's deploy.canary, when selected)
  -f, --flake REF          flake to deploy (default: $CLAVITOR_DEPLOY_FLAKE, else .)
  -i, --inventory FILE     inventory as JSON (default: $CLAVITOR_INVENTORY_JSON, else evaluated
                           from FLAKE/hosts/inventory.nix with nix-instantiate)
      --allow-placeholder  also deploy hosts whose inventory keys are still placeholders
  -h, --help               this text

Environment:
  CLAVITOR_DEPLOY_SSH_USER       login on the nodes (default root)
  CLAVITOR_DEPLOY_HEALTH_TRIES   health check attempts per node (default 10)
  CLAVITOR_DEPLOY_HEALTH_DELAY   seconds between attempts (default 6)

Exit status: 0 all deployed (or dry run), 1 a node failed (rolled back, rollout stopped),
2 usage or inventory error.
EOF
}

log() { printf '%s deploy: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  log "error: $*"
  exit 2
}

dry_run=0
canary=""
canary_explicit=0
flake="${CLAVITOR_DEPLOY_FLAKE:-.}"
inventory_file="${CLAVITOR_INVENTORY_JSON:-}"
allow_placeholder=0
requested=()

while (($#)); do
  case "$1" in
    -n | --dry-run) dry_run=1 ;;
    -c | --canary)
      [[ $# -ge 2 ]] || die "$1 needs a host name"
      canary="$2"
      canary_explicit=1
      shift
      ;;
    -f | --flake)
      [[ $# -ge 2 ]] || die "$1 needs a flake reference"
      flake="$2"
      shift
      ;;
    -i | --inventory)
      [[ $# -ge 2 ]] || die "$1 needs a file"
      inventory_file="$2"
      shift
      ;;
    --allow-placeholder) allow_placeholder=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      requested+=("$@")
      break
      ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) requested+=("$1") ;;
  esac
  shift
done

ssh_user="${CLAVITOR_DEPLOY_SSH_USER:-root}"
health_tries="${CLAVITOR_DEPLOY_HEALTH_TRIES:-10}"
health_delay="${CLAVITOR_DEPLOY_HEALTH_DELAY:-6}"
[[ "$health_tries" =~ ^[1-9][0-9]*$ ]] || die "CLAVITOR_DEPLOY_HEALTH_TRIES must be a positive integer"
[[ "$health_delay" =~ ^[0-9]+$ ]] || die "CLAVITOR_DEPLOY_HEALTH_DELAY must be a non-negative integer"

ssh_opts=(-o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3)
export NIX_SSHOPTS="${NIX_SSHOPTS:-${ssh_opts[*]}}"

# --- inventory --------------------------------------------------------------------------------
if [[ -n "$inventory_file" ]]; then
  [[ -r "$inventory_file" ]] || die "cannot read inventory $inventory_file"
  inventory_json="$(cat "$inventory_file")"
else
  inventory_json="$(nix-instantiate --eval --strict --json "$flake/hosts/inventory.nix")" ||
    die "cannot evaluate $flake/hosts/inventory.nix"
fi
jq -e '.hosts | type == "array" and length > 0' >/dev/null <<<"$inventory_json" ||
  die "inventory has no hosts"

# name<TAB>wgAddress<TAB>role<TAB>placeholderKeys, in inventory order
mapfile -t host_rows < <(jq -r '.hosts[] | [.name, .wgAddress, .role, (.placeholderKeys // false | tostring)] | @tsv' <<<"$inventory_json")
declare -A addr=() role=() placeholder=()
all_hosts=()
for row in "${host_rows[@]}"; do
  IFS=$'\t' read -r name address hrole hplaceholder <<<"$row"
  all_hosts+=("$name")
  addr[$name]="$address"
  role[$name]="$hrole"
  placeholder[$name]="$hplaceholder"
done
mapfile -t last_hosts < <(jq -r '.deploy.last // [] | .[]' <<<"$inventory_json")
if [[ -z "$canary" ]]; then
  canary="$(jq -r '.deploy.canary // ""' <<<"$inventory_json")"
fi

is_in() {
  local needle="$1" x
  shift
  for x in "$@"; do [[ "$x" == "$needle" ]] && return 0; done
  return 1
}

# --- selection and order ------------------------------------------------------------------------
if ((${#requested[@]})); then
  for h in "${requested[@]}"; do
    [[ -n "${addr[$h]+x}" ]] || die "unknown host '$h' (not in the inventory)"
  done
  selected=("${requested[@]}")
else
  selected=("${all_hosts[@]}")
fi
if [[ -n "$canary" ]]; then
  [[ -n "${addr[$canary]+x}" ]] || die "canary '$canary' is not in the inventory"
  if ((canary_explicit)) && ! is_in "$canary" "${selected[@]}"; then
    selected=("$canary" "${selected[@]}")
  fi
fi

# canary first, then inventory order, the deploy.last hosts (the hub) at the end
order=()
if [[ -n "$canary" ]] && is_in "$canary" "${selected[@]}"; then order+=("$canary"); fi
for h in "${all_hosts[@]}"; do
  is_in "$h" "${selected[@]}" || continue
  [[ "$h" == "$canary" ]] && continue
  is_in "$h" "${last_hosts[@]}" && continue
  order+=("$h")
done
for h in "${last_hosts[@]}"; do
  is_in "$h" "${selected[@]}" && [[ "$h" != "$canary" ]] && order+=("$h")
done

if ((!allow_placeholder)); then
  refused=()
  for h in "${order[@]}"; do [[ "${placeholder[$h]}" == "true" ]] && refused+=("$h"); done
  if ((${#refused[@]})); then
    die "placeholder keys in the inventory for: ${refused[*]} (replace them, see docs/operations.md; or --allow-placeholder)"
  fi
fi

# --- the rollout --------------------------------------------------------------------------------
declare -A result=()
for h in "${order[@]}"; do result[$h]="skipped"; done

summary() {
  local h
  printf '\nDeploy summary (flake %s)%s:\n' "$flake" "$( ((dry_run)) && echo ', DRY RUN')"
  for h in "${order[@]}"; do
    printf '  %-14s %-6s %-12s %s\n' "$h" "${role[$h]}" "${addr[$h]}" "${result[$h]}"
  done
}

remote() {
  local host="$1"
  shift
  ssh "${ssh_opts[@]}" "$ssh_user@${addr[$host]}" -- "$@"
}

healthy() {
  local host="$1" try
  for ((try = 1; try <= health_tries; try++)); do
    if remote "$host" clavitor-health >/dev/null; then
      log "$host: healthy (attempt $try)"
      return 0
    fi
    log "$host: health check $try/$health_tries failed"
    ((try < health_tries)) && sleep "$health_delay"
  done
  return 1
}

log "order: ${order[*]} (canary: ${canary:-none})"
if ((dry_run)); then
  for h in "${order[@]}"; do
    printf 'would run: nixos-rebuild switch --flake %s#%s --target-host %s@%s\n' "$flake" "$h" "$ssh_user" "${addr[$h]}"
    printf 'would run: ssh %s@%s -- clavitor-health\n' "$ssh_user" "${addr[$h]}"
    result[$h]="dry-run"
  done
  summary
  exit 0
fi

failed=""
for h in "${order[@]}"; do
  target="$ssh_user@${addr[$h]}"
  log "$h: deploying to $target"
  if ! previous="$(remote "$h" readlink -f "$PROFILE")" || [[ -z "$previous" ]]; then
    log "$h: unreachable over WireGuard; nothing changed"
    result[$h]="FAILED: unreachable, nothing changed"
    failed="$h"
    break
  fi
  log "$h: current system $previous"

  if nixos-rebuild switch --flake "$flake#$h" --target-host "$target" --use-substitutes; then
    if healthy "$h"; then
      result[$h]="ok"
      continue
    fi
    why="unhealthy after switch"
  else
    why="switch failed"
  fi

  failed="$h"
  log "$h: $why; rolling back to $previous"
  current="$(remote "$h" readlink -f "$PROFILE" || true)"
  if [[ "$current" == "$previous" ]]; then
    log "$h: system profile unchanged, re-activating $previous"
  fi
  if remote "$h" "nix-env --profile $PROFILE --set $previous && $previous/bin/switch-to-configuration switch"; then
    if healthy "$h"; then
      result[$h]="FAILED ($why), rolled back, healthy"
    else
      result[$h]="FAILED ($why), rolled back, STILL UNHEALTHY"
    fi
  else
    result[$h]="FAILED ($why), ROLLBACK FAILED"
  fi
  break
done

summary
if [[ -n "$failed" ]]; then
  log "rollout stopped at $failed"
  exit 1
fi
log "all ${#order[@]} hosts deployed"
