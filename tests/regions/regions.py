"""Regions (issue #19 item 5), driven by tests/regions/run.sh.

`orinari serve` runs in region "a" with one backend in each region's
network namespace; the link to region b carries 100 ms each way (the fault
proxy, as there is no netem here). Phases, each with whole answers and
streams, every one of which must succeed:

  both up       every answer from region a's backend (the instance's own
                region is preferred while it is healthy)
  a's backend   killed: answers keep coming, from region b
  a's link      cut as well (the whole region unreachable): still answered
  a restored    link up, backend restarted: traffic returns to region a

The longer way shows in the metrics: no request to region b had its first
token within 160 ms (each crossing waits 100 ms), and the mean time to
first token of each backend is printed. Counts are printed at the end and
written to WORK/regions.json.
"""

import argparse
import json
import re
import subprocess
import sys
import time

from faultproxy import FaultProxy
from harness import Server, wait_for

DELAY_MS = 100
PER_PHASE = 24


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--backend-a", required=True)
    ap.add_argument("--backend-b", required=True)
    ap.add_argument("--fake-a-pid", type=int, required=True)
    ap.add_argument("--link-a", required=True)
    args = ap.parse_args()

    host_b, port_b = args.backend_b.rsplit(":", 1)
    far = FaultProxy(host_b, int(port_b), name="to-region-b").start()
    far.set(latency_ms=DELAY_MS)

    config = f"""
[server]
region = "a"

[limits]
requests_per_minute = 1000000

[[models]]
name = "m"
strategy = "round-robin"
health_interval_ms = 500
[[models.backends]]
name = "a1"
provider = "openai"
base_url = "http://{args.backend_a}/v1"
region = "a"
[[models.backends]]
name = "b1"
provider = "openai"
base_url = "http://127.0.0.1:{far.port}/v1"
region = "b"
"""
    server = Server(args.bin, f"{args.work}/server", config,
                    env={"ORINARI_LOG": "warn"}, label="regions").start(120)
    with open(f"{args.work}/orinari.pid", "w") as f:  # killed by run.sh's trap
        f.write(str(server.proc.pid))
    results = {}
    try:
        wait_for("readiness", lambda: server.get("/readyz").status == 200, 60)
        fake_a = FakeA(args)
        results["both up"] = phase(server, "both up")
        fake_a.kill()
        results["a's backend killed"] = phase(server, "a's backend killed")
        link(args.link_a, "down")
        results["a's link cut"] = phase(server, "a's link cut")
        link(args.link_a, "up")
        fake_a.start()
        results["a restored"] = phase(server, "a restored", settle=True)
        fake_a.kill()
        metrics = server.get("/metrics").body
    finally:
        server.stop()
        far.stop()

    ttft = {b: histogram(metrics, "orinari_model_time_to_first_token_seconds", b)
            for b in ("a1", "b1")}
    summary = {"phases": results, "delay_ms_each_way": DELAY_MS,
               "ttft": {b: {"count": h["count"], "mean_ms": round(h["mean"] * 1000, 1),
                            "within_160ms": h["le"].get("0.16", 0)} for b, h in ttft.items()}}
    with open(f"{args.work}/regions.json", "w") as f:
        json.dump(summary, f, indent=1)
    failures = check(results, ttft)
    print(json.dumps(summary, indent=1))
    if failures:
        print("regions: FAILED\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)
    total = sum(r["sent"] for r in results.values())
    print(f"regions: {total} requests over {len(results)} phases, 0 failed; "
          f"time to first token a1 {summary['ttft']['a1']['mean_ms']} ms, "
          f"b1 {summary['ttft']['b1']['mean_ms']} ms (+{2 * DELAY_MS} ms of link)")


def check(results, ttft):
    failures = []
    for name, r in results.items():
        if r["failed"]:
            failures.append(f"{name}: {r['failed']} of {r['sent']} failed: {r['errors'][:3]}")
    if results["both up"]["by_backend"].get("b1", 0):
        failures.append(f"both up: region b answered {results['both up']['by_backend']['b1']} "
                        "while region a was healthy")
    for name in ("a's backend killed", "a's link cut"):
        if results[name]["by_backend"].get("a1", 0):
            failures.append(f"{name}: region a answered while down")
        if results[name]["by_backend"].get("b1", 0) != results[name]["sent"]:
            failures.append(f"{name}: not every answer came from region b: {results[name]}")
    if results["a restored"]["by_backend"].get("b1", 0):
        failures.append("a restored: traffic did not return to region a")
    if ttft["b1"]["count"] == 0 or ttft["b1"]["le"].get("0.16", 0) != 0:
        failures.append(f"region b's first tokens do not show the link's delay: {ttft['b1']}")
    return failures


def phase(server, name, settle=False):
    """PER_PHASE requests (every third streamed), counted by the backend
    that answered (from the per-backend request counter)."""
    if settle:
        # The restored backend is back once its health check passes (every
        # 500 ms); wait until a probe request lands there.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            before = counts(server)
            status, _ = ask(server, stream=False)
            after = counts(server)
            if status == 200 and after.get("a1", 0) > before.get("a1", 0):
                break
            time.sleep(0.2)
    before = counts(server)
    errors = []
    for i in range(PER_PHASE):
        status, body = ask(server, stream=(i % 3 == 2))
        if status != 200:
            errors.append(f"{status}: {body[:160]}")
    after = counts(server)
    by_backend = {b: after.get(b, 0) - before.get(b, 0) for b in ("a1", "b1")}
    r = {"sent": PER_PHASE, "failed": len(errors), "by_backend": by_backend, "errors": errors}
    print(f"regions: {name}: {PER_PHASE} sent, {len(errors)} failed, "
          f"a1 {by_backend['a1']}, b1 {by_backend['b1']}", file=sys.stderr)
    return r


def link(name, state):
    subprocess.run(["ip", "link", "set", name, state], check=True)


class FakeA:
    """Region a's backend: killed and restarted inside its namespace."""

    def __init__(self, args):
        self.pid = args.fake_a_pid
        self.work = args.work
        self.listen = args.backend_a
        self.fake = args.bin.rsplit("/", 1)[0] + "/orinari-fake-upstream"
        self.ns = subprocess.run(["ip", "netns", "identify", str(self.pid)],
                                 capture_output=True, text=True, check=True).stdout.strip()

    def kill(self):
        subprocess.run(["kill", "-KILL", str(self.pid)], check=False)

    def start(self):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, self.fake, "--listen", self.listen],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = p.pid
        with open(f"{self.work}/fake-a2.pid", "w") as f:
            f.write(str(p.pid))


def ask(server, stream):
    """One chat answer from model m: (status, body); a stream counts only if
    it ends with [DONE] and carries no error event."""
    r = server.chat("m", stream=stream, timeout=60, content="Where are you?")
    if r.status != 200:
        return r.status or 0, r.error or r.body
    if (stream and not r.body.rstrip().endswith("data: [DONE]")) or '"error"' in r.body:
        return 0, r.body[-300:]
    return 200, r.body


def counts(server):
    """Successful model requests per backend of model m."""
    out = {}
    for line in server.get("/metrics").body.splitlines():
        if line.startswith("orinari_model_requests_total{") and 'model="m"' in line \
                and 'outcome="success"' in line:
            b = re.search(r'backend="([^"]+)"', line).group(1)
            out[b] = out.get(b, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


def histogram(text, name, backend):
    h = {"count": 0, "sum": 0.0, "mean": 0.0, "le": {}}
    for line in text.splitlines():
        if not line.startswith(name) or f'backend="{backend}"' not in line or 'model="m"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith(name + "_count"):
            h["count"] = int(value)
        elif line.startswith(name + "_sum"):
            h["sum"] = value
        elif line.startswith(name + "_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            h["le"][le] = int(value)
    h["mean"] = h["sum"] / h["count"] if h["count"] else 0.0
    return h


if __name__ == "__main__":
    main()
