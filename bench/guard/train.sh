#!/usr/bin/env bash
# Retrain the guard — the n-gram classifier and the head over
# all-MiniLM-L6-v2 sentence vectors on the train splits; the stacker, the
# per-channel thresholds and the band where the encoder runs (the cascade) on
# the validation splits — and overwrite the committed weights
# (crates/orinari-guard/model/). Deterministic: the same data, model and code
# give the same bytes. The first run embeds every training text the head
# needs (minutes on 2 cores); the vectors are cached outside git
# (~/.cache/orinari/guard-data-vectors-int8.bin), so later runs take
# seconds. ensemble.bin names the encoder it was fitted on (its id).
#   bash bench/guard/train.sh        (GUARD_PROFILE=dev: see eval.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
data="$(scripts/fetch-guard-data.sh)"
export ORINARI_EMBED_MODEL_PATH="${ORINARI_EMBED_MODEL_PATH:-$(scripts/fetch-embed-model.sh)}"
if [ "${GUARD_PROFILE:-release}" = dev ]; then
  cargo --config 'profile.dev.package.orinari-guard.opt-level=3' run -q \
    --example guard-train -- "$data" crates/orinari-guard/model
else
  cargo run --release -q -p orinari-guard --example guard-train -- \
    "$data" crates/orinari-guard/model
fi
sha256sum crates/orinari-guard/model/prompt-injection.bin crates/orinari-guard/model/ensemble.bin
