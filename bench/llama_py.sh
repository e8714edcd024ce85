#!/usr/bin/env bash
# Print the path of a Python that has llama-cpp-python (the llama.cpp
# reference for the embedded model), creating bench/.venv on first use.
#
#   LLAMA_PY=/path/to/python   reuse an existing interpreter instead
#   LLAMA_CPP_PYTHON_VERSION   pin (default 0.3.36, the version the fixture used)
#
# pip builds llama.cpp from source for this CPU (needs a C++ compiler and
# cmake; a few minutes). Build output goes to stderr; only the path is printed.
set -euo pipefail
if [[ -n "${LLAMA_PY:-}" ]]; then
    "$LLAMA_PY" -c 'import llama_cpp' >&2 || { echo "LLAMA_PY=$LLAMA_PY has no llama_cpp" >&2; exit 1; }
    echo "$LLAMA_PY"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
if ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    echo "creating $venv with llama-cpp-python (builds llama.cpp; a few minutes)" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" \
        "$venv/bin/pip" install --quiet "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION:-0.3.36}" >&2
fi
echo "$venv/bin/python"
