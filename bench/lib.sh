# Sourced by the benchmarks: what each needs to start a server and learn its address.

# listening_addr OUT [ERR] [TRIES]: waits, in 50 ms steps (TRIES of them, default 200: 10 s), for
# the server's "listening on http://ADDR" line in the file OUT and prints ADDR. If none comes,
# prints the server's error output (the file ERR, default OUT) and fails.
listening_addr() {
  local out=$1 err=${2:-$1} tries=${3:-200} addr=""
  for _ in $(seq 1 "$tries"); do
    addr=$(grep -o 'listening on http://[0-9.:]*' "$out" | head -n1 | sed 's|listening on http://||' || true)
    if [[ -n $addr ]]; then
      echo "$addr"
      return 0
    fi
    sleep 0.05
  done
  echo "server did not start: $(cat "$err")" >&2
  return 1
}
