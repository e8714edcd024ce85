#!/usr/bin/env bash
# ORINARI's memory before and while N slow streams (5 s each) are open:
# RSS, and of it the anonymous and the file-mapped part. WRAP="heaptrack -o F"
# runs the server under heaptrack to see which allocations hold the memory
# (build it with `--no-default-features`: heaptrack hooks the C library's
# malloc; bench/gateway/heap-at.py F.zst 4000 shows what was held 4 s in).
#
#   bash bench/gateway/streams-memory.sh [BINARY_DIR] [N] [MODEL]   (target/release, 1000, slow)
#
# MODEL slow: HTTP/1.1 to the mock (one upstream connection per stream);
# slow-h2: HTTP/2 (streams share connections, at most 100 each).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release}
N=${2:-1000}
MODEL=${3:-slow}
DIR=$(mktemp -d /tmp/orinari-streams.XXXXXX)
"$BIN"/orinari-fake-upstream --listen 127.0.0.1:19102 --tokens 100 --chunk-delay-ms 50 2>"$DIR/slow.log" & MOCK=$!
sed -e "s#BENCH_DIR#$DIR#" -e "s#GUARD_MODE#off#" bench/gateway/orinari.toml >"$DIR/orinari.toml"
# shellcheck disable=SC2086 # WRAP is a command line
ORINARI_LOG=warn ORINARI_ADMIN_TOKEN=bench ${WRAP:-} "$BIN"/orinari serve --config "$DIR/orinari.toml" 2>"$DIR/orinari.log" &
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:19201/livez && break; sleep 0.1; done
P=$(pgrep -n -f "orinari serve --config $DIR")
trap 'kill -INT $P 2>/dev/null; kill $MOCK 2>/dev/null || true' EXIT
mem() { awk '/VmRSS|RssAnon|RssFile/ {printf "%s %.1f MB  ", $1, $2 / 1024}' "/proc/$P/status"; echo; }
echo "before: $(mem)"
python3 bench/gateway/streams.py http://127.0.0.1:19201/v1/chat/completions "$MODEL" "$N" >"$DIR/streams.txt" & S=$!
sleep 3
echo "with $N streams open: $(mem) upstream connections: $(ss -Htn state established dst 127.0.0.1:19102 | wc -l)"
wait "$S"
cat "$DIR/streams.txt"
