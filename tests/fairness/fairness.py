"""Fairness over HTTP (issue #23 item 5).

A real `orinari serve` in front of the fake upstream with a fixed latency,
so its capacity is known: `max_concurrent_per_model` answers at once, each
taking the upstream's latency. Two API keys:

  light  sends at a fixed rate, half its fair share (half the capacity
         is its share; asking for less leaves room for a loaded CI
         machine, where every answer takes longer), whether or not its
         earlier requests are answered (open loop)
  flood  30 clients, each sending again as soon as it is answered (after
         250 ms when refused): ten times its share and more (the report
         says how many times), keeping the model's queue overflowing

First `light` runs alone (its latency unloaded), then both together. Under
the flood every `light` request must be answered 200 (none shed: it gets
all it asks for, which is within its share), and its p99 latency must stay
within its unloaded p99 plus two grants of the queue (a turn of the
round-robin: 2 x latency / slots) plus 1.5 s of slack (first come,
first served would add 4 s); `flood` must have been shed (503 with
Retry-After) and still get most of the capacity `light` left (the server
stays busy). Prints the counts and latencies as JSON.

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

# A long service time next to the gateway's own work, so that a loaded
# machine (CI runs on 2 busy cores) changes the capacity little.
LATENCY_S = 1.0         # the upstream's fixed latency: one answer's service time
SLOTS = 4               # max_concurrent_per_model
QUEUE = 16              # queue_depth: a first-come-first-served queue would
                        # keep `light` waiting QUEUE / CAPACITY = 4 s
CAPACITY = SLOTS / LATENCY_S  # answers per second
SHARE = CAPACITY / 2
LIGHT_RATE = SHARE / 2  # requests per second, open loop
FLOOD_CLIENTS = 30

failures = []


def check(name, ok, detail=""):
    print(f"fairness: {'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(name)


def run_clients(url, key, clients, seconds, results, backoff=0.25):
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


def run_open_loop(url, key, rate, seconds, results):
    """One request every 1/rate s, each on its own thread."""
    body = {"model": "fake-gpt", "messages": [{"role": "user", "content": "Say hello."}]}

    def one():
        r = request("POST", url + "/v1/chat/completions", body,
                    headers={"authorization": f"Bearer {key}"}, timeout=30)
        results.append((r.status, r.seconds, "retry-after" in r.headers))

    def schedule():
        start = time.monotonic()
        threads = []
        n = 0
        while n < int(rate * seconds):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = threading.Thread(target=one)
            t.start()
            threads.append(t)
            n += 1
        for t in threads:
            t.join()

    t = threading.Thread(target=schedule)
    t.start()
    return [t]


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

        alone_s = max(8.0, SECONDS / 4)
        alone = []
        for t in run_open_loop(srv.url, keys["light"], LIGHT_RATE, alone_s, alone):
            t.join()
        base = summary(alone, alone_s)

        light, flood = [], []
        ts = run_clients(srv.url, keys["flood"], FLOOD_CLIENTS, SECONDS + 2, flood)
        time.sleep(2)  # the flood fills the queue first
        ts += run_open_loop(srv.url, keys["light"], LIGHT_RATE, SECONDS, light)
        for t in ts:
            t.join()
        under = summary(light, SECONDS)
        fl = summary(flood, SECONDS + 2)
        fl["offered_times_share"] = round(fl["requests"] / (SECONDS + 2) / SHARE, 1)

        report = {"capacity_per_s": CAPACITY, "share_per_s": SHARE, "light_sends_per_s": LIGHT_RATE,
                  "flood_clients": FLOOD_CLIENTS, "slots": SLOTS, "queue_depth": QUEUE, "upstream_latency_ms": LATENCY_S * 1000,
                  "light_alone": base, "light_under_flood": under, "flood": fl, "seconds": SECONDS}
        print("fairness: " + json.dumps(report), flush=True)

        check("light: alone, every request answered", base["answered_200"] == base["requests"] > 0,
              f"{base['answered_200']}/{base['requests']}")
        check("flood: the queue overflowed (503 with Retry-After): the server was overloaded",
              fl["refused_503"] > 0 and fl["refused_503_with_retry_after"] == fl["refused_503"]
              and fl["offered_times_share"] >= 10,
              f"{fl['refused_503']} refused of {fl['requests']}, {fl['offered_times_share']} x its share")
        check("light: under the flood, no request refused", under["answered_200"] == under["requests"] > 0,
              f"{under['answered_200']}/{under['requests']}, {under['refused_503']} refused")
        check("light: under the flood, everything it asked for (within its share) answered",
              under["answered_200"] >= int(LIGHT_RATE * SECONDS),
              f"{under['rate_per_s']}/s answered, {LIGHT_RATE}/s sent, share {SHARE}/s")
        bound_ms = base["p99_ms"] + 2 * LATENCY_S / SLOTS * 1000 + 1500
        check("light: under the flood, p99 within its unloaded p99 + a turn of the queue + 1.5 s",
              under["p99_ms"] is not None and under["p99_ms"] <= bound_ms,
              f"p99 {under['p99_ms']} ms vs bound {bound_ms:.0f} ms (alone p99 {base['p99_ms']} ms)")
        leftover = CAPACITY - under["rate_per_s"]
        check("flood: got the capacity light left (the server stayed busy)",
              fl["rate_per_s"] >= 0.5 * leftover, f"{fl['rate_per_s']}/s of {leftover:.1f}/s left")
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
