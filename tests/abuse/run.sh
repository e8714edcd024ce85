#!/usr/bin/env bash
# HTTP/2 and HTTP/1.1 abuse against a real `orinari serve` (issue #23):
# rapid reset, CONTINUATION flood, HPACK bomb, SETTINGS and PING floods,
# zero-window readers, request smuggling, 1,000 headers, and an h2load
# flood, one after the other, while a normal client on its own loopback
# address keeps asking GET /v1/models (tests/abuse/attacks.py says what
# each attack must cause). Prints one JSON line per attack and a summary;
# exits non-zero on any failed condition, or if the server does not drain
# and exit 0 on SIGTERM afterwards.
#
# Usage: tests/abuse/run.sh [BINARY] [--full]   (default: target/debug/orinari;
# --full: the long version, ten times the frames and streams)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
mode="--quick"
[[ "${2:-}" == "--full" ]] && mode=""
command -v h2load >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }

# shellcheck source=../lib/serve.sh
source "$root/tests/lib/serve.sh"
work="$(mktemp -d)"
cleanup() {
    serve_stop
    rm -rf "$work"
}
trap cleanup EXIT
# The normal client asks about 100 times a second for minutes: the request
# rate limit is out of the way (limits have tests of their own). Every
# attacker comes from its own loopback address, as a botnet would.
serve_start abuse "$bin" "$work" "$work/server.log" \
    ORINARI_LIMITS_REQUESTS_PER_MINUTE=1000000
status=0
python3 "$here/attacks.py" "$serve_url" "$serve_pid" $mode || status=$?

kill -TERM "$serve_pid"
for _ in $(seq 1 300); do
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$serve_pid" 2>/dev/null; then
    echo "abuse: orinari did not exit within 30 s of SIGTERM" >&2
    exit 1
fi
if ! wait "$serve_pid"; then
    echo "abuse: orinari exited non-zero after the attacks:" >&2
    tail -n 20 "$work/server.log" >&2
    exit 1
fi
if grep -q '"level":"ERROR"\|panicked' "$work/server.log"; then
    echo "abuse: the server logged errors or panics during the attacks:" >&2
    grep '"level":"ERROR"\|panicked' "$work/server.log" | head -n 20 >&2
    exit 1
fi
exit "$status"
