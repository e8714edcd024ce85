#!/usr/bin/env bash
# `make deploy`: test the deployment files in deploy/ (README "Deploy on
# Kubernetes / systemd" runs the same commands).
#
# Usage: scripts/test-deploy.sh [BINARY]   (default: target/debug/orinari)
#
#  1. Kubernetes: render base/, overlays/postgres-redis/ and
#     prometheus-adapter/ with `kubectl kustomize`, validate every document
#     with kubernetes-validate against Kubernetes $K8S_VERSION (strict), the
#     ServiceMonitor (a CRD, which kubernetes-validate has no schema for and
#     only warns about) against deploy/kubernetes/schemas/; check probes, the
#     drain timing, hardening, selectors, Secret references and the HPA's
#     metric against the adapter rule; `orinari config check` the ConfigMap;
#     and show that a misspelt field fails both validators.
#  2. systemd: `systemd-analyze verify` must print nothing; the
#     `systemd-analyze security --offline=yes` exposure must be at most
#     $MAX_EXPOSURE; an strace of orinari held to the unit's sandbox; and the
#     unit run by a real systemd booted in a systemd-nspawn container
#     (deploy/test/systemd_upgrade.py): start at READY=1, SIGUSR2 upgrades
#     under load with MainPID handed over and 0 failed requests, reload, a
#     stop that drains.
#  3. Prometheus and Grafana: `promtool check rules` and `promtool test rules`
#     on the alerts; every metric name of the dashboard and the alerts is one
#     the telemetry crate registers; every dashboard query parses (promtool).
#  4. The container image: deploy/Containerfile built FROM scratch by buildah
#     (vfs storage under target/, chroot isolation, nothing pulled), run by
#     podman with a read-only root filesystem as uid 65532 with no
#     capabilities; /healthz, /readyz, /metrics and one chat completion
#     answer, and `podman stop` (SIGTERM) drains and exits 0.
#
# Installs what is missing: Debian's prometheus (promtool), systemd
# (systemd-analyze), systemd-container (systemd-nspawn), buildah and podman; kubernetes-validate into
# target/deploy-venv. Prints `deploy: N passed, N failed`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${1:-target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
[[ -x "$bin" ]] || { echo "deploy: no orinari binary at $bin (build it: cargo build -p orinari)" >&2; exit 2; }

K8S_VERSION=1.31               # the oldest Kubernetes the manifests target (preStop sleep: 1.30+)
KUBERNETES_VALIDATE=1.37.0     # PyPI; ships the schemas, works offline
MAX_EXPOSURE=1.5               # systemd-analyze security, out of 10 (lower is better)
IMAGE=localhost/orinari:deploy-test

started=$SECONDS
passed=0
failed=0
work="$(mktemp -d)"
# Image storage of this run only (vfs: plain folders, no overlay mounts),
# removed with the rest of $work.
containers="$work/containers"
storage=(--root "$containers/storage" --runroot "$containers/run" --storage-driver vfs)
# podman runs containers with runc, not its default crun: crun 1.8 refuses a
# machine whose cgroups are mounted hybrid (v1 controllers with a v2
# hierarchy beside them: "cgroups in hybrid mode not supported, drop all
# controllers from cgroupv2"), as this kind of machine's are.
runtime=(--runtime runc)
container=""
nspawn_pid=""   # the systemd-nspawn container of the systemd step
cleanup() {
    if [[ -n "$nspawn_pid" ]]; then
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    if [[ -d "$containers" ]]; then
        podman "${storage[@]}" rm -af -v >/dev/null 2>&1 || true
        podman "${storage[@]}" rmi -af >/dev/null 2>&1 || true
        findmnt -rn -o TARGET | grep "^$containers" | sort -r | xargs -r umount 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# step NAME COMMAND...: run one check, count it, keep going on failure.
step() {
    local name="$1"
    shift
    echo "deploy: -- $name"
    if "$@"; then
        passed=$((passed + 1))
        echo "deploy: ok: $name"
    else
        failed=$((failed + 1))
        echo "deploy: FAILED: $name"
    fi
}

# --- tools ------------------------------------------------------------------
apt_install() {
    local cmd="$1" pkg="$2"
    command -v "$cmd" >/dev/null && return 0
    echo "deploy: installing $pkg (for $cmd) ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" >/dev/null 2>&1 ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" >/dev/null; }
}
apt_install promtool prometheus
apt_install systemd-analyze systemd
apt_install buildah buildah
apt_install podman podman
apt_install runc runc
apt_install systemd-nspawn systemd-container
apt_install curl curl
apt_install strace strace
venv="$root/target/deploy-venv"
if ! "$venv/bin/python" -c "import kubernetes_validate, yaml, sys; sys.exit(kubernetes_validate.__version__ != '$KUBERNETES_VALIDATE')" 2>/dev/null; then
    echo "deploy: creating $venv with kubernetes-validate==$KUBERNETES_VALIDATE ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE" >&2
fi
py="$venv/bin/python"
check=(env PYTHONDONTWRITEBYTECODE=1 "$py" deploy/test/check.py)

# --- 1. Kubernetes ------------------------------------------------------------
k8s=deploy/kubernetes
render() {
    # kubectl's built-in kustomize (v5 in kubectl 1.27+). Debian's own
    # kubernetes-client (1.20) bundles kustomize v2, which reads neither
    # `resources:` folders nor `patches:`: there is no other renderer to fall
    # back on, so a machine without kubectl fails here, saying so.
    if ! command -v kubectl >/dev/null; then
        echo "deploy: kubectl (with kustomize v4+) is missing: cannot render $1" >&2
        return 1
    fi
    kubectl kustomize "$1" >"$2"
}
kubernetes() {
    render "$k8s/base" "$work/base.yaml" &&
        render "$k8s/overlays/postgres-redis" "$work/overlay.yaml" &&
        render "$k8s/prometheus-adapter" "$work/adapter.yaml" &&
        echo "deploy: rendered with kubectl kustomize ($(kubectl version --client 2>/dev/null | grep -i kustomize))" &&
        "${check[@]}" kubernetes "$K8S_VERSION" "$k8s/schemas" "$work/base.yaml" "$work/overlay.yaml" "$work/adapter.yaml"
}
step "kubernetes: render and validate against Kubernetes $K8S_VERSION" kubernetes

consistency() {
    "${check[@]}" consistency "$work/base.yaml" "$work/overlay.yaml" "$work/adapter.yaml" "$work" &&
        (cd "$work" && "$bin" config check orinari.toml) &&
        (cd "$work" && env ORINARI_STORAGE_URL=postgres://orinari@postgres:5432/orinari \
            ORINARI_CLUSTER_REDIS_URL=redis://redis:6379 "$bin" config check orinari.toml) &&
        promtool check rules "$work/adapter-rules.yml"
}
step "kubernetes: probes, drain, hardening, selectors, HPA metric = adapter rule, config check" consistency

# The validators bite: a misspelt field in a Kubernetes kind and in the CRD.
must_fail() {
    local what="$1" file="$2" out
    if out="$("${check[@]}" kubernetes "$K8S_VERSION" "$k8s/schemas" "$file" 2>&1)"; then
        echo "deploy: $what was accepted" >&2
        return 1
    fi
    echo "deploy: rejected as expected: $what: $(grep -m1 FAIL <<<"$out")"
}
bites() {
    sed 's/^\(      \)terminationGracePeriodSeconds:/\1terminationGracePeriodSecond:/' "$work/base.yaml" >"$work/bad-deployment.yaml" &&
        must_fail "Deployment with terminationGracePeriodSecond" "$work/bad-deployment.yaml" &&
        sed 's/^\(    \)scrapeTimeout:/\1scrapeTimout:/' "$work/base.yaml" >"$work/bad-servicemonitor.yaml" &&
        must_fail "ServiceMonitor with scrapeTimout" "$work/bad-servicemonitor.yaml"
}
step "kubernetes: a misspelt field fails validation" bites

# --- 2. systemd ---------------------------------------------------------------
unit=deploy/systemd/orinari.service
systemd_verify() {
    # verify checks that ExecStart's binary exists: a root folder with the
    # unit, the binary where the unit expects it, kill, and systemd's own units.
    local r="$work/systemd-root" out
    mkdir -p "$r/usr/local/bin" "$r/etc/systemd/system" "$r/usr/bin" "$r/usr/lib/systemd"
    ln -s usr/bin "$r/bin"
    ln -s usr/lib "$r/lib"
    cp "$bin" "$r/usr/local/bin/orinari"
    cp "$(type -P kill)" "$r/usr/bin/kill"
    cp -a /usr/lib/systemd/system "$r/usr/lib/systemd/"
    cp "$unit" "$r/etc/systemd/system/"
    out="$(systemd-analyze verify --root="$r" orinari.service 2>&1)" || { echo "$out"; return 1; }
    if [[ -n "$out" ]]; then
        echo "$out"
        return 1
    fi
    echo "deploy: systemd-analyze verify $unit: clean ($(systemd-analyze --version | head -n1))"
}
step "systemd: systemd-analyze verify" systemd_verify

systemd_security() {
    local out score
    out="$(systemd-analyze security --offline=yes "$unit" 2>&1)" || { echo "$out"; return 1; }
    score="$(sed -n 's/.*Overall exposure level for orinari.service: \([0-9.]*\).*/\1/p' <<<"$out")"
    grep '✗' <<<"$out" | sed 's/^/deploy:   /' || true
    echo "deploy: systemd-analyze security --offline=yes: exposure $score (at most $MAX_EXPOSURE)"
    awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s != "" && s <= max) }'
}
step "systemd: systemd-analyze security exposure" systemd_security

# Nothing here runs systemd as PID 1, so the sandbox is checked against what
# orinari does: start it under strace as an unprivileged user (as the unit's
# dynamic user) in a working directory of its own (the StateDirectory), make
# it answer, scrape and drain, and hold every traced call to the unit.
systemd_sandbox() {
    local state="$work/sandbox" trace="$work/sandbox.trace" port pid tracee url ok=""
    install -d -m 0755 "$state"
    install -d -o nobody -g nogroup -m 0700 "$state/var-lib-orinari"
    install -m 0644 "$(scripts/fetch-model.sh)" "$state/model.gguf"
    chmod 0711 "$work"
    port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    (cd "$state/var-lib-orinari" && exec env -i PATH=/usr/bin:/bin ORINARI_MODEL_PATH="$state/model.gguf" \
        ORINARI_SERVER_LISTEN="127.0.0.1:$port" ORINARI_SERVER_SHUTDOWN_TIMEOUT_MS=5000 ORINARI_ADMIN_TOKEN=sandbox-test \
        strace -f -qq -u nobody -o "$trace" "$bin" serve) 2>"$state/serve.log" &
    pid=$!
    url="http://127.0.0.1:$port"
    for _ in $(seq 1 600); do
        if curl -fsS "$url/readyz" >/dev/null 2>&1; then ok=1; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if [[ -z "$ok" ]]; then
        echo "deploy: orinari did not become ready under strace:" >&2
        tail -n 20 "$state/serve.log" >&2
        kill -KILL "$pid" 2>/dev/null || true
        return 1
    fi
    # strace's child is orinari: SIGTERM goes to it, and strace exits with
    # its status.
    tracee="$(pgrep -P "$pid" | head -n1)"
    if ! { curl -fsS "$url/v1/chat/completions" -H 'content-type: application/json' \
        -d '{"model":"orinari-small","messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"stream":true}' >/dev/null &&
        curl -fsS "$url/metrics" >/dev/null && curl -fsS "$url/status" >/dev/null && curl -fsS "$url/" >/dev/null; }; then
        kill -KILL "$tracee" "$pid" 2>/dev/null || true
        return 1
    fi
    kill -TERM "$tracee"
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "deploy: orinari did not exit within 30 s of SIGTERM under strace" >&2
        kill -KILL "$tracee" "$pid" 2>/dev/null || true
        return 1
    fi
    wait "$pid" || { echo "deploy: orinari exited $? after SIGTERM under strace" >&2; return 1; }
    systemd-analyze syscall-filter >"$work/syscall-groups.txt" 2>/dev/null
    "${check[@]}" sandbox "$unit" "$work/syscall-groups.txt" "$trace" "$state/var-lib-orinari"
}
step "systemd: the unit's sandbox allows what orinari does (strace, unprivileged)" systemd_sandbox

# A real systemd runs the unit: Debian's systemd booted as PID 1 of a
# systemd-nspawn container over the host's own /usr (--volatile=yes: a fresh
# tmpfs for everything else), with a private network and no machined
# (--register=no; nspawn's scratch folder on a tmpfs of a private mount
# namespace, as this host's /run is not one). The unit is installed
# unchanged: the binary and the model are bound at /usr/local, the config at
# /etc/orinari, the unit in /etc/systemd/system (nothing else there, so the
# container starts no other service). deploy/test/systemd_upgrade.py then
# starts it, upgrades it twice with SIGUSR2 under load, reloads and stops it.
systemd_stop_container() {
    [[ -n "$nspawn_pid" ]] || return 0
    # SIGTERM: nspawn asks the container's systemd to power off.
    kill -TERM "$nspawn_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$nspawn_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
    nspawn_pid=""
}
systemd_upgrade() {
    local r="$work/nspawn" leader="" state model
    model="$(scripts/fetch-model.sh)"
    mkdir -p "$r/usr-local/bin" "$r/usr-local/share/orinari" "$r/etc-systemd-system" "$r/etc-orinari"
    install -m 0755 "$bin" "$r/usr-local/bin/orinari"
    ln -f "$model" "$r/usr-local/share/orinari/SmolLM2-135M-Instruct.Q4_1.gguf" 2>/dev/null ||
        install -m 0644 "$model" "$r/usr-local/share/orinari/SmolLM2-135M-Instruct.Q4_1.gguf"
    install -m 0644 "$unit" "$r/etc-systemd-system/orinari.service"
    # Loopback in the container's own network, the default drain (30 s, within
    # the unit's TimeoutStopSec), no rate limit in the way of the clients.
    printf '[server]\nlisten = "127.0.0.1:8080"\n\n[limits]\nrequests_per_minute = 1000000\n' \
        >"$r/etc-orinari/orinari.toml"
    install -m 0600 /dev/null "$r/etc-orinari/env"
    echo "ORINARI_ADMIN_TOKEN=systemd-test" >"$r/etc-orinari/env"
    # A machine id of its own: no first-boot presets or wizard.
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$r/machine-id"
    echo >>"$r/machine-id"
    mkdir -p /run/systemd/nspawn
    unshare --mount --propagation private sh -c 'mount -t tmpfs tmpfs /run/systemd/nspawn && exec "$@"' sh \
        systemd-nspawn --quiet --directory=/ --volatile=yes --private-network --register=no --keep-unit \
        --machine="orinari-test-$$" \
        --bind-ro="$r/machine-id:/etc/machine-id" \
        --bind="$r/etc-systemd-system:/etc/systemd/system" \
        --bind-ro="$r/etc-orinari:/etc/orinari" \
        --bind="$r/usr-local:/usr/local" \
        --boot -- systemd.unit=basic.target systemd.firstboot=off >"$r/console.log" 2>&1 &
    nspawn_pid=$!
    for _ in $(seq 1 300); do
        leader="$(pgrep -P "$nspawn_pid" -x systemd || true)"
        [[ -n "$leader" ]] && break
        kill -0 "$nspawn_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$leader" ]]; then
        echo "deploy: systemd-nspawn did not boot systemd:" >&2
        tail -n 20 "$r/console.log" >&2
        systemd_stop_container
        return 1
    fi
    # Booted: basic.target reached (is-system-running --wait needs D-Bus).
    for _ in $(seq 1 600); do
        state="$(nsenter --target "$leader" --mount --pid -- systemctl is-system-running 2>/dev/null || true)"
        [[ "$state" == initializing || "$state" == starting || -z "$state" ]] || break
        sleep 0.1
    done
    echo "deploy: container booted (systemd pid $leader on the host): $state"
    local rc=0
    nsenter --target "$leader" --net -- env PYTHONDONTWRITEBYTECODE=1 "$py" deploy/test/systemd_upgrade.py \
        "$leader" "$bin" "$r/usr-local/bin/orinari" || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "deploy: the unit's journal:" >&2
        nsenter --target "$leader" --mount --pid -- journalctl --no-pager -u orinari.service | tail -n 30 >&2 || true
    fi
    systemd_stop_container
    return $rc
}
step "systemd: Type=notify start and SIGUSR2 upgrades under load under a real systemd (nspawn)" systemd_upgrade

# --- 3. Prometheus and Grafana ---------------------------------------------------
alerts() {
    promtool check rules deploy/prometheus/alerts.yml &&
        (cd deploy/prometheus && promtool test rules alerts_test.yml)
}
step "prometheus: promtool check rules and test rules" alerts

metric_names() {
    "$py" -c 'import json, sys; d = json.load(open(sys.argv[1])); print("deploy:", sys.argv[1] + ": valid JSON,", len(d["panels"]), "panels")' deploy/grafana/orinari.json &&
        "${check[@]}" metrics crates/orinari-telemetry/src "$work" deploy/grafana/orinari.json deploy/prometheus/alerts.yml &&
        promtool check rules "$work/dashboard-rules.yml"
}
step "grafana: dashboard metric names registered, every query parses" metric_names

# --- 4. The container image ------------------------------------------------------
linkage() {
    if ldd "$bin" >/dev/null 2>&1; then
        echo "deploy: $bin is dynamically linked; the image carries:"
        ldd "$bin" | sed 's/^/deploy:   /'
    else
        echo "deploy: $bin is statically linked"
    fi
}

image() {
    linkage
    local t0=$SECONDS
    deploy/container-context.sh "$bin" "$work/context" &&
        mkdir -p "$containers" &&
        buildah "${storage[@]}" bud --quiet --isolation chroot --pull=never \
            -f deploy/Containerfile -t "$IMAGE" "$work/context" >/dev/null &&
        echo "deploy: built $IMAGE in $((SECONDS - t0)) s (buildah $(buildah --version | cut -d' ' -f3), vfs, --isolation chroot)" &&
        buildah "${storage[@]}" inspect --format 'deploy: image user {{.OCIv1.Config.User}}, workdir {{.OCIv1.Config.WorkingDir}}, entrypoint {{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}}{{println}}' "$IMAGE" &&
        podman "${storage[@]}" image inspect --format 'deploy: image size {{.Size}} bytes, layers {{len .RootFS.Layers}}' "$IMAGE" &&
        image_contents
}

# Every file in the image (the time zone database counted, not listed).
image_contents() {
    local box dir
    box="$(buildah "${storage[@]}" from --pull=never "$IMAGE")" || return 1
    dir="$(buildah "${storage[@]}" mount "$box")" || return 1
    echo "deploy: the image holds:"
    (cd "$dir" && find . -path ./usr/share/zoneinfo -prune -o ! -type d -printf '%M %U:%G %10s /%P\n' | sort -k4 | sed 's/^/deploy:   /')
    echo "deploy:   and /usr/share/zoneinfo: $(cd "$dir" && find usr/share/zoneinfo ! -type d | wc -l) files ($(du -sh "$dir/usr/share/zoneinfo" | cut -f1))"
    echo "deploy:   folders owned by the runtime user: $(cd "$dir" && find . -type d -uid 65532 -printf '/%P ')"
    buildah "${storage[@]}" rm "$box" >/dev/null
}
step "container: buildah builds deploy/Containerfile FROM scratch" image

run_image() {
    local port log status
    port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    log="$work/container.log"
    # Host network, listening on loopback only (an ORINARI_* override beats
    # the image's orinari.toml); the store on a new named volume, which podman
    # fills from the image's /var/lib/orinari (owned by 65532).
    local volume=orinari-data
    podman "${storage[@]}" volume create "$volume" >/dev/null || return 1
    # Resource limits at or below this shell's own: root here lacks
    # CAP_SYS_RESOURCE, so podman's default (nofile 1048576) cannot be set.
    local nofile nproc
    nofile="$(ulimit -Hn)"; [[ "$nofile" == unlimited || "$nofile" -gt 65536 ]] && nofile=65536
    nproc="$(ulimit -Hu)"; [[ "$nproc" == unlimited || "$nproc" -gt 4096 ]] && nproc=4096
    container="$(podman "${storage[@]}" "${runtime[@]}" run -d --pull=never --read-only --network=host \
        --cap-drop=ALL --security-opt=no-new-privileges \
        --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
        -v "$volume:/var/lib/orinari" \
        -e ORINARI_SERVER_LISTEN="127.0.0.1:$port" -e ORINARI_SERVER_SHUTDOWN_TIMEOUT_MS=5000 \
        "$IMAGE")" || return 1
    local url="http://127.0.0.1:$port" ok=""
    for _ in $(seq 1 600); do
        if curl -fsS "$url/healthz" >/dev/null 2>&1; then ok=1; break; fi
        [[ "$(podman "${storage[@]}" inspect --format '{{.State.Running}}' "$container")" == true ]] || break
        sleep 0.1
    done
    if [[ -z "$ok" ]]; then
        echo "deploy: the container did not answer /healthz within 60 s:" >&2
        podman "${storage[@]}" logs "$container" >&2 || true
        return 1
    fi
    echo "deploy: container $(podman "${storage[@]}" inspect --format '{{.Config.User}} read-only={{.HostConfig.ReadonlyRootfs}} caps={{.EffectiveCaps}}' "$container") answers on $url"
    local body
    body="$(curl -fsS "$url/healthz")" || return 1
    echo "deploy:   GET /healthz: $body"
    body="$(curl -fsS "$url/readyz")" || return 1
    echo "deploy:   GET /readyz: $body"
    curl -fsS "$url/metrics" >"$work/metrics.txt" &&
        grep -q '^orinari_queue_depth ' "$work/metrics.txt" &&
        echo "deploy:   GET /metrics: $(grep -c '^# TYPE' "$work/metrics.txt") metric families, orinari_queue_depth among them" || return 1
    curl -fsS "$url/v1/chat/completions" -H 'content-type: application/json' \
        -d '{"model":"orinari-small","messages":[{"role":"user","content":"Say hi."}],"max_tokens":8}' >"$work/chat.json" &&
        "$py" -c 'import json, sys; r = json.load(open(sys.argv[1])); print("deploy:   POST /v1/chat/completions:", repr(r["choices"][0]["message"]["content"]), r["usage"])' "$work/chat.json" || return 1
    # SIGTERM (podman stop) drains and exits 0.
    podman "${storage[@]}" "${runtime[@]}" stop --time 20 "$container" >/dev/null || return 1
    status="$(podman "${storage[@]}" inspect --format '{{.State.ExitCode}}' "$container")"
    podman "${storage[@]}" logs "$container" >"$log" 2>&1 || true
    podman "${storage[@]}" rm "$container" >/dev/null
    container=""
    podman "${storage[@]}" volume rm "$volume" >/dev/null
    echo "deploy:   podman stop (SIGTERM): exit $status"
    [[ "$status" == 0 ]] || { tail -n 20 "$log" >&2; return 1; }
}
step "container: runs read-only as 65532, answers, stops cleanly" run_image

echo "deploy: finished in $((SECONDS - started)) s"
echo "deploy: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
