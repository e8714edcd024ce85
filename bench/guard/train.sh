#!/usr/bin/env bash
# Retrain the prompt-injection classifier from the train splits (threshold
# from the validation splits) and overwrite the committed weights.
# Deterministic: the same data and code give the same bytes.
#   bash bench/guard/train.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
data="$(scripts/fetch-guard-data.sh)"
cargo run --release -q -p orinari-guard --example guard-train -- \
  "$data" crates/orinari-guard/model/prompt-injection.bin
sha256sum crates/orinari-guard/model/prompt-injection.bin
