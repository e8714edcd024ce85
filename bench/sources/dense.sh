#!/usr/bin/env bash
# Dense retrieval benchmark (issue #20): query embedding latency, the dense
# indexer's embedding throughput (chunks/s), the exact dense top-50 scan
# over 100k vectors, and hybrid retrieval through Sources::retrieve over the
# ~100k-chunk corpus (vectors seeded into the cache). Needs the embedding
# model (make model). Results go to BENCHMARKS.md by hand, with this command.
#   bench/sources/dense.sh [DOCS] [QUERIES] [EMBED_DOCS]   (defaults: 10800 ≈ 100k chunks, 1000, 100)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CANDLE_NUM_THREADS="${CANDLE_NUM_THREADS:-1}"
cargo run -q -p orinari-sources --example bench_dense -- "${1:-10800}" "${2:-1000}" "${3:-100}"
