#!/usr/bin/env bash
# The official OpenAI clients (Python and Node), unmodified, against a real
# `orinari serve`; then tools and structured output with real clients
# (openai, LangChain, the Vercel AI SDK, the anthropic SDK on /v1/messages,
# the openai client's Responses API and the OpenAI Agents SDK on /v1/responses)
# against models served by the in-repo fake upstream
# (`orinari-fake-upstream`, which really emits tool calls) through the
# OpenAI and Anthropic adapters, and the OpenAPI document validated.
#
# Usage: tests/clients/run.sh [BINARY]   (default: target/debug/orinari)
#
# Sets up tests/clients/.venv (pip install -r requirements.txt) and
# tests/clients/node_modules (npm ci) when missing or stale, starts the
# binary on an ephemeral loopback port, runs both clients, stops the server
# with SIGTERM and prints `clients: N passed, N failed`. Exits non-zero on
# any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
if [[ ! -x "$bin" ]]; then
    echo "clients: no orinari binary at $bin (build it: cargo build -p orinari)" >&2
    exit 2
fi

# --- set-up, reused when up to date -------------------------------------
venv="$here/.venv"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt"; then
    echo "clients: installing Python requirements into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$venv/.requirements.txt"
fi
if [[ ! -d "$here/node_modules" ]] || ! cmp -s "$here/package-lock.json" "$here/node_modules/.package-lock.json.orinari"; then
    echo "clients: npm ci in $here" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2
    cp "$here/package-lock.json" "$here/node_modules/.package-lock.json.orinari"
fi

# --- the fake upstream ------------------------------------------------------
fake="$(dirname "$bin")/orinari-fake-upstream"
if [[ ! -x "$fake" ]]; then
    echo "clients: building orinari-fake-upstream" >&2
    (cd "$root" && cargo build --quiet -p orinari-fake-upstream --bin orinari-fake-upstream) >&2
fi
work="$(mktemp -d)"
fake_pid=""
"$fake" --listen 127.0.0.1:0 2>"$work/fake.log" &
fake_pid=$!
fake_url=""
for _ in $(seq 1 100); do
    fake_url="$(sed -n 's#^fake upstream on \(http://[^ ]*\)$#\1#p' "$work/fake.log" | head -n1)"
    [[ -n "$fake_url" ]] && break
    sleep 0.1
done
if [[ -z "$fake_url" ]]; then
    echo "clients: the fake upstream did not start:" >&2
    cat "$work/fake.log" >&2
    exit 1
fi
cat >"$work/orinari.toml" <<TOML
[[models]]
name = "orinari-small"
backend = "local"

[[models]]
name = "fake-gpt"
[[models.backends]]
name = "fake-openai"
provider = "openai"
base_url = "$fake_url"

[[models]]
name = "fake-claude"
[[models.backends]]
name = "fake-anthropic"
provider = "anthropic"
base_url = "$fake_url"
TOML

# --- the server -------------------------------------------------------------
# shellcheck source=../lib/serve.sh
source "$here/../lib/serve.sh"
log="$work/serve.log"
cleanup() {
    serve_stop
    if [[ -n "$fake_pid" ]]; then
        kill "$fake_pid" 2>/dev/null || true
        wait "$fake_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
if ! serve_start clients "$bin" "$work" "$log"; then
    echo "clients: 0 passed, 5 failed"
    exit 1
fi
pid="$serve_pid"
addr="$serve_url/v1"

# --- the clients ------------------------------------------------------------
passed=0
failed=0
if "$venv/bin/python" "$here/python_client.py" "$addr"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi
if node "$here/node_client.mjs" "$addr"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi
if "$venv/bin/python" "$here/tools_client.py" "$addr"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi
if node "$here/ai_sdk_client.mjs" "$addr"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi
if "$venv/bin/python" "$here/responses_client.py" "$addr"; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi

# --- stop: SIGTERM drains and exits 0 ---------------------------------------
kill -TERM "$pid"
status=0
for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    echo "clients: orinari did not exit within 30s of SIGTERM" >&2
    status=1
else
    wait "$pid" || status=$?
    serve_pid=""
    if [[ $status -ne 0 ]]; then
        echo "clients: orinari exited $status after SIGTERM:" >&2
        tail -n 20 "$log" >&2
    fi
fi

echo "clients: $passed passed, $failed failed"
[[ $failed -eq 0 && $status -eq 0 ]]
