#!/usr/bin/env bash
# Debian's slowhttptest against a real `orinari serve`: hundreds of slowloris
# connections (heads trickled forever), then slow-POST ones (bodies trickled
# forever), each from 127.0.0.1 while a normal client on another loopback
# address (127.0.0.2) must get `GET /v1/models` answered within 1 s every
# second of the attack.
#
# Usage: tests/slowloris/run.sh [BINARY]   (default: target/debug/orinari)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
command -v slowhttptest >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slowhttptest >/dev/null; }

# shellcheck source=../lib/serve.sh
source "$root/tests/lib/serve.sh"
work="$(mktemp -d)"
attack=""
cleanup() {
    [[ -n "$attack" ]] && kill "$attack" 2>/dev/null || true
    serve_stop
    rm -rf "$work"
}
trap cleanup EXIT
# 300 attack connections fit under a per-IP cap of 400; the head and body
# timeouts (5 s here) cut each one off and slowhttptest keeps reopening.
serve_start slowloris "$bin" "$work" "$work/server.log" \
    ORINARI_SERVER_MAX_CONNECTIONS_PER_IP=400 \
    ORINARI_SERVER_HEADER_READ_TIMEOUT_MS=5000 \
    ORINARI_SERVER_BODY_READ_TIMEOUT_MS=5000
host="${serve_url#http://}"

probe() {
    local mode="$1" worst=0 failed=0
    for _ in $(seq 1 12); do
        sleep 1
        local t
        if ! t="$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --interface 127.0.0.2 --max-time 5 "$serve_url/v1/models")"; then
            failed=$((failed + 1)); continue
        fi
        local code="${t%% *}" secs="${t##* }"
        [[ "$code" == 200 ]] || failed=$((failed + 1))
        worst="$(python3 -c "print(max($worst, $secs))")"
    done
    echo "slowloris: $mode: normal client worst $worst s, $failed failed" >&2
    python3 -c "import sys; sys.exit(0 if $worst < 1.0 and $failed == 0 else 1)"
}

ok=0
# Slowloris: 300 connections, each sending a header line every 10 s.
slowhttptest -H -c 300 -r 300 -i 10 -s 8192 -l 20 -t GET -u "$serve_url/" -p 3 -g -o "$work/h" >"$work/h.out" 2>&1 &
attack=$!
sleep 3
probe "slow heads (-H, 300 connections)" || ok=1
grep -E "connected:" "$work/h.out" | tail -n1 | sed 's/\x1b\[[0-9;]*m//g; s/^/slowloris: attacker /; s/  */ /g' >&2 || true
kill "$attack" 2>/dev/null || true; wait "$attack" 2>/dev/null || true; attack=""
# Slow POST: 300 connections, each sending a body byte every 10 s.
slowhttptest -B -c 300 -r 300 -i 10 -s 8192 -l 20 -t POST -u "$serve_url/v1/chat/completions" -p 3 -g -o "$work/b" >"$work/b.out" 2>&1 &
attack=$!
sleep 3
probe "slow bodies (-B, 300 connections)" || ok=1
grep -E "connected:" "$work/b.out" | tail -n1 | sed 's/\x1b\[[0-9;]*m//g; s/^/slowloris: attacker /; s/  */ /g' >&2 || true
kill "$attack" 2>/dev/null || true; wait "$attack" 2>/dev/null || true; attack=""
kill -0 "$serve_pid" || { echo "slowloris: the server died" >&2; exit 1; }
if [[ $ok -eq 0 ]]; then echo "slowloris: passed" >&2; else echo "slowloris: FAILED" >&2; tail -20 "$work/server.log" >&2; fi
exit $ok
