#!/usr/bin/env bash
# The chat page end to end in a real browser: Debian's headless Chromium
# driven by playwright-core, with axe-core and Lighthouse (run.mjs).
#
# Usage: tests/browser/run.sh [BINARY]   (default: target/debug/orinari)
#
# Installs tests/browser/node_modules (npm ci) when missing or stale, starts
# the binary on an ephemeral loopback port from a scratch directory, runs the
# browser tests, then checks that the conversation text the tests sent (a
# canary) is nowhere in the server's log or working directory. Screenshots and
# Lighthouse reports go to tests/browser/artifacts/. Prints
# `browser: N passed, N failed` last; exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
if [[ ! -x "$bin" ]]; then
    echo "browser: no orinari binary at $bin (build it: cargo build -p orinari)" >&2
    exit 2
fi
if [[ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]]; then
    echo "browser: no Chromium (apt-get install -y chromium)" >&2
    exit 2
fi

# --- set-up, reused when up to date -------------------------------------
if [[ ! -d "$here/node_modules" ]] || ! cmp -s "$here/package-lock.json" "$here/node_modules/.package-lock.json.orinari"; then
    echo "browser: npm ci in $here" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2
    cp "$here/package-lock.json" "$here/node_modules/.package-lock.json.orinari"
fi
mkdir -p "$here/artifacts"

# --- the server -------------------------------------------------------------
# shellcheck source=../lib/serve.sh
source "$here/../lib/serve.sh"
work="$(mktemp -d)"
log="$work/serve.log"
keyed_pid=""
cleanup() {
    [[ -n "$keyed_pid" ]] && kill -KILL "$keyed_pid" 2>/dev/null
    serve_stop
    rm -rf "$work"
}
trap cleanup EXIT
# The server runs from its own scratch directory (a place to look for files
# it might write) and logs outside it.
mkdir "$work/cwd"
# The status page tests open incidents through the admin API; an SMTP relay
# setting makes the page show its subscription form (nothing is sent).
admin_token="browser-$RANDOM$RANDOM$RANDOM"
if ! serve_start browser "$bin" "$work/cwd" "$log" ORINARI_LOG=debug ORINARI_ADMIN_TOKEN="$admin_token" \
    ORINARI_STATUS_SMTP=127.0.0.1:9 ORINARI_STATUS_SMTP_FROM=status@example.org; then
    echo "browser: 0 passed, 1 failed"
    exit 1
fi
pid="$serve_pid"
addr="$serve_url"

# A second server that requires API keys, with one key made by the CLI, for
# the page's API key field.
mkdir "$work/keyed"
keyed_env=(ORINARI_AUTH_REQUIRED=true ORINARI_ADMIN_TOKEN="$admin_token")
api_key="$(cd "$work/keyed" && env "${keyed_env[@]}" "$bin" keys create --name browser --rpm 1000 2>>"$work/keyed.log" | grep -o 'ork_[A-Za-z0-9_-]*' | head -n1)"
first_pid="$serve_pid"
if [[ -z "$api_key" ]] || ! serve_start browser-keyed "$bin" "$work/keyed" "$work/keyed.log" ORINARI_LOG=debug "${keyed_env[@]}"; then
    echo "browser: could not start the server that requires keys" >&2
    cat "$work/keyed.log" >&2
    echo "browser: 0 passed, 1 failed"
    exit 1
fi
keyed_pid="$serve_pid"
keyed_addr="$serve_url"
serve_pid="$first_pid"

# --- the tests --------------------------------------------------------------
canary="orinari-canary-$RANDOM$RANDOM"
out="$work/node.out"
set +e
CANARY="$canary" ADMIN_TOKEN="$admin_token" KEYED_BASE="$keyed_addr" API_KEY="$api_key" \
    node "$here/run.mjs" "$addr" | tee "$out"
set -e
passed="$(sed -n 's/^node: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$out")"
failed="$(sed -n 's/^node: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$out")"
if [[ -z "$passed" ]]; then
    passed=0
    failed=$((${failed:-0} + 1))
    echo "FAIL - the browser tests did not finish" >&2
fi

# --- nothing retained: the canary is in no log line and no file --------------
kill -TERM "$pid"
for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
wait "$pid" 2>/dev/null || true
serve_pid=""
kill -TERM "$keyed_pid" 2>/dev/null || true
wait "$keyed_pid" 2>/dev/null || true
keyed_pid=""
if grep -rqF "$canary" "$log" "$work/cwd" "$work/keyed.log" "$work/keyed"; then
    failed=$((failed + 1))
    echo "FAIL - conversation text (the canary) was written to the log or to disk" >&2
else
    passed=$((passed + 1))
    echo "ok - conversation text is in no log line (debug level) and no file"
fi

echo "browser: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
