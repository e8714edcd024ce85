#!/usr/bin/env python3
"""The embedded model's inference threads side by side, in one run.

    python3 bench/threads.py [BIN] [--rounds N] [--gen N]

For each setting (candle's own default, i.e. CANDLE_NUM_THREADS from the
physical cores; ORINARI's default, `[server] inference_threads` absent; 1;
2), in turn and for --rounds rounds: start `orinari serve` (BIN, default
target/debug/orinari: the dev profile builds candle and orinari-models at
opt-level 3), then time one streamed greedy answer of --gen tokens to a
~200-token prompt alone, then two at once, while a third client asks
GET /healthz every 20 ms (the server's own threads: does inference starve
them?). Prints a table of medians over rounds and one JSON line per run.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PROSE = ("The harbour town woke slowly. Fishing boats returned with the tide, and the "
         "market filled with voices arguing over prices of cod, crab and mackerel. ")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def stream(base, gen, tag):
    body = json.dumps({
        "model": "orinari-small", "stream": True, "temperature": 0, "max_tokens": gen,
        "messages": [{"role": "user", "content": f"[{tag}] Summarise: " + PROSE * 6}],
    }).encode()
    req = urllib.request.Request(base + "/v1/chat/completions", body,
                                 {"content-type": "application/json"})
    t0 = time.monotonic()
    first = None
    chunks = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            # A chunk with text (the first chunk carries the role and "").
            if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                chunks += 1
                if first is None:
                    first = time.monotonic() - t0
    total = time.monotonic() - t0
    return {"ttft_s": first or total, "total_s": total, "chunks": chunks,
            "gen_tok_s": chunks / max(total - (first or 0), 1e-9)}


def health(base, stop, out):
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            urllib.request.urlopen(base + "/healthz", timeout=10).read()
        except Exception:
            pass
        out.append((time.monotonic() - t0) * 1000)
        time.sleep(0.02)


def run(binary, setting, gen):
    name, threads, env_threads = setting
    port = free_port()
    d = tempfile.mkdtemp(prefix="orinari-threads-")
    cfg = os.path.join(d, "orinari.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{port}"\n')
        if threads is not None:
            f.write(f"inference_threads = {threads}\n")
        f.write(f'[storage]\nurl = "sqlite://{d}/o.db"\n[guard]\nprompt_injection = "off"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("CANDLE_NUM_THREADS", "RAYON_NUM_THREADS")}
    if env_threads is not None:
        env["CANDLE_NUM_THREADS"] = str(env_threads)
    env["ORINARI_ADMIN_TOKEN"] = "bench"
    p = subprocess.Popen([binary, "serve", "--config", cfg], cwd=d, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1).read()
                break
            except Exception:
                time.sleep(0.1)
        with open(f"/proc/{p.pid}/environ", "rb") as f:
            envs = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
        used = envs.get(b"CANDLE_NUM_THREADS", b"unset").decode()
        stream(base, 8, "warm")
        one = stream(base, gen, "one")
        lat = []
        stop = threading.Event()
        h = threading.Thread(target=health, args=(base, stop, lat))
        h.start()
        res = [None, None]
        t0 = time.monotonic()
        ts = [threading.Thread(target=lambda i=i: res.__setitem__(i, stream(base, gen, f"two{i}")))
              for i in range(2)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        wall = time.monotonic() - t0
        stop.set()
        h.join()
        lat.sort()
        return {
            "setting": name, "candle_threads": used,
            "one_ttft_ms": one["ttft_s"] * 1000, "one_gen_tok_s": one["gen_tok_s"],
            "two_ttft_ms": statistics.mean(r["ttft_s"] for r in res) * 1000,
            "two_agg_tok_s": sum(r["chunks"] for r in res) / wall,
            "healthz_p50_ms": lat[len(lat) // 2] if lat else None,
            "healthz_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        }
    finally:
        p.terminate()
        p.wait(timeout=60)


def main():
    args = sys.argv[1:]
    binary = os.path.abspath("target/debug/orinari")
    rounds, gen = 3, 96
    while args:
        a = args.pop(0)
        if a == "--rounds":
            rounds = int(args.pop(0))
        elif a == "--gen":
            gen = int(args.pop(0))
        else:
            binary = os.path.abspath(a)
    settings = [
        # (label, [server] inference_threads, CANDLE_NUM_THREADS in the environment)
        ("candle default (physical cores)", None, os.cpu_count()),
        ("orinari default (cores - 1, min 1)", None, None),
        ("inference_threads = 1", 1, None),
        ("inference_threads = 2", 2, None),
    ]
    rows = {s[0]: [] for s in settings}
    for r in range(rounds):
        for s in settings:
            row = run(binary, s, gen)
            print(json.dumps(row), flush=True)
            rows[s[0]].append(row)
    keys = ["one_ttft_ms", "one_gen_tok_s", "two_ttft_ms", "two_agg_tok_s", "healthz_p50_ms", "healthz_p99_ms"]
    print("\n| setting | threads | 1 req: TTFT ms | 1 req: gen tok/s | 2 req: TTFT ms | 2 req: aggregate tok/s | /healthz p50 / p99 ms under 2 req |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rs in rows.items():
        med = {k: statistics.median(x[k] for x in rs) for k in keys}
        print(f"| {name} | {rs[0]['candle_threads']} | {med['one_ttft_ms']:.0f} | {med['one_gen_tok_s']:.1f} | "
              f"{med['two_ttft_ms']:.0f} | {med['two_agg_tok_s']:.1f} | {med['healthz_p50_ms']:.1f} / {med['healthz_p99_ms']:.1f} |")


if __name__ == "__main__":
    main()
