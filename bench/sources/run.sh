#!/usr/bin/env bash
# Files-source benchmark: indexing throughput (documents/s) through the real
# pipeline, BM25 top-50 latency and retrieve+fuse+pack latency over ~100k
# chunks of a synthetic Zipf-distributed Markdown corpus (generated, so
# nothing is downloaded). Results go to BENCHMARKS.md by hand, with this command.
#   bench/sources/run.sh [DOCS] [QUERIES]     (defaults: 10800 documents ≈ 100k chunks, 1000 queries)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo run -q -p orinari-sources --example bench_sources -- "${1:-10800}" "${2:-1000}"
