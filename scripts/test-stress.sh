#!/usr/bin/env bash
# `make test-stress`: the timing- and concurrency-sensitive tests, run many
# times each, with every failure reported. A test that fails one run in
# twenty is a bug in the code or in the test: nothing here retries.
#
#   STRESS_RUNS=20        runs of each group below (default 20)
#   STRESS_POOLS_RUNS=50  runs of the upstream pool tests (default 50)
#
# Groups:
#   pools     orinari-balance's pools against real HTTP/1.1 and HTTP/2
#             upstreams: cancellations, GOAWAY mid-load, failover, timeouts
#   streams   streamed answers, drains and reloads under load, rapid-reset
#             floods, the admission queue and limits under load (memory
#             and Redis), leader election (SQLite and PostgreSQL),
#             zero-downtime upgrades (SIGUSR2) under load
#   slowloris Debian's slowhttptest against the real binary
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${STRESS_RUNS:-20}"
pools_runs="${STRESS_POOLS_RUNS:-50}"
logs="target/stress"
mkdir -p "$logs"

streams='(package(orinari-limits))
  | (package(orinari-server) & (binary(admission) | test(/stream|drain/)))
  | (package(orinari) & (binary(reload) | binary(upstream) | test(/sigusr2/)))
  | binary(leader)'

cargo nextest run --workspace --no-run >/dev/null || exit 2
# One candle thread per embedded model, as in `make unit` (see the Makefile).
export CANDLE_NUM_THREADS=1
scripts/ensure-services.sh >/dev/null || exit 2

failed=()
group() {
    local name="$1"; shift
    local t0=$SECONDS
    # nextest's stress mode can exit 0 with failed iterations in its
    # summary: the summary decides too.
    if "$@" >"$logs/$name.log" 2>&1 &&
        ! grep -qE '^\s+Summary.* (failed|timed out|cancelled)' "$logs/$name.log"; then
        echo "stress: $name passed ($((SECONDS - t0)) s)"
    else
        echo "stress: $name FAILED ($((SECONDS - t0)) s): $logs/$name.log"
        grep -E '^\s+(FAIL|SIGSEGV|SIGABRT|TIMEOUT)' "$logs/$name.log" | sort | uniq -c
        failed+=("$name")
    fi
    grep -E '^\s+Summary' "$logs/$name.log" | tail -1
}

# --workspace with a filter, not `-p orinari-balance`: `-p` resolves
# features for that package alone and compiled ~200 crates a second time
# (about 15 minutes here before the first run).
group pools cargo nextest run --workspace -E 'binary_id(orinari-balance::pools)' \
    --stress-count "$pools_runs" --no-fail-fast
group streams cargo nextest run --workspace -E "$streams" \
    --stress-count "$runs" --no-fail-fast
slowloris() {
    local i
    for i in $(seq 1 "$runs"); do
        echo "slowloris run $i/$runs"
        bash tests/slowloris/run.sh target/debug/orinari || return 1
    done
}
group slowloris slowloris

if [ ${#failed[@]} -gt 0 ]; then
    echo "stress: FAILED: ${failed[*]}"
    exit 1
fi
echo "stress: every run passed"
