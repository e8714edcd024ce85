#!/usr/bin/env bash
# What an exact response-cache hit costs and saves, side by side in one run
# (BENCHMARKS.md "Response cache: a hit against a miss"): one ORINARI serving
# the embedded model and a pool over the fake upstream, each as two models —
# with `cache` and without — and bench/cache/measure.py asking them one
# request at a time: paired misses (cache on, cache off) and then hits.
#
#   bash bench/cache/run.sh      (UPSTREAM_PAIRS=2000 MODEL_PAIRS=20 MAX_TOKENS=32 TOKENS=16 GUARD=off BIN=target/release)
#
# Builds nothing: BIN names the folder holding `orinari` and
# `orinari-fake-upstream` (cargo build --release -p orinari -p
# orinari-fake-upstream; BIN=target/debug measures a debug build). The
# embedded model must be fetched (make model).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release}
UPSTREAM_PAIRS=${UPSTREAM_PAIRS:-2000}
MODEL_PAIRS=${MODEL_PAIRS:-20}
MAX_TOKENS=${MAX_TOKENS:-32}
TOKENS=${TOKENS:-16}
GUARD=${GUARD:-off}
for b in orinari orinari-fake-upstream; do
  [ -x "$BIN/$b" ] || { echo "no $BIN/$b: cargo build --release -p orinari -p orinari-fake-upstream, or set BIN" >&2; exit 1; }
done
DIR=$(mktemp -d /tmp/orinari-cache-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
wait_url() { for _ in $(seq 1 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; cat "$DIR"/*.log >&2; exit 1; }

"$BIN"/orinari-fake-upstream --listen 127.0.0.1:19701 --tokens "$TOKENS" 2>"$DIR/fake.log" & pids+=($!)
sed -e "s#BENCH_DIR#$DIR#" -e "s#GUARD_MODE#$GUARD#" bench/cache/orinari.toml >"$DIR/orinari.toml"
ORINARI_LOG=warn ORINARI_ADMIN_TOKEN=bench "$BIN"/orinari serve --config "$DIR/orinari.toml" 2>"$DIR/orinari.log" & pids+=($!)
wait_url http://127.0.0.1:19701/v1/models
wait_url http://127.0.0.1:19702/readyz

echo "binary: $BIN/orinari; guard: $GUARD; upstream answers: $TOKENS tokens; embedded answers: at most $MAX_TOKENS tokens; $(nproc) cores"
python3 bench/cache/measure.py --port 19702 --upstream-pairs "$UPSTREAM_PAIRS" \
  --model-pairs "$MODEL_PAIRS" --max-tokens "$MAX_TOKENS"
