#!/usr/bin/env bash
# Faults between ORINARI and what it depends on (issue #23 item 3): the
# fault-injecting proxy (faultproxy.py) in front of the fake upstream,
# PostgreSQL and Redis, then SQLite on a full and on a read-only data
# directory (tmpfs mounts; needs root). faults.py says what each check
# asserts; it prints one line per check and a summary with the counts.
#
# Usage: tests/faults/run.sh [BINARY] [--long]
#   make faults       one round of every fault (about a minute)
#   make faults-long  three rounds, more resets
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
mode="${2:-}"
fake="$(dirname "$bin")/orinari-fake-upstream"
if [[ ! -x "$fake" ]]; then
    profile=(); [[ "$(basename "$(dirname "$bin")")" == release ]] && profile=(--release)
    (cd "$root" && cargo build --quiet "${profile[@]}" -p orinari-fake-upstream --bin orinari-fake-upstream)
fi
"$root/scripts/ensure-services.sh" >/dev/null

work="$(mktemp -d)"
python=""
cleanup() {
    [[ -n "$python" ]] && kill "$python" 2>/dev/null && wait "$python" 2>/dev/null || true
    # Mounts the script left behind if it was killed (deepest first).
    { grep -o " $work/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
python3 "$here/faults.py" "$bin" "$fake" "$work" $mode &
python=$!
status=0
wait "$python" || status=$?
python=""
exit "$status"
