#!/usr/bin/env bash
# How soon after SIGUSR2 the new process is ready (issue #19: within 1 s,
# embedded model load included): start ORINARI with the embedded model,
# then send SIGUSR2 N times in a row, each to the process serving at the
# time, and read the old process's log for the time between "SIGUSR2:
# starting the new binary" and "upgrade: the new process is ready". Also
# the time from exec to ready of a plain start, for comparison.
#
#   bash bench/upgrade/ready.sh [BIN] [N]     (BIN default target/release/orinari, N default 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/orinari}
N=${2:-5}
DIR=$(mktemp -d /tmp/orinari-upgrade.XXXXXX)
PORT=${PORT:-18977}
cat >"$DIR/orinari.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
[storage]
url = "sqlite://$DIR/data/orinari.db"
TOML
export ORINARI_ADMIN_TOKEN=bench ORINARI_LOG=info
ms() { date +%s%3N; }
ready() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz" 2>/dev/null | grep -q 200; }

t0=$(ms)
"$BIN" serve --config "$DIR/orinari.toml" 2>"$DIR/serve.log" &
until ready; do sleep 0.01; done
echo "plain start: ready $(( $(ms) - t0 )) ms after exec" >&2
# The serving process writes the log; every upgraded process logs to the
# same file (stderr inherited).
for i in $(seq 1 "$N"); do
  pid=$(pgrep -n -f "$BIN serve --config $DIR/orinari.toml")
  before=$(grep -c "the new process is ready" "$DIR/serve.log" || true)
  kill -USR2 "$pid"
  until [ "$(grep -c "the new process is ready" "$DIR/serve.log" || true)" -gt "$before" ]; do sleep 0.02; done
  sleep 1.5 # the old process drains and exits
done
pkill -f "$BIN serve --config $DIR/orinari.toml" || true
python3 - "$DIR/serve.log" <<'PY'
import json, sys, datetime
def t(line):
    return datetime.datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00")).timestamp()
start, out = None, []
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    msg = json.loads(line).get("fields", {}).get("message", "") or json.loads(line).get("message", "")
    if msg.startswith("SIGUSR2: starting"):
        start = t(line)
    elif msg.startswith("upgrade: the new process is ready") and start is not None:
        out.append((t(line) - start) * 1000)
        start = None
out.sort()
print("SIGUSR2 -> new process ready (ms):", ", ".join(f"{x:.0f}" for x in out))
if out:
    print(f"median {out[len(out)//2]:.0f} ms, max {out[-1]:.0f} ms over {len(out)} upgrades")
PY
echo "(log in $DIR)" >&2
