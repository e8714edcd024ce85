# Start `orinari serve` for a test script, on a free loopback port.
#
#   source tests/lib/serve.sh
#   serve_start LABEL BIN CWD LOG [VAR=VALUE ...]
#
# Runs BIN from CWD (so no stray ./orinari.toml is picked up) with
# ORINARI_SERVER_LISTEN=127.0.0.1:0 and the extra variables, stderr to LOG,
# and waits up to 60 s for its "serving on" line. Sets `serve_pid` and
# `serve_url` (http://HOST:PORT, without /v1). On failure prints the log and
# returns 1. `serve_stop` kills it (for an EXIT trap).

serve_pid=""
serve_url=""

serve_start() {
    local label="$1" bin="$2" cwd="$3" log="$4"
    shift 4
    : >"$log"
    (cd "$cwd" && exec env ORINARI_SERVER_LISTEN=127.0.0.1:0 "$@" "$bin" serve) 2>"$log" &
    serve_pid=$!
    local _
    for _ in $(seq 1 600); do
        serve_url="$(sed -n 's#^orinari is serving on \(http://[^ ]*\)/v1.*#\1#p' "$log" | head -n1)"
        [[ -n "$serve_url" ]] && break
        if ! kill -0 "$serve_pid" 2>/dev/null; then
            echo "$label: orinari serve exited before listening:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.1
    done
    if [[ -z "$serve_url" ]]; then
        echo "$label: orinari serve did not announce its address in 60s:" >&2
        cat "$log" >&2
        return 1
    fi
    echo "$label: server at $serve_url (pid $serve_pid)" >&2
}

serve_stop() {
    if [[ -n "$serve_pid" ]] && kill -0 "$serve_pid" 2>/dev/null; then
        kill -KILL "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
}
