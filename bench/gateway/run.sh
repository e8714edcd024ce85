#!/usr/bin/env bash
# Side-by-side gateway benchmark on this machine, one run:
#   mock direct | ORINARI -> mock | ORINARI -> mock over HTTP/2 | nginx
#   proxy_pass -> mock | HAProxy -> mock | HAProxy -> ORINARI -> mock |
#   TensorZero -> mock | LiteLLM proxy -> mock
# Whole and streamed chat completions; closed-loop throughput (wrk); latency
# at a fixed 2,000 req/s, open loop with evenly spaced requests (orinari-load,
# in this repository) and hey's per-worker rate limit (bursts of 20); peak
# memory; 1,000 open streams (ORINARI and nginx).
#
#   bash bench/gateway/run.sh            (DURATION=10 RATE=2000 TOKENS=16 GUARD=off ONLY=)
#
# Needs: wrk, hey, nginx-light, haproxy (apt), python3 venv; TensorZero and the
# LiteLLM proxy are installed into bench/.venv when missing. Every gateway
# gets both cores (nginx 2 workers, LiteLLM 2 workers, ORINARI and
# TensorZero their multi-threaded runtimes) and the same load and mock.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
TOKENS=${TOKENS:-16}
GUARD=${GUARD:-off}
STREAMS=${STREAMS:-1000}
# ONLY=orinari,nginx runs a subset (for iterating; the published table is one full run).
ONLY=${ONLY:-}
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
DIR=$(mktemp -d /tmp/orinari-gw-bench.XXXXXX)
ulimit -n 65536 || true

for tool in wrk hey nginx haproxy; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk hey nginx-light haproxy" >&2; exit 1; }
done
VENV=$ROOT/bench/.venv
# TensorZero, LiteLLM and the open-streams check run from bench/.venv: set
# it up only when this run needs it.
if { want tensorzero || want litellm || [ "$STREAMS" -gt 0 ]; } &&
  ! "$VENV/bin/python" -c 'import tensorzero, litellm' 2>/dev/null; then
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'tensorzero==2026.6.0' 'litellm[proxy]==1.108.7'
fi
BIN=${BIN:-target/release} # where the release binaries are
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p orinari -p orinari-fake-upstream

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_port() { for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# A process and all its descendants (worker processes).
tree_pids() {
  local pids=($1) i=0
  while [ $i -lt ${#pids[@]} ]; do
    pids+=($(cat /proc/${pids[$i]}/task/*/children 2>/dev/null)); i=$((i+1))
  done
  echo "${pids[@]}"
}
# Peak RSS of a process and all its descendants, summed.
tree_hwm_mb() {
  for p in $(tree_pids "$1"); do awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null; done |
    awk '{s+=$1} END {printf "%.1f", s/1024}'
}

"$BIN"/orinari-fake-upstream --listen 127.0.0.1:19101 --tokens "$TOKENS" 2>"$DIR/mock.log" & pids+=($!)
"$BIN"/orinari-fake-upstream --listen 127.0.0.1:19102 --tokens 100 --chunk-delay-ms 50 2>"$DIR/slow.log" & pids+=($!)

sed -e "s#BENCH_DIR#$DIR#" -e "s#GUARD_MODE#$GUARD#" bench/gateway/orinari.toml >"$DIR/orinari.toml"
ORINARI_LOG=warn ORINARI_ADMIN_TOKEN=bench "$BIN"/orinari serve --config "$DIR/orinari.toml" 2>"$DIR/orinari.log" & ORI=$!; pids+=($ORI)

sed -e "s#BENCH_DIR#$DIR#g" bench/gateway/nginx.conf >"$DIR/nginx.conf"
nginx -c "$DIR/nginx.conf" -p "$DIR" -g 'daemon off;' & NGX=$!; pids+=($NGX)
HAP=$$
if want haproxy || want haproxy-orinari; then
  haproxy -db -f bench/gateway/haproxy.cfg 2>"$DIR/haproxy.log" & HAP=$!; pids+=($HAP)
  wait_port http://127.0.0.1:19501/v1/models
fi

LLP=$$ TZP=$$ TZ_BASE=http://127.0.0.1:1/
if want litellm; then
  LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR LITELLM_TELEMETRY=False \
    "$VENV/bin/litellm" --config bench/gateway/litellm.yaml --host 127.0.0.1 --port 19401 --num_workers 2 \
    >"$DIR/litellm.log" 2>&1 & LLP=$!; pids+=($LLP)
fi

if want tensorzero; then
  "$VENV/bin/python" bench/gateway/tensorzero_gateway.py "$ROOT/bench/gateway/tensorzero.toml" >"$DIR/tz.out" 2>"$DIR/tz.log" & TZP=$!; pids+=($TZP)
  for _ in $(seq 1 300); do grep -q http "$DIR/tz.out" 2>/dev/null && break; sleep 0.1; done
  TZ_BASE=$(grep -o 'http[^ ]*' "$DIR/tz.out" | head -1)
fi

wait_port http://127.0.0.1:19101/v1/models
wait_port http://127.0.0.1:19201/healthz
wait_port http://127.0.0.1:19301/v1/models
if want litellm; then
  for _ in $(seq 1 600); do curl -s -o /dev/null http://127.0.0.1:19401/health/liveliness && break; sleep 0.1; done
  wait_port http://127.0.0.1:19401/health/liveliness
fi
# TensorZero's gateway runs inside the Python process that started it.
TZ_PID=$TZP

TARGETS=(
  "mock-direct|http://127.0.0.1:19101/v1/chat/completions|fake|"
  "orinari|http://127.0.0.1:19201/v1/chat/completions|bench|$ORI"
  "orinari-h2|http://127.0.0.1:19201/v1/chat/completions|bench-h2|$ORI"
  "nginx|http://127.0.0.1:19301/v1/chat/completions|fake|$NGX"
  "haproxy|http://127.0.0.1:19501/v1/chat/completions|fake|$HAP"
  "haproxy-orinari|http://127.0.0.1:19502/v1/chat/completions|bench|$HAP"
  "tensorzero|${TZ_BASE%/}/chat/completions|tensorzero::model_name::bench|$TZ_PID"
  "litellm|http://127.0.0.1:19401/v1/chat/completions|bench|$LLP"
)

body() { # model stream
  printf '{"model":"%s","stream":%s,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}' "$1" "$2"
}

# wrk latency units → ms
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); printf "%.3f", v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); printf "%.3f", v} else if (v ~ /s$/) {sub(/s$/,"",v); printf "%.3f", v*1000} else print v}'; }

RESULTS="$DIR/results.tsv"
printf 'target\tmode\tmax_rps\tclosed_p50_ms\tclosed_p99_ms\tclosed_errors\trate_rps\trate_p50_ms\trate_p99_ms\trate_errors\topen_rps\topen_p50_ms\topen_p99_ms\topen_errors\n' >"$RESULTS"
for t in "${TARGETS[@]}"; do
  IFS='|' read -r name url model pid <<<"$t"
  want "$name" || continue
  for stream in false true; do
    mode=$([ "$stream" = true ] && echo stream || echo whole)
    body "$model" "$stream" >"$DIR/body.json"
    check=$(curl -s "$url" -H 'content-type: application/json' -d @"$DIR/body.json")
    case "$check" in *tok$((TOKENS-1))*) ;; *) echo "$name $mode: unexpected answer: ${check:0:300}" >&2; exit 1;; esac
    BODY_FILE="$DIR/body.json" wrk -t1 -c8 -d2s -s bench/gateway/post.lua "$url" >/dev/null
    BODY_FILE="$DIR/body.json" wrk -t2 -c32 -d"${DURATION}s" --latency -s bench/gateway/post.lua "$url" >"$DIR/wrk.txt"
    max_rps=$(awk '/Requests\/sec/ {print $2}' "$DIR/wrk.txt")
    c50=$(awk '$1=="50%" {print $2}' "$DIR/wrk.txt" | to_ms)
    c99=$(awk '$1=="99%" {print $2}' "$DIR/wrk.txt" | to_ms)
    cerr=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",","");for(i=3;i<=NF;i+=2) n+=$(i+1)} END {print n+0}' "$DIR/wrk.txt")
    hey -z "${DURATION}s" -c 20 -q $((RATE / 20)) -m POST -T application/json -D "$DIR/body.json" "$url" >"$DIR/hey.txt"
    rate=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$DIR/hey.txt")
    r50=$(awk '$1=="50%" && $2=="in" {printf "%.3f", $3*1000}' "$DIR/hey.txt")
    r99=$(awk '$1=="99%" && $2=="in" {printf "%.3f", $3*1000}' "$DIR/hey.txt")
    rerr=$(awk '/Status code distribution/ {s=1; e=0} /Error distribution/ {e=1; s=0}
      s && /\[[0-9]+\]/ {c=$1; gsub(/[][]/,"",c); if (c!="200") n+=$2}
      e && /\[[0-9]+\]/ {c=$1; gsub(/[][]/,"",c); n+=c}
      END {print n+0}' "$DIR/hey.txt")
    # Open loop, evenly spaced: whole answers to the last byte, streams to
    # the first token (the mock's tokens are tok0, tok1, ...).
    "$BIN"/orinari-load "$url" "$DIR/body.json" --rate "$RATE" --seconds "$DURATION" --connections 32 --mark tok0 >"$DIR/load.json"
    key=$([ "$stream" = true ] && echo mark_ms || echo total_ms)
    read -r o50 o99 oerr orate < <(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); t=r[sys.argv[2]]; print(t['p50'], t['p99'], r['errors'], round(r['rate']))" "$DIR/load.json" "$key")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$max_rps" "$c50" "$c99" "$cerr" "$rate" "$r50" "$r99" "$rerr" "$orate" "$o50" "$o99" "$oerr" >>"$RESULTS"
    echo "$name $mode: max ${max_rps} req/s (p50 ${c50} ms, p99 ${c99} ms, errors ${cerr}); hey at ${rate} req/s p50 ${r50} ms p99 ${r99} ms, errors ${rerr}; open loop at ${orate} req/s p50 ${o50} ms p99 ${o99} ms, errors ${oerr}" >&2
  done
done

# TensorZero and LiteLLM only when this run started them (ONLY= may leave them out).
tz_mb=$(want tensorzero && hwm_mb "$TZ_PID" || echo "not run")
ll_mb=$(want litellm && tree_hwm_mb "$LLP" || echo "not run")
echo "peak RSS (MB): orinari $(hwm_mb $ORI), nginx (master + 2 workers) $(tree_hwm_mb $NGX), tensorzero (python host) $tz_mb, litellm (all processes) $ll_mb" | tee "$DIR/memory.txt" >&2
curl -s http://127.0.0.1:19201/metrics | awk '/^orinari_gateway_overhead_seconds_(sum|count)/ {print}' >"$DIR/overhead.txt"
awk '/_sum/ {s=$2} /_count/ {c=$2} END {if (c>0) printf "orinari_gateway_overhead_seconds mean over %d requests: %.1f us\n", c, s/c*1e6}' "$DIR/overhead.txt" | tee -a "$DIR/memory.txt" >&2

# Many open streams: memory of ORINARI, then of nginx, while $STREAMS streams
# (5 s each) are open. RSS, and of it the anonymous part (heap: what the
# streams cost; the rest is the mapped binary's pages).
anon_mb() { awk '/RssAnon/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
tree_mb() { # RSS and anonymous RSS of a process and its descendants, summed
  for p in $(tree_pids "$1"); do awk '/VmRSS/ {r=$2} /RssAnon/ {a=$2} END {print r, a}' "/proc/$p/status" 2>/dev/null; done |
    awk '{r+=$1; a+=$2} END {printf "%.1f MB (anonymous %.1f MB)", r/1024, a/1024}'
}
# A fresh ORINARI for each upstream protocol, so neither inherits the
# other's (or the load tests') heap.
streams_mem() { # model label
  ORINARI_LOG=warn ORINARI_ADMIN_TOKEN=bench ORINARI_SERVER_LISTEN=127.0.0.1:19202 \
    "$BIN"/orinari serve --config "$DIR/orinari.toml" 2>"$DIR/orinari-$1.log" & local p=$!
  wait_port http://127.0.0.1:19202/healthz
  local before="$(rss_mb $p) MB (anonymous $(anon_mb $p) MB)"
  "$VENV/bin/python" bench/gateway/streams.py http://127.0.0.1:19202/v1/chat/completions "$1" "$STREAMS" >"$DIR/streams-$1.txt" &
  local sp=$!
  sleep 3
  local during="$(rss_mb $p) MB (anonymous $(anon_mb $p) MB)"
  local open=$(ls /proc/$p/fd | wc -l)
  local up=$(ss -Htn state established dst 127.0.0.1:19102 | wc -l)
  wait $sp
  kill $p; wait $p 2>/dev/null || true
  echo "$STREAMS open streams: orinari, $2 upstream, RSS ${before} before, ${during} with them open (${open} fds, ${up} upstream connections); $(cat "$DIR/streams-$1.txt")" | tee -a "$DIR/memory.txt" >&2
}
if [ "$STREAMS" -gt 0 ]; then # STREAMS=0 leaves the open-streams memory check out
  streams_mem slow HTTP/1.1
  streams_mem slow-h2 HTTP/2
  nbefore=$(tree_mb $NGX)
  "$VENV/bin/python" bench/gateway/streams.py http://127.0.0.1:19302/v1/chat/completions fake "$STREAMS" >"$DIR/nstreams.txt" &
  SP=$!
  sleep 3
  nduring=$(tree_mb $NGX)
  wait $SP
  echo "$STREAMS open streams: nginx (master + 2 workers) RSS ${nbefore} before, ${nduring} with them open; $(cat "$DIR/nstreams.txt")" | tee -a "$DIR/memory.txt" >&2
fi

echo
echo "| target | mode | max req/s (wrk -c32) | p50 / p99 ms at max | errors | req/s (hey, target ${RATE}) | p50 / p99 ms | errors | req/s (open loop, target ${RATE}) | p50 / p99 ms (whole: answer, stream: first token) | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
tail -n +2 "$RESULTS" | while IFS=$'\t' read -r n m mr c50 c99 ce r r50 r99 re orr o50 o99 oe; do
  echo "| $n | $m | $mr | $c50 / $c99 | $ce | $r | $r50 / $r99 | $re | $orr | $o50 / $o99 | $oe |"
done
echo
cat "$DIR/memory.txt"
echo "(raw output in $DIR)"
