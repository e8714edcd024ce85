#!/usr/bin/env bash
# Regions (issue #19 item 5): two network namespaces stand for two regions,
# each with a model backend (the in-repo fake upstream) behind its own veth
# link; `orinari serve` runs in region "a" (the root namespace). Answers come
# from region a while it is up; with region a's backend dead and then its
# link cut, answers keep coming from region b, and the longer way shows in
# the time-to-first-token metric of the region-b backend. The kernel here
# has no netem qdisc (CONFIG_NET_SCH_NETEM is off), so the distance to
# region b is tests/faults/faultproxy.py's latency on that link.
#
# Usage: tests/regions/run.sh [BINARY]   (as root: namespaces and links)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
fake="$(dirname "$bin")/orinari-fake-upstream"
if [[ ! -x "$fake" ]]; then
    (cd "$root" && cargo build --quiet -p orinari-fake-upstream --bin orinari-fake-upstream)
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "regions: needs root (network namespaces and veth links)" >&2
    exit 2
fi
command -v ip >/dev/null || (apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null)

# Names unique to this run, so a parallel or leftover run cannot collide.
tag="$$"
ns_a="orn-ra-$tag" ns_b="orn-rb-$tag"
link_a="ora$tag" link_b="orb$tag"
net_a="10.231.1" net_b="10.231.2"
work="$(mktemp -d)"
cleanup() {
    set +e
    for p in "$work"/*.pid; do [[ -f "$p" ]] && kill -KILL "$(cat "$p")" 2>/dev/null; done
    ip link del "$link_a" 2>/dev/null
    ip link del "$link_b" 2>/dev/null
    ip netns pids "$ns_a" 2>/dev/null | xargs -r kill -KILL
    ip netns pids "$ns_b" 2>/dev/null | xargs -r kill -KILL
    ip netns del "$ns_a" 2>/dev/null
    ip netns del "$ns_b" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

region() { # NS LINK NET
    ip netns add "$1"
    ip link add "$2" type veth peer name "$2p"
    ip link set "$2p" netns "$1"
    ip addr add "$3.1/24" dev "$2"
    ip link set "$2" up
    ip netns exec "$1" ip addr add "$3.2/24" dev "$2p"
    ip netns exec "$1" ip link set "$2p" up
    ip netns exec "$1" ip link set lo up
}
region "$ns_a" "$link_a" "$net_a"
region "$ns_b" "$link_b" "$net_b"

# One backend per region, each inside its namespace.
ip netns exec "$ns_a" "$fake" --listen "$net_a.2:9001" >/dev/null 2>&1 &
echo $! >"$work/fake-a.pid"
disown $!
ip netns exec "$ns_b" "$fake" --listen "$net_b.2:9001" >/dev/null 2>&1 &
echo $! >"$work/fake-b.pid"
disown $!

PYTHONPATH="$root/tests/faults:$root/tests/lib" python3 "$here/regions.py" \
    --bin "$bin" --work "$work" \
    --backend-a "$net_a.2:9001" --backend-b "$net_b.2:9001" \
    --fake-a-pid "$(cat "$work/fake-a.pid")" --link-a "$link_a"
