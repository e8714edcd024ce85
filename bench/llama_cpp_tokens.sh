#!/usr/bin/env bash
# Regenerate crates/orinari-models/tests/data/llama_cpp_tokens.json from
# llama.cpp. Usage: bench/llama_cpp_tokens.sh [MODEL.gguf]
# (LLAMA_PY=... reuses an existing llama-cpp-python; see bench/llama_py.sh.)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$("$here/llama_py.sh")"
exec "$py" "$here/llama_cpp_tokens.py" "$@"
