#!/usr/bin/env bash
# Status page weight and first-byte time on a realistic page: 6 components
# (two in a group, the built-in storage check), an active incident with three
# updates, an upcoming maintenance and 10 past incidents.
#
# Usage: bench/status.sh [BINARY]   (default: target/release/orinari)
# Prints the bytes over the wire for /status and its assets (br, gzip,
# identity) and bench/ttfb.mjs's keep-alive first-byte percentiles.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="${1:-$root/target/release/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
# shellcheck source=../tests/lib/serve.sh
source "$root/tests/lib/serve.sh"
work="$(mktemp -d)"
trap 'serve_stop; rm -rf "$work"' EXIT
cat > "$work/orinari.toml" <<'TOML'
[status]
page_name = "ORINARI"
time_zone = "Europe/Berlin"
[[status.components]]
name = "Chat API"
group = "API"
[[status.components]]
name = "Models API"
group = "API"
[[status.components]]
name = "Chat page"
[[status.components]]
name = "Data sources"
[[status.components]]
name = "Backups"
TOML
token="bench-$RANDOM$RANDOM"
serve_start bench "$bin" "$work" "$work/serve.log" ORINARI_ADMIN_TOKEN="$token" ORINARI_LOG=warn
base="$serve_url"
post() { curl -sf -X POST "$base$1" -H "authorization: Bearer $token" -H 'content-type: application/json' -d "$2"; }
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
for i in $(seq 1 10); do
    id="$(post /admin/v1/incidents "{\"name\": \"Past incident $i: slow answers from one backend\", \"message\": \"We are investigating slower answers.\", \"components\": {\"chat-api\": \"degraded_performance\"}}" | id_of)"
    post "/admin/v1/incidents/$id/updates" '{"status": "identified", "message": "One backend was overloaded; traffic moved away from it."}' >/dev/null
    post "/admin/v1/incidents/$id/updates" '{"status": "resolved", "message": "Answers are back to normal speed."}' >/dev/null
done
id="$(post /admin/v1/incidents '{"name": "Elevated errors on the models API", "message": "We are investigating.", "components": {"models-api": "partial_outage"}}' | id_of)"
post "/admin/v1/incidents/$id/updates" '{"status": "identified", "message": "A bad deploy; rolling back."}' >/dev/null
post "/admin/v1/incidents/$id/updates" '{"status": "monitoring", "message": "Rolled back; watching error rates."}' >/dev/null
from="$(date -u -d '+2 days' +%Y-%m-%dT%H:%M:%SZ)"; until="$(date -u -d '+2 days 2 hours' +%Y-%m-%dT%H:%M:%SZ)"
post /admin/v1/maintenances "{\"name\": \"Database upgrade\", \"scheduled_for\": \"$from\", \"scheduled_until\": \"$until\", \"message\": \"PostgreSQL minor upgrade; a few seconds of read-only mode.\", \"components\": [\"chat-api\", \"backups\"]}" >/dev/null

html="$(curl -sf "$base/status")"
assets="$(grep -o '/assets/[^"]*' <<<"$html" | sort -u)"
for enc in br gzip identity; do
    total=0
    line=""
    for path in /status $assets; do
        n="$(curl -sf -H "accept-encoding: $enc" -o /dev/null -w '%{size_download}' "$base$path")"
        total=$((total + n))
        line="$line ${path##*/}=$n"
    done
    echo "weight ($enc): $total bytes:$line"
done
node "$here/ttfb.mjs" "$base/status" identity 3000
node "$here/ttfb.mjs" "$base/status" br 3000
node "$here/ttfb.mjs" "$base/api/v2/summary.json" identity 3000
