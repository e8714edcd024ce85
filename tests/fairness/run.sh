#!/usr/bin/env bash
# Fairness over HTTP (issue #23 item 5): two API keys against a real
# `orinari serve` whose only model is the fake upstream with a fixed 250 ms
# latency (4 answers at once, 8 waiting): one key floods at ten times its
# share, the other must still get its share, no refusal and its latency
# (fairness.py says the bounds). Prints the counts and latencies as JSON.
#
# Usage: tests/fairness/run.sh [BINARY] [SECONDS]
#   make fairness       20 s under the flood
#   make fairness-long  300 s
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
seconds="${2:-20}"
fake="$(dirname "$bin")/orinari-fake-upstream"
if [[ ! -x "$fake" ]]; then
    profile=(); [[ "$(basename "$(dirname "$bin")")" == release ]] && profile=(--release)
    (cd "$root" && cargo build --quiet "${profile[@]}" -p orinari-fake-upstream --bin orinari-fake-upstream)
fi

work="$(mktemp -d)"
python=""
cleanup() {
    [[ -n "$python" ]] && kill "$python" 2>/dev/null && wait "$python" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
python3 "$here/fairness.py" "$bin" "$fake" "$work" "$seconds" &
python=$!
status=0
wait "$python" || status=$?
python=""
exit "$status"
