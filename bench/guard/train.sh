#!/usr/bin/env bash
# Retrain the guard — the n-gram classifier and the head over
# all-MiniLM-L6-v2 sentence vectors on the train splits; the stacker and the
# per-channel thresholds on the validation splits — and overwrite the
# committed weights (crates/orinari-guard/model/). Deterministic: the same
# data, model and code give the same bytes. The first run embeds every
# training text (minutes on 2 cores); the vectors are cached outside git
# (~/.cache/orinari/guard-data-vectors.bin), so later runs take seconds.
#   bash bench/guard/train.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
data="$(scripts/fetch-guard-data.sh)"
export ORINARI_EMBED_MODEL_PATH="${ORINARI_EMBED_MODEL_PATH:-$(scripts/fetch-embed-model.sh)}"
cargo run --release -q -p orinari-guard --example guard-train -- \
  "$data" crates/orinari-guard/model
sha256sum crates/orinari-guard/model/prompt-injection.bin crates/orinari-guard/model/ensemble.bin
