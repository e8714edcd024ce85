"""Fairness over HTTP (issue #23 item 5).

A real `orinari serve` in front of the fake upstream with a fixed latency,
so its capacity is known: `max_concurrent_per_model` answers at once, each
taking the upstream's latency. Two API keys:

  light  2 clients, one request after another: it asks for at most its
         fair share (half the capacity)
  flood  10 times as many clients, each sending again as soon as it is
         answered (after 100 ms when refused): it asks for ten times its
         share and keeps the model's queue overflowing

First `light` runs alone (its demand and latency unloaded), then both run
together. Under the flood `light` must still complete at least 75 % of what
it asked for alone (capped at its share), with no request refused, and its
p99 latency within its unloaded p99 plus two upstream latencies (a turn of
the round-robin queue) plus 0.5 s; `flood` must have been shed (503 with
Retry-After) and still get the capacity `light` left (the server stays
busy). Prints the counts and latencies as JSON.

Usage: fairness.py BINARY FAKE_UPSTREAM_BINARY WORKDIR SECONDS
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import FakeUpstream, Server, exit_on_sigterm, percentile, request  # noqa: E402

BIN, FAKE, WORK, SECONDS = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

LATENCY_S = 0.25        # the upstream's fixed latency: one answer's service time
SLOTS = 4               # max_concurrent_per_model
QUEUE = 8               # queue_depth
CAPACITY = SLOTS / LATENCY_S  # answers per second
SHARE = CAPACITY / 2
LIGHT_CLIENTS = 2
FLOOD_CLIENTS = 10 * LIGHT_CLIENTS

failures = []


def check(name, ok, detail=""):
    print(f"fairness: {'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(name)


def run_clients(url, key, clients, seconds, results, backoff=0.1):
    stop_at = time.monotonic() + seconds
    body = {"model": "fake-gpt", "messages": [{"role": "user", "content": "Say hello."}]}

    def client():
        while time.monotonic() < stop_at:
            r = request("POST", url + "/v1/chat/completions", body,
                        headers={"authorization": f"Bearer {key}"}, timeout=30)
            results.append((r.status, r.seconds, "retry-after" in r.headers))
            if r.status != 200:
                time.sleep(backoff)

    ts = [threading.Thread(target=client) for _ in range(clients)]
    for t in ts:
        t.start()
    return ts


def summary(results, seconds):
    ok = [s for st, s, _ in results if st == 200]
    return {
        "requests": len(results),
        "answered_200": len(ok),
        "refused_503": sum(1 for st, _, _ in results if st == 503),
        "refused_503_with_retry_after": sum(1 for st, _, ra in results if st == 503 and ra),
        "other": sum(1 for st, _, _ in results if st not in (200, 503)),
        "rate_per_s": round(len(ok) / seconds, 2),
        "p50_ms": round(percentile(ok, 50) * 1000, 1) if ok else None,
        "p99_ms": round(percentile(ok, 99) * 1000, 1) if ok else None,
    }


def main():
    exit_on_sigterm()
    fake = FakeUpstream(FAKE, ["--latency-ms", str(int(LATENCY_S * 1000)), "--tokens", "8",
                               "--threads", "2"]).start()
    config = f"""
[auth]
required = true

[limits]
requests_per_minute = 1000000
tokens_per_minute = 1000000000
max_concurrent_per_key = 16
max_concurrent_per_model = {SLOTS}
queue_depth = {QUEUE}
queue_timeout_ms = 10000

[[models]]
name = "fake-gpt"
[[models.backends]]
name = "fake"
provider = "openai"
base_url = "http://127.0.0.1:{fake.port}/v1"
"""
    srv = Server(BIN, os.path.join(WORK, "fairness"), config, label="fairness")
    status = 1
    try:
        srv.start()
        keys = {}
        for name in ("light", "flood"):
            r = srv.admin("POST", "/admin/v1/keys", {"name": name})
            if r.status not in (200, 201):
                raise RuntimeError(f"creating key {name}: {r}")
            keys[name] = r.json()["key"]
        # Warm up the upstream pool.
        for _ in range(3):
            srv.chat("fake-gpt", key=keys["light"])

        alone_s = max(5.0, SECONDS / 4)
        alone = []
        for t in run_clients(srv.url, keys["light"], LIGHT_CLIENTS, alone_s, alone):
            t.join()
        base = summary(alone, alone_s)

        light, flood = [], []
        ts = run_clients(srv.url, keys["flood"], FLOOD_CLIENTS, SECONDS + 2, flood)
        time.sleep(2)  # the flood fills the queue first
        ts += run_clients(srv.url, keys["light"], LIGHT_CLIENTS, SECONDS, light)
        for t in ts:
            t.join()
        under = summary(light, SECONDS)
        fl = summary(flood, SECONDS + 2)

        report = {"capacity_per_s": CAPACITY, "share_per_s": SHARE, "upstream_latency_ms": LATENCY_S * 1000,
                  "light_alone": base, "light_under_flood": under, "flood": fl, "seconds": SECONDS}
        print("fairness: " + json.dumps(report), flush=True)

        expected = min(SHARE, base["rate_per_s"])
        check("light: alone, every request answered", base["answered_200"] == base["requests"] > 0,
              f"{base['answered_200']}/{base['requests']}")
        check("flood: the queue overflowed (503 with Retry-After): the server was overloaded",
              fl["refused_503"] > 0 and fl["refused_503_with_retry_after"] == fl["refused_503"],
              f"{fl['refused_503']} refused of {fl['requests']}")
        check("light: under the flood, no request refused", under["answered_200"] == under["requests"] > 0,
              f"{under['answered_200']}/{under['requests']}, {under['refused_503']} refused")
        check("light: under the flood, at least 75 % of its expected share",
              under["rate_per_s"] >= 0.75 * expected,
              f"{under['rate_per_s']}/s vs expected {expected:.2f}/s (share {SHARE}/s, alone {base['rate_per_s']}/s)")
        bound_ms = base["p99_ms"] + 2 * LATENCY_S * 1000 + 500
        check("light: under the flood, p99 within its unloaded p99 + two upstream latencies + 0.5 s",
              under["p99_ms"] is not None and under["p99_ms"] <= bound_ms,
              f"p99 {under['p99_ms']} ms vs bound {bound_ms:.0f} ms (alone p99 {base['p99_ms']} ms)")
        leftover = CAPACITY - under["rate_per_s"]
        check("flood: got the capacity light left (the server stayed busy)",
              fl["rate_per_s"] >= 0.6 * leftover, f"{fl['rate_per_s']}/s of {leftover:.1f}/s left")
        code = srv.stop()
        check("the server drained and exited 0 on SIGTERM", code == 0, f"exit {code}")
        status = 1 if failures else 0
    except Exception as e:  # noqa: BLE001 - report, clean up, fail
        check(f"stage aborted: {type(e).__name__}: {e}", False)
        print(srv.log_tail(30), file=sys.stderr)
    finally:
        srv.kill()
        fake.stop()
    print(f"fairness: {'passed' if status == 0 else 'FAILED: ' + '; '.join(failures)}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
