#!/usr/bin/env bash
# A/B of two ORINARI release binaries on the same mock, alternating: wrk
# throughput and the server's CPU per request (/proc ticks over the run), and
# the latency each adds at RATE req/s open loop (orinari-load for L seconds,
# then the mock alone right after: p50 / p99 of the whole answer, or of the
# first token for streams).
#
#   bash bench/gateway/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]     (D=8 L=5 RATE=2000)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${3:-2}
D=${D:-8}
L=${L:-5}
RATE=${RATE:-2000}
DIR=$(mktemp -d /tmp/orinari-ab.XXXXXX)
target/release/orinari-fake-upstream --listen 127.0.0.1:19101 --tokens 16 2>/dev/null & MOCK=$!
trap 'kill $MOCK 2>/dev/null || true' EXIT
sed -e "s#BENCH_DIR#$DIR#" -e "s#GUARD_MODE#off#" bench/gateway/orinari.toml >"$DIR/orinari.toml"
URL=http://127.0.0.1:19201/v1/chat/completions
MOCK_URL=http://127.0.0.1:19101/v1/chat/completions
# Open loop at RATE for $2 seconds against $1: "p50 p99" in ms.
open_loop() {
  local mark=()
  [ "$stream" = true ] && mark=(--mark tok0)
  target/release/orinari-load "$1" "$DIR/body.json" --rate "$RATE" --seconds "$2" --connections 32 "${mark[@]}" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); t=r["mark_ms"] or r["total_ms"]; print(t["p50"], t["p99"])'
}
for stream in false true; do
  printf '{"model":"bench","stream":%s,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}' "$stream" >"$DIR/body.json"
  for _ in $(seq "$ROUNDS"); do
    for bin in "$1" "$2"; do
      ORINARI_LOG=warn ORINARI_ADMIN_TOKEN=bench "$bin" serve --config "$DIR/orinari.toml" 2>>"$DIR/orinari.log" & O=$!
      for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:19201/livez && break; sleep 0.1; done
      BODY_FILE="$DIR/body.json" wrk -t1 -c8 -d1s -s bench/gateway/post.lua "$URL" >/dev/null
      t0=$(awk '{print $14 + $15}' "/proc/$O/stat")
      BODY_FILE="$DIR/body.json" wrk -t2 -c32 -d"${D}s" -s bench/gateway/post.lua "$URL" >"$DIR/wrk.txt"
      t1=$(awk '{print $14 + $15}' "/proc/$O/stat")
      rps=$(awk '/Requests\/sec/ {print $2}' "$DIR/wrk.txt")
      n=$(awk '/requests in/ {print $1}' "$DIR/wrk.txt")
      hz=$(getconf CLK_TCK)
      read -r g50 g99 < <(open_loop "$URL" "$L")
      read -r m50 m99 < <(open_loop "$MOCK_URL" 3)
      added=$(awk -v a="$g50" -v b="$m50" -v c="$g99" -v d="$m99" 'BEGIN {printf "+%.3f / +%.3f ms", a - b, c - d}')
      echo "stream=$stream $bin: $rps req/s, CPU $(( (t1 - t0) * 1000000 / hz / n )) us per request, adds $added (p50 / p99) at $RATE req/s"
      kill "$O"; wait "$O" 2>/dev/null || true
    done
  done
done
