#!/usr/bin/env bash
# The embedded model side by side with llama.cpp on the same GGUF and cores.
#
#   bench/model.sh                      # 3 rounds, alternating engines
#   ROUNDS=5 THREADS=2 GEN=128 bench/model.sh
#   LLAMA_PY=/path/to/python bench/model.sh   # reuse a llama-cpp-python install
#
# Each round runs, in turn: ours with requantize=true, ours with
# requantize=false, llama.cpp (n_threads=$THREADS). Every run is a fresh
# process (load, one warm-up request, then REPS measured requests). The table
# shows the median over rounds and the ratio ours/llama.cpp (for tok/s higher
# is better; for ms and MiB lower is better). Raw JSON lines are kept in
# bench/results/. Run on a quiet machine: both engines spin-wait their worker
# threads, so any other load on 2 cores distorts the figures badly.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
ROUNDS="${ROUNDS:-3}"
REPS="${REPS:-1}"
THREADS="${THREADS:-2}"
GEN="${GEN:-128}"

py="$("$here/llama_py.sh")"
(cd "$root" && cargo build --release -q -p orinari-models --example bench_local)
bin="$root/target/release/examples/bench_local"
mkdir -p "$here/results"
out="$here/results/model-$(date +%Y%m%d-%H%M%S).jsonl"

load="$(cut -d' ' -f1 /proc/loadavg)"
echo "cores: $(nproc), load average before: $load; results: $out" >&2
for round in $(seq 1 "$ROUNDS"); do
    for rq in true false; do
        echo "round $round/$ROUNDS: orinari requantize=$rq" >&2
        RAYON_NUM_THREADS="$THREADS" "$bin" --requantize "$rq" --reps "$REPS" --gen "$GEN" | tee -a "$out" >&2
    done
    echo "round $round/$ROUNDS: llama.cpp" >&2
    "$py" "$here/llama_cpp_bench.py" --threads "$THREADS" --reps "$REPS" --gen "$GEN" | tee -a "$out" >&2
done

"$py" - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def key(r):
    return "llama.cpp" if r["engine"] == "llama.cpp" else f"orinari rq={str(r['requantize']).lower()}"
groups = {}
for r in runs:
    groups.setdefault(key(r), []).append(r)
metrics = [
    ("pp200_tok_s", "prompt 200 tok/s", "higher"),
    ("pp512_tok_s", "prompt 512 tok/s", "higher"),
    ("gen_tok_s", "generate tok/s", "higher"),
    ("ttft200_ms", "TTFT 200-token prompt ms", "lower"),
    ("load_s", "load s", "lower"),
    ("rss_after_load_mib", "RSS after load MiB", "lower"),
    ("peak_rss_mib", "peak RSS (VmHWM) MiB", "lower"),
]
med = {g: {m: statistics.median(r[m] for r in rs) for m, _, _ in metrics} for g, rs in groups.items()}
ref = med.get("llama.cpp")
ours = [g for g in ("orinari rq=true", "orinari rq=false") if g in med]
head = ["metric", "better"] + ours + ["llama.cpp"] + [f"ratio {g.split()[1]}" for g in ours]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for m, label, better in metrics:
    row = [label, better] + [f"{med[g][m]:g}" for g in ours] + [f"{ref[m]:g}" if ref else "-"]
    row += [f"{med[g][m] / ref[m]:.2f}x" if ref and ref[m] else "-" for g in ours]
    print("| " + " | ".join(row) + " |")
n = {g: len(rs) for g, rs in groups.items()}
gen = {g: min(r["gen_tokens"] for r in rs) for g, rs in groups.items()}
print(f"\nmedian of {n} runs; generated tokens (min): {gen}; "
      f"llama.cpp RSS includes the Python interpreter "
      f"({statistics.median(r['rss_before_load_mib'] for r in groups.get('llama.cpp', [{'rss_before_load_mib': 0}])):g} MiB before load).")
PY
