#!/usr/bin/env python3
"""What a response-cache hit costs and saves (bench/cache/run.sh).

For each backend (a pair of models on one server: the same backend with the
exact response cache and without), one request at a time over one
keep-alive connection:

1. misses, paired: request i (a question never asked before) goes to the
   model with the cache and to the model without it, in alternating order;
   the difference is what the cache adds to a miss (the key's SHA-256 over
   the normalised request, the lookup, recording the answer and storing it);
2. hits: each request of step 1 again to the model with the cache, which
   answers it from the cache (checked by the `x-orinari-cache: hit` header).

Whole (non-streamed) chat completions, temperature 0. Prints one table
(milliseconds, client-side, including the Python client's own time, the same
for every row) and the load average before and after.
"""

import argparse
import http.client
import json
import math
import os
import statistics
import sys
import time


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Client:
    def __init__(self, host, port):
        self.conn = http.client.HTTPConnection(host, port, timeout=120)

    def ask(self, model, content, max_tokens):
        body = json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": content}],
                "temperature": 0,
                "max_tokens": max_tokens,
            }
        )
        start = time.perf_counter_ns()
        self.conn.request(
            "POST",
            "/v1/chat/completions",
            body=body,
            headers={"content-type": "application/json"},
        )
        r = self.conn.getresponse()
        data = r.read()
        elapsed = (time.perf_counter_ns() - start) / 1e6
        if r.status != 200:
            sys.exit(f"{model}: HTTP {r.status}: {data[:300]!r}")
        return elapsed, r.getheader("x-orinari-cache") == "hit"


def pct(xs, p):
    """The p quantile (nearest rank)."""
    s = sorted(xs)
    return s[min(len(s), max(1, math.ceil(p * len(s)))) - 1]


def row(backend, what, xs):
    return (
        f"| {backend} | {what} | {len(xs)} | {pct(xs, 0.5):.2f} | {pct(xs, 0.9):.2f} "
        f"| {pct(xs, 0.99):.2f} | {statistics.fmean(xs):.2f} |"
    )


def measure(client, backend, cached, plain, pairs, max_tokens, nonce):
    question = "Question {}-{:05d}: in one short sentence, what does an exact response cache do?"
    for i in range(3):  # warm-up: connections, the model's first run
        client.ask(cached, f"warm-up {nonce} {i}", max_tokens)
        client.ask(plain, f"warm-up {nonce} {i}", max_tokens)
    miss_on, miss_off, hit = [], [], []
    for i in range(pairs):
        q = question.format(nonce, i)
        order = [(cached, miss_on), (plain, miss_off)]
        if i % 2:
            order.reverse()
        for model, out in order:
            ms, was_hit = client.ask(model, q, max_tokens)
            if was_hit:
                sys.exit(f"{model}: a new question was a cache hit")
            out.append(ms)
    for i in range(pairs):
        ms, was_hit = client.ask(cached, question.format(nonce, i), max_tokens)
        if not was_hit:
            sys.exit(f"{cached}: a repeated question was not a cache hit")
        hit.append(ms)
    diffs = [a - b for a, b in zip(miss_on, miss_off)]
    rows = [
        row(backend, "miss, cache off", miss_off),
        row(backend, "miss, cache on", miss_on),
        row(backend, "hit", hit),
    ]
    summary = (
        f"{backend}: a hit takes {pct(hit, 0.5) / pct(miss_on, 0.5):.3f}x a miss's p50 "
        f"({pct(miss_on, 0.5) / pct(hit, 0.5):.1f}x faster); the cache adds "
        f"{statistics.median(diffs) * 1000:+.0f} us to a miss (median of {pairs} paired "
        f"differences, quartiles {pct(diffs, 0.25) * 1000:+.0f} / {pct(diffs, 0.75) * 1000:+.0f} us; "
        f"p50 on/off {pct(miss_on, 0.5) / pct(miss_off, 0.5):.3f}x)"
    )
    return rows, summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=19702)
    ap.add_argument("--upstream-pairs", type=int, default=2000)
    ap.add_argument("--model-pairs", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    client = Client("127.0.0.1", args.port)
    nonce = os.urandom(3).hex()
    before = load()
    rows, summaries = [], []
    for backend, cached, plain, pairs in [
        ("fake upstream", "upstream-cache", "upstream", args.upstream_pairs),
        ("embedded", "small-cache", "small", args.model_pairs),
    ]:
        if pairs <= 0:
            continue
        r, s = measure(client, backend, cached, plain, pairs, args.max_tokens, nonce)
        rows += r
        summaries.append(s)
    after = load()
    print("| backend | request | n | p50 ms | p90 ms | p99 ms | mean ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print()
    for s in summaries:
        print(s)
    print(f"load average before: {before}; after: {after}")


if __name__ == "__main__":
    main()
