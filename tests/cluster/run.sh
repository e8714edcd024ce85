#!/usr/bin/env bash
# The cluster test (issue #19 item 4): three `orinari serve` instances on one
# PostgreSQL database and one Redis, behind HAProxy with the repo's own
# deploy/haproxy/haproxy.cfg, two fake upstreams as the model's backends,
# and a load generator of whole answers and streams (tests/cluster/cluster.py
# runs the scenarios and says what fails). PostgreSQL and Redis are private
# ones (a throwaway PostgreSQL cluster made by initdb in a temp dir, a
# redis-server, both on free loopback ports), so the driver may stop and
# restart them; the shared ones on 5432 and 6379 are never touched. Every
# process it starts is stopped on exit, failed or not, and its files removed.
#
# Usage: tests/cluster/run.sh [BINARY] [OUT] [--full]
#   make cluster       the fast version (in make test, ~2 minutes)
#   make cluster-full  longer load, more clients
# Results: OUT/cluster.json (default target/cluster), logs there on failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
out="${2:-$root/target/cluster}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
full=()
[[ "${3:-}" == "--full" ]] && full=(--full)
fake="$(dirname "$bin")/orinari-fake-upstream"
if [[ ! -x "$fake" ]]; then
    (cd "$root" && cargo build --quiet -p orinari-fake-upstream --bin orinari-fake-upstream)
fi
if ! command -v haproxy >/dev/null; then
    echo "cluster: installing haproxy" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
fi
"$root/scripts/ensure-services.sh" >/dev/null

# PostgreSQL's own tools (Debian's postgresql package: ensure-services.sh
# installs it), the newest version installed.
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
[[ -x "$pg_bin/initdb" ]] || { echo "cluster: no PostgreSQL in /usr/lib/postgresql/*/bin" >&2; exit 1; }

work="$(mktemp -d /tmp/orinari-cluster.XXXXXX)"
# The private PostgreSQL runs as `postgres` when we are root (it refuses
# root): it must reach its directory under $work.
chmod 711 "$work"
mkdir -p "$out" "$work/bin" "$work/pg"
if [[ "$(id -u)" -eq 0 ]]; then
    chown postgres: "$work/pg"
    as_pg="runuser -u postgres --"
else
    as_pg=""
fi
rm -f "$out/cluster.json"

cleanup() {
    local status=$?
    set +e
    # Everything started here wrote its pid into $work; instances upgraded
    # by SIGUSR2 run the binary copied into $work, found by their exe link.
    for f in "$work"/driver.pid "$work"/redis.pid "$work"/upstream-*.pid "$work"/haproxy.pid; do
        [[ -f "$f" ]] && kill -KILL "$(cat "$f")" 2>/dev/null
    done
    if [[ -f "$work/pg/data/postmaster.pid" ]]; then
        $as_pg "$pg_bin/pg_ctl" stop -D "$work/pg/data" -m immediate -w -t 15 >/dev/null 2>&1 ||
            kill -KILL "$(head -n1 "$work/pg/data/postmaster.pid")" 2>/dev/null
    fi
    for p in /proc/[0-9]*; do
        case "$(readlink "$p/exe" 2>/dev/null)" in
            "$work/bin/"*) kill -KILL "${p#/proc/}" 2>/dev/null ;;
        esac
    done
    if [[ $status -ne 0 ]]; then
        mkdir -p "$out/logs"
        cp "$work"/*.log "$work/orinari.toml" "$out/logs/" 2>/dev/null
        cp "$work/pg/postgresql.log" "$out/logs/" 2>/dev/null
        echo "cluster: logs kept in $out/logs" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

read -r lb p1 p2 p3 redis_port up1 up2 watcher < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')

# A Redis of its own (the limiter's shared state), not the shared one.
# redis.sh starts it; the driver stops it and runs redis.sh again.
cat >"$work/redis.sh" <<SH
#!/usr/bin/env bash
redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no >>"$work/redis.log" 2>&1 &
echo \$! >"$work/redis.pid"
SH
bash "$work/redis.sh"

# A PostgreSQL of its own: a new cluster (trust on loopback only), on a
# free port below the ephemeral range (no outgoing connection can hold it
# between the check and the bind; a port taken meanwhile by another test's
# server is skipped). pg.sh start|stop; the driver stops it (-m fast) and
# starts it again.
$as_pg "$pg_bin/initdb" -D "$work/pg/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync \
    >"$work/pg/initdb.log" 2>&1 || { cat "$work/pg/initdb.log" >&2; exit 1; }
cat >"$work/pg.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
case "\$1" in
    start) exec $as_pg "$pg_bin/pg_ctl" start -D "$work/pg/data" -l "$work/pg/postgresql.log" -w -t 60 >/dev/null ;;
    stop) exec $as_pg "$pg_bin/pg_ctl" stop -D "$work/pg/data" -m fast -w -t 60 >/dev/null ;;
    *) exit 2 ;;
esac
SH
pg_port=""
for candidate in $(python3 -c 'import random; print(" ".join(str(p) for p in random.sample(range(20000, 32000), 20)))'); do
    (echo >"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null && continue
    cat >"$work/pg/data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $candidate
unix_socket_directories = '$work/pg'
max_connections = 100
CONF
    if bash "$work/pg.sh" start; then
        pg_port="$candidate"
        break
    fi
done
[[ -n "$pg_port" ]] || { echo "cluster: the private PostgreSQL did not start:" >&2; tail -n 20 "$work/pg/postgresql.log" >&2; exit 1; }
pg_admin="postgres://postgres@127.0.0.1:$pg_port/postgres"
db_url="postgres://postgres@127.0.0.1:$pg_port/orinari"
"$pg_bin/psql" -X "$pg_admin" -qc "CREATE DATABASE orinari" >/dev/null

# The model's backends: streams of 40 tokens 50 ms apart (2 s), whole
# answers at once.
for port in "$up1" "$up2"; do
    "$fake" --listen "127.0.0.1:$port" --tokens 40 --chunk-delay-ms 50 >>"$work/upstream.log" 2>&1 &
    echo $! >"$work/upstream-$port.pid"
    disown
done
for port in "$redis_port" "$up1" "$up2"; do
    for _ in $(seq 1 100); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.05
    done
done

# One configuration for every instance (so they agree on its hash); what
# differs per instance (the listening address) comes from the environment.
cat >"$work/orinari.toml" <<TOML
[server]
shutdown_timeout_ms = 20000
# Every request comes from HAProxy's one address.
max_connections_per_ip = 20000

[storage]
url = "$db_url"

[cluster]
redis_url = "redis://127.0.0.1:$redis_port"

# One client (the load generator) sends everything: limits out of the way.
[limits]
requests_per_minute = 100000000
tokens_per_minute = 2000000000
max_concurrent_per_key = 100000
max_concurrent_per_model = 100000
queue_depth = 100000

[guard]
prompt_injection = "off"

# The leader probes one target (the test's own) and notifies its webhook.
[status]
builtin_checks = false
[[status.checks]]
name = "Probe target"
url = "http://127.0.0.1:$watcher/probe"
interval = "15s"   # cluster.py PROBE_INTERVAL_S
timeout = "2s"
failure_threshold = 1
success_threshold = 1
[[status.webhooks]]
url = "http://127.0.0.1:$watcher/hook"

[[models]]
name = "fake"
[[models.backends]]
name = "up1"
provider = "openai"
base_url = "http://127.0.0.1:$up1/v1"
[[models.backends]]
name = "up2"
provider = "openai"
base_url = "http://127.0.0.1:$up2/v1"
TOML

# The instances run a copy of the binary, so the rolling upgrade can put a
# new file in its place as a deploy would.
cp "$bin" "$work/bin/orinari"

# instance.sh NAME: start one instance in the background (README "Run a
# cluster" runs the same command).
cat >"$work/instance.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
case "\$1" in o1) port=$p1 ;; o2) port=$p2 ;; o3) port=$p3 ;; *) exit 2 ;; esac
cd "$work"
ORINARI_SERVER_LISTEN="127.0.0.1:\$port" ORINARI_ADMIN_TOKEN=cluster-admin \\
ORINARI_LOG="warn,orinari=info,orinari_status=info" \\
    "$work/bin/orinari" serve --config "$work/orinari.toml" >>"$work/\$1.log" 2>&1 &
echo \$! >"$work/\$1.pid"
SH
# haproxy.sh: HAProxy in the foreground (-db), its log on stdout.
cat >"$work/haproxy.sh" <<SH
#!/usr/bin/env bash
ORINARI_LB_LISTEN="127.0.0.1:$lb" ORINARI_1="127.0.0.1:$p1" ORINARI_2="127.0.0.1:$p2" ORINARI_3="127.0.0.1:$p3" \\
    haproxy -db -f "$root/deploy/haproxy/haproxy.cfg" >>"$work/haproxy.log" 2>&1 &
echo \$! >"$work/haproxy.pid"
SH

# In the background, so a SIGTERM to this script (a timeout) is handled at
# once, by the cleanup above, rather than after the driver ends.
python3 -u "$here/cluster.py" --work "$work" --lb-port "$lb" --ports "$p1,$p2,$p3" \
    --watcher-port "$watcher" --haproxy-log "$work/haproxy.log" \
    --source-bin "$bin" --instance-bin "$work/bin/orinari" --out "$out/cluster.json" \
    --redis-port "$redis_port" --db-url "$db_url" --psql "$pg_bin/psql" "${full[@]}" &
echo $! >"$work/driver.pid"
wait "$(cat "$work/driver.pid")"

# A panic anywhere is a failure, whatever the counts said.
if grep -l 'panicked' "$work"/o?.log >/dev/null 2>&1; then
    echo "cluster: an instance panicked:" >&2
    grep -h 'panicked' "$work"/o?.log | head -n 5 >&2
    exit 1
fi
echo "cluster: ok (counts in $out/cluster.json)"
