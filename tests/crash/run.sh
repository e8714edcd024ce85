#!/usr/bin/env bash
# Crash at random points (issue #23 item 4): SIGKILL `orinari serve` at
# random moments while three clients write (API keys, incidents and their
# updates, webhook subscriptions), with backups shipping; after each kill
# the SQLite file passes `PRAGMA integrity_check` and holds every
# acknowledged write, PostgreSQL holds every acknowledged row, and at the
# end a backup restore holds them all. crash.py says what each check
# asserts; CRASH_SEED=N repeats a run.
#
# Usage: tests/crash/run.sh [BINARY] [ITERATIONS]
#   make crash       24 kills (16 SQLite, 8 PostgreSQL)
#   make crash-long  300 kills
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
iterations="${2:-24}"
"$root/scripts/ensure-services.sh" >/dev/null

work="$(mktemp -d)"
python=""
cleanup() {
    [[ -n "$python" ]] && kill "$python" 2>/dev/null && wait "$python" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
python3 "$here/crash.py" "$bin" "$work" "$iterations" &
python=$!
status=0
wait "$python" || status=$?
python=""
exit "$status"
