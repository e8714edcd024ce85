#!/usr/bin/env bash
# The embedded model side by side with llama.cpp on the same GGUF and cores.
#
#   bench/model.sh                      # 3 rounds, alternating engines
#   ROUNDS=5 THREADS=2 GEN=128 bench/model.sh
#   LLAMA_PY=/path/to/python bench/model.sh   # reuse a llama-cpp-python install
#   PROFILE=dev CARGO=/path/to/cargo bench/model.sh   # reuse the dev build
#   BENCH_BIN=target/debug/examples/bench_local bench/model.sh   # no build at all
#
# Each round runs, in turn: ours in each weight format of WEIGHTS (default
# "packed q8_0 q4_1": the GGUF's own blocks through orinari-kernels (its
# AVX-512 VNNI kernel, else its AVX2 kernel: the default where the CPU has
# one; elsewhere "packed" runs as q8_0; "packed-avx2" or "packed-scalar"
# asks for that kernel through ORINARI_KERNEL, the row is labelled by the
# kernel that ran); then candle's kernels over Q8_0 re-quantized at load, and over the
# GGUF's own Q4_1; also q4k and q6k, padded for candle's tile kernels), then llama.cpp
# (n_threads=$THREADS). Every run is a fresh
# process (load, one warm-up request, then REPS measured requests, then REPS
# ten-turn conversations whose turn 10 is timed with each engine's prompt
# cache and cold; then 1, 4 and 8 concurrent users: ours with continuous
# batching and without, llama.cpp with its own batched path; see
# bench_local.rs and llama_cpp_bench.py). The table
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
WEIGHTS="${WEIGHTS:-packed q8_0 q4_1}"
# Concurrent users measured by each of our runs, batched and unbatched side
# by side ("" skips them); SINGLE=false skips the single-user figures.
CONCURRENT="${CONCURRENT-1,4,8}"
SINGLE="${SINGLE:-true}"

py="$("$here/llama_py.sh")"
# PROFILE=dev reuses the test build (dependencies and orinari-models are
# optimised there too, see Cargo.toml) instead of a separate release build.
PROFILE="${PROFILE:-release}"
if [[ -n "${BENCH_BIN:-}" ]]; then
    bin="$BENCH_BIN"   # an already built bench_local
elif [[ "$PROFILE" == release ]]; then
    (cd "$root" && ${CARGO:-cargo} build --release -q -p orinari-models --example bench_local)
    bin="$root/target/release/examples/bench_local"
else
    (cd "$root" && ${CARGO:-cargo} build -q --workspace --examples)
    bin="$root/target/debug/examples/bench_local"
fi
mkdir -p "$here/results"
out="$here/results/model-$(date +%Y%m%d-%H%M%S).jsonl"

# Percent of all CPU time spent busy over one second, from /proc/stat.
busy_pct() {
    local a b
    read -ra a < <(grep '^cpu ' /proc/stat)
    sleep 1
    read -ra b < <(grep '^cpu ' /proc/stat)
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    local idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $(((total - idle) * 100 / (total > 0 ? total : 1)))
}

# Wait (up to QUIET_TIMEOUT seconds, default 600) until other processes use
# less than QUIET_PCT percent of the CPUs (default 10), so that neither engine
# measures someone else's compile job.
wait_quiet() {
    local deadline=$((SECONDS + ${QUIET_TIMEOUT:-600})) pct
    while pct="$(busy_pct)"; [ "$pct" -ge "${QUIET_PCT:-10}" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "warning: machine still ${pct}% busy; measuring anyway" >&2
            return
        fi
        echo "machine ${pct}% busy; waiting for it to be quiet" >&2
        sleep 5
    done
}

# CPU-seconds the whole machine spent busy since boot, in jiffies (1/100 s).
busy_jiffies() {
    local c
    read -ra c < <(grep '^cpu ' /proc/stat)
    echo $((c[1] + c[2] + c[3] + c[6] + c[7] + c[8]))
}

# Run one benchmark command (prints one JSON line with "cpu_s"); if other
# processes took more than OTHER_PCT percent (default 10) of the machine while
# it ran, try again (up to RETRIES, default 3). Appends the line, with
# "other_busy_pct" added, to $out.
measure() {
    local try line j0 j1 t0 t1 other
    for try in $(seq 1 "${RETRIES:-3}"); do
        wait_quiet
        j0="$(busy_jiffies)"; t0="$(date +%s.%N)"
        line="$("$@")"
        j1="$(busy_jiffies)"; t1="$(date +%s.%N)"
        other="$("$py" -c "import json,sys; d=json.loads(sys.argv[1]); \
w=$t1-$t0; print(max(0, round(100*(($j1-$j0)/100 - d['cpu_s'])/(w*$(nproc)))))" "$line")"
        line="${line%\}}, \"other_busy_pct\": $other}"
        echo "$line" >&2
        if [ "$other" -lt "${OTHER_PCT:-10}" ] || [ "$try" = "${RETRIES:-3}" ]; then
            echo "$line" >> "$out"
            return
        fi
        echo "other processes used ${other}% of the CPUs during that run; repeating it" >&2
    done
}

echo "cores: $(nproc); results: $out" >&2
for round in $(seq 1 "$ROUNDS"); do
    for w in $WEIGHTS; do
        echo "round $round/$ROUNDS: orinari weights=$w" >&2
        kernel=""
        case "$w" in
            q4_1) flags=(--requantize false) ;;
            packed-*) flags=(--weights packed); kernel="${w#packed-}" ;;
            *) flags=(--weights "$w") ;;
        esac
        measure env RAYON_NUM_THREADS="$THREADS" ${kernel:+ORINARI_KERNEL="$kernel"} "$bin" \
            "${flags[@]}" --reps "$REPS" --gen "$GEN" \
            --concurrent "$CONCURRENT" --single "$SINGLE"
    done
    echo "round $round/$ROUNDS: llama.cpp" >&2
    measure "$py" "$here/llama_cpp_bench.py" --threads "$THREADS" --reps "$REPS" --gen "$GEN" \
        --concurrent "$CONCURRENT" --single "$SINGLE"
done

"$py" - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def key(r):
    if r["engine"] == "llama.cpp":
        return "llama.cpp"
    kernel = f" ({r['kernel']})" if r.get("kernel") else ""
    return f"orinari {r['weights']}{kernel}"
groups = {}
for r in runs:
    groups.setdefault(key(r), []).append(r)
metrics = [
    ("pp200_tok_s", "prompt 200 tok/s", "higher"),
    ("pp512_tok_s", "prompt 512 tok/s", "higher"),
    ("gen_tok_s", "generate tok/s", "higher"),
    ("ttft200_ms", "TTFT 200-token prompt ms", "lower"),
    ("turn10_prompt_tokens", "turn 10: prompt tokens (history + question)", "-"),
    ("turn10_ttft_ms", "turn 10: TTFT with prompt cache ms", "lower"),
    ("turn10_cold_ms", "turn 10: TTFT cold ms", "lower"),
    ("prefix_cache_held_mib", "prefix cache held after the conversations MiB", "-"),
    ("load_s", "load s", "lower"),
    ("rss_after_load_mib", "RSS after load MiB", "lower"),
    ("peak_rss_mib", "peak RSS (VmHWM) MiB", "lower"),
]
def median_of(rs, m):
    xs = [r[m] for r in rs if m in r]
    return statistics.median(xs) if xs else None
med = {g: {m: median_of(rs, m) for m, _, _ in metrics} for g, rs in groups.items()}
show = lambda x: "-" if x is None else f"{x:g}"
ref = med.get("llama.cpp")
ours = sorted(g for g in med if g != "llama.cpp")
head = ["metric", "better"] + ours + ["llama.cpp"] + [f"ratio {g.split(' ', 1)[1]}" for g in ours]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for m, label, better in metrics:
    row = [label, better] + [show(med[g][m]) for g in ours] + [show(ref[m]) if ref else "-"]
    row += [f"{med[g][m] / ref[m]:.2f}x" if ref and ref[m] and med[g][m] is not None and better != "-" else "-" for g in ours]
    print("| " + " | ".join(row) + " |")
conc = {}
for g, rs in groups.items():
    for r in rs:
        for c in r.get("concurrent", []):
            conc.setdefault((g, c["users"], c["batch"]), []).append(c)
if conc:
    print("\nconcurrent users, greedy generations (median over runs; ratio = batched / unbatched):\n")
    print("| engine | users | aggregate tok/s batched | one forward per sequence | ratio | p99 inter-token ms batched | one forward per sequence | p50 ms batched | one forward per sequence |")
    print("|---|---|---|---|---|---|---|---|---|")
    # Engines measured both ways (llama.cpp runs its batched path only).
    for g in sorted({k[0] for k in conc if not k[2]}):
        for u in sorted({k[1] for k in conc if k[0] == g}):
            b = {x: {m: statistics.median(c[m] for c in conc.get((g, u, x), [{m: 0}])) for m in ("agg_tok_s", "itl_p99_ms", "itl_p50_ms")} for x in (True, False)}
            ratio = f"{b[True]['agg_tok_s'] / b[False]['agg_tok_s']:.2f}x" if b[False]["agg_tok_s"] else "-"
            print(f"| {g} | {u} | {b[True]['agg_tok_s']:g} | {b[False]['agg_tok_s']:g} | {ratio} | {b[True]['itl_p99_ms']:g} | {b[False]['itl_p99_ms']:g} | {b[True]['itl_p50_ms']:g} | {b[False]['itl_p50_ms']:g} |")
    ref_users = {k[1] for k in conc if k[0] == "llama.cpp"}
    if ref_users:
        print("\nbatched, side by side with llama.cpp's batched path (one llama_batch per step, a sequence id per user):\n")
        print("| engine | users | aggregate tok/s | llama.cpp | ratio | p99 inter-token ms | llama.cpp |")
        print("|---|---|---|---|---|---|---|")
        med_of = lambda g, u, m: statistics.median(c[m] for c in conc[(g, u, True)])
        for g in sorted({k[0] for k in conc if k[0] != "llama.cpp"}):
            for u in sorted(ref_users):
                if (g, u, True) not in conc:
                    continue
                ours_t, ref_t = med_of(g, u, "agg_tok_s"), med_of("llama.cpp", u, "agg_tok_s")
                print(f"| {g} | {u} | {ours_t:g} | {ref_t:g} | {ours_t / ref_t:.2f}x | {med_of(g, u, 'itl_p99_ms'):g} | {med_of('llama.cpp', u, 'itl_p99_ms'):g} |")
n = {g: len(rs) for g, rs in groups.items()}
gen = {g: min(r.get("gen_tokens") or 0 for r in rs) for g, rs in groups.items()}
busy = {g: max(r.get("other_busy_pct", 0) for r in rs) for g, rs in groups.items()}
print(f"\nmedian of {n} runs; most CPU taken by other processes during a run: {busy} %; generated tokens (min): {gen}; "
      f"llama.cpp RSS includes the Python interpreter "
      f"({statistics.median(r['rss_before_load_mib'] for r in groups.get('llama.cpp', [{'rss_before_load_mib': 0}])):g} MiB before load).")
PY
