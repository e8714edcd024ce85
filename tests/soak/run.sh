#!/usr/bin/env bash
# Soak (issue #23 item 6): mixed traffic against a real `orinari serve`
# (embedded model and an upstream model served by the in-repo fake
# upstream) with reloads every 20 s, the upstream killed and restarted
# every minute and one zero-downtime upgrade, while memory, descriptors,
# threads and latency are sampled (tests/soak/soak.py says what fails).
# Writes soak.csv and soak.png to OUT (default: target/soak).
#
# Usage: tests/soak/run.sh [BINARY] [SECONDS] [OUT]
#   make soak       300 s (in make test; SOAK_SECONDS changes it)
#   make soak-long  3,600 s, results in bench/results/soak/ (BENCHMARKS.md)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
seconds="${2:-300}"
out="${3:-$root/target/soak}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
fake="$(dirname "$bin")/orinari-fake-upstream"
if [[ ! -x "$fake" ]]; then
    profile=(); [[ "$(basename "$(dirname "$bin")")" == release ]] && profile=(--release)
    (cd "$root" && cargo build --quiet "${profile[@]}" -p orinari-fake-upstream --bin orinari-fake-upstream)
fi
venv="$here/.venv"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt"; then
    echo "soak: installing matplotlib into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$venv/.requirements.txt"
fi

# shellcheck source=../lib/serve.sh
source "$root/tests/lib/serve.sh"
work="$(mktemp -d)"
cleanup() {
    serve_stop
    if [[ -f "$out/pid" ]]; then kill -KILL "$(cat "$out/pid")" 2>/dev/null || true; fi
    if [[ -f "$out/fake.pid" ]]; then kill -KILL "$(cat "$out/fake.pid")" 2>/dev/null || true; fi
    [[ -n "$fake_pid" ]] && kill -KILL "$fake_pid" 2>/dev/null || true
    rm -rf "$work"
}
fake_pid=""
fake_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
trap cleanup EXIT
mkdir -p "$out"
rm -f "$out/pid" "$out/fake.pid"
# The upstream first, so the pool's first health check finds it.
"$fake" --listen "127.0.0.1:$fake_port" >/dev/null 2>&1 &
fake_pid=$!
disown "$fake_pid"
for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$fake_port") 2>/dev/null && break
    sleep 0.05
done
cat >"$work/orinari.toml" <<TOML
[[models]]
name = "orinari-small"
backend = "local"

[[models]]
name = "fake-gpt"
health_interval_ms = 1000
open_ms = 1000
[[models.backends]]
name = "fake-openai"
provider = "openai"
base_url = "http://127.0.0.1:$fake_port/v1"
TOML
# Rate limits are out of the way: the soak looks for leaks, not refusals.
serve_start soak "$bin" "$work" "$work/server.log" \
    ORINARI_LIMITS_REQUESTS_PER_MINUTE=1000000 \
    ORINARI_LIMITS_TOKENS_PER_MINUTE=100000000
status=0
"$venv/bin/python" "$here/soak.py" "$serve_url" "$serve_pid" \
    "$fake --listen 127.0.0.1:$fake_port" "$fake_port" "$fake_pid" "$work/server.log" "$seconds" "$out" || status=$?

pid="$(cat "$out/pid" 2>/dev/null || echo "$serve_pid")"
kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 1 300); do
    [[ -d "/proc/$pid" ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null || break
    sleep 0.1
done
if [[ -d "/proc/$pid" ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
    echo "soak: orinari did not exit within 30 s of SIGTERM" >&2
    status=1
fi
# tower-http logs each 5xx answer as an error: those the soak expects (the
# upstream model while its backend is down) are judged above, by status.
errors="$(grep '"level":"ERROR"\|panicked' "$work/server.log" | grep -v '"target":"tower_http::trace::on_failure"' || true)"
if [[ -n "$errors" ]]; then
    echo "soak: the server logged errors or panics:" >&2
    echo "$errors" | head -n 20 >&2
    status=1
fi
exit "$status"
