#!/usr/bin/env bash
# Run bench/guard/finetune.py in its own virtual environment
# (~/.cache/orinari/finetune-venv: JAX on the CPU, pinned), installing it
# on first use. Arguments and FINETUNE_* variables go to finetune.py.
#   bash bench/guard/finetune.sh DATA MODEL [--corpus FILE]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="$HOME/.cache/orinari/finetune-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  'jax==0.10.2' 'jaxlib==0.10.2' 'optax==0.2.8' 'tokenizers==0.23.3' 'numpy==2.4.6' \
  'safetensors==0.8.0'
exec "$venv/bin/python" bench/guard/finetune.py "$@"
