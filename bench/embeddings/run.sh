#!/usr/bin/env bash
# orinari-embed against an independent numpy implementation of
# all-MiniLM-L6-v2 (bench/embeddings/reference.py: float64, one text at a
# time) on bench/embeddings/texts.json — largest cosine distance — then its
# speed: texts/s at batch 32 and the latency of one short text.
#   bash bench/embeddings/run.sh
# The example runs in the dev profile, whose dependencies (candle, gemm,
# tokenizers: all the arithmetic) are built with opt-level 3.
set -euo pipefail
cd "$(dirname "$0")/../.."
model="$(scripts/fetch-embed-model.sh)"
venv=bench/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import numpy, tokenizers' 2>/dev/null \
  || "$venv/bin/pip" install -q numpy tokenizers
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo run -q -p orinari-embed --example bench_embed -- bench/embeddings/texts.json "$out/ours.json"
"$venv/bin/python" bench/embeddings/reference.py "$model" bench/embeddings/texts.json "$out/ref.json"
"$venv/bin/python" - "$out/ours.json" "$out/ref.json" <<'PY'
import json, sys
import numpy as np
ours = np.array(json.load(open(sys.argv[1])), dtype=np.float64)
ref = np.array(json.load(open(sys.argv[2])), dtype=np.float64)
cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
d = 1 - cos
print(f"accuracy: {len(d)} texts, cosine distance to the numpy reference: max {d.max():.2e}, mean {d.mean():.2e}")
assert d.max() < 1e-4, "over 1e-4"
PY
