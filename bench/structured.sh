#!/usr/bin/env bash
# Structured output on the embedded model (BENCHMARKS.md "Structured
# output"): every schema of bench/structured/schemas.json answered with
# json_schema strict (greedy and 3 seeds), each answer validated with the
# Python reference validator, and the decode speed against the same prompts
# unconstrained. One candle thread unless CANDLE_NUM_THREADS says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/structured}
mkdir -p "$out"
python3 -c 'import jsonschema' 2>/dev/null || pip install --quiet --break-system-packages jsonschema
CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-1} cargo run --quiet --example bench_structured -- \
    --schemas bench/structured/schemas.json --out "$out/answers.jsonl" "${@:2}" | tee "$out/summary.json"
python3 bench/structured/validate.py "$out/answers.jsonl" bench/structured/schemas.json
