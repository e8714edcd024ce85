#!/usr/bin/env bash
# Print the path of a Python that has llama-cpp-python (the llama.cpp
# reference for the embedded model), creating bench/.venv on first use.
#
#   LLAMA_PY=/path/to/python   reuse an existing interpreter instead
#   LLAMA_CPP_PYTHON_VERSION   pin (default 0.3.36, the version the fixture used)
#   CMAKE_ARGS                 override the build flags chosen below
#
# pip builds llama.cpp from source (needs a C++ compiler and cmake; a few
# minutes). Build output goes to stderr; only the path is printed.
#
# The build is not `GGML_NATIVE=ON` (llama-cpp-python's default): some of
# these VMs advertise AMX but the hypervisor traps `tileloadd`, so a native
# build dies with SIGILL. The SIMD levels are instead taken one by one from
# /proc/cpuinfo (AVX2, FMA, F16C, AVX-512 and its VNNI/VBMI/BF16 extensions,
# AVX-VNNI) and AMX is never enabled.
set -euo pipefail
if [[ -n "${LLAMA_PY:-}" ]]; then
    "$LLAMA_PY" -c 'import llama_cpp' >&2 || { echo "LLAMA_PY=$LLAMA_PY has no llama_cpp" >&2; exit 1; }
    echo "$LLAMA_PY"
    exit 0
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"

# cmake flags for the SIMD extensions this CPU reports, AMX excluded.
simd_flags() {
    local flags f out="-DGGML_NATIVE=OFF"
    flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    has() { [[ "$flags" == *" $1 "* ]]; }
    for f in avx:AVX avx2:AVX2 fma:FMA f16c:F16C avx512f:AVX512 avx512vbmi:AVX512_VBMI \
        avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
        if has "${f%%:*}"; then out="$out -DGGML_${f##*:}=ON"; else out="$out -DGGML_${f##*:}=OFF"; fi
    done
    echo "$out -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
}

if ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    args="${CMAKE_ARGS:-$(simd_flags)}"
    echo "creating $venv with llama-cpp-python (builds llama.cpp; a few minutes): CMAKE_ARGS=$args" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    CMAKE_ARGS="$args" "$venv/bin/pip" install --quiet --no-binary llama-cpp-python \
        "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION:-0.3.36}" >&2
fi
echo "$venv/bin/python"
