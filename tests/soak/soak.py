"""Soak (issue #23 item 6): mixed traffic against a real `orinari serve` for
a fixed time, with the process sampled throughout.

Usage: soak.py BASE_URL PID FAKE_CMD FAKE_PORT FAKE_PID LOG SECONDS OUT_DIR

Traffic, from several threads at once: whole answers (embedded model and
an upstream model), streams, streams cancelled after their first chunk,
slow readers, bad requests; every 20 s a configuration reload (SIGHUP);
every 60 s the upstream backend is killed and restarted 5 s later; once,
early in the warm-up, a zero-downtime upgrade (SIGUSR2: the soak follows
the new process). Every 2 s: resident memory, open descriptors and
threads of the serving process, and each kind's latency.

It fails (exit 1) on any unexpected error (an upstream-model request may
fail only while its backend is down, and only with 502/503), when resident
memory after the warm-up grows 5 % or more (an upstream-model request
may fail while its backend is down and for RECOVERY seconds after it is
back: the pool's health check and circuit, 1 s each in run.sh's config,
must see it again), or when descriptors or threads,
measured at rest after the warm-up and again at the end (traffic paused
12 s; pooled connections to the upstream, kept 90 s by design, not
counted), have not returned to that baseline. Writes OUT_DIR/soak.csv and, with matplotlib,
OUT_DIR/soak.png (memory, descriptors and latency over time).
"""

import csv
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

MEMORY_GROWTH_BOUND = 0.05
RELOAD_EVERY = 20.0
BACKEND_KILL_EVERY = 60.0
BACKEND_DOWN_FOR = 5.0
RECOVERY = 3.0
SAMPLE_EVERY = 2.0
# The kinds whose p99 is plotted and written per sample.
PLOTTED = ["whole:fake-gpt", "stream:fake-gpt", "whole:orinari-small"]


class Soak:
    def __init__(self, url, pid, fake_cmd, fake_port, fake_pid, log, seconds):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.pid = pid
        self.fake_cmd = fake_cmd
        self.fake_port = fake_port
        self.log = log
        self.seconds = seconds
        self.warmup = max(30.0, seconds * 0.2)
        self.start = time.time()
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.lock = threading.Lock()
        self.latencies = {}  # kind -> [(t, ms)]
        self.counts = {}  # (kind, outcome) -> n
        self.unexpected = []
        self.backend_down = False
        self.backend_down_until = 0.0
        self.fake_pid = fake_pid
        self.samples = []

    # --- HTTP by hand: every request on a fresh connection -----------------

    def request(self, method, path, body=None, headers=""):
        s = socket.create_connection((self.host, self.port), timeout=60)
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n{headers}\r\n"
        )
        s.sendall(head.encode() + data)
        return s

    @staticmethod
    def read_all(s, pace=0.0, chunk=65536):
        out = b""
        while True:
            part = s.recv(chunk)
            if not part:
                break
            out += part
            if pace:
                time.sleep(pace)
        s.close()
        return out

    @staticmethod
    def body(raw):
        """The body of a whole response, de-chunked."""
        head, _, body = raw.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" not in head.lower():
            return body
        out = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            n = int(size.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out += rest[:n]
            body = rest[n + 2 :]
        return out

    @staticmethod
    def status(raw):
        m = re.match(rb"HTTP/1\.1 (\d{3}) ", raw)
        return int(m.group(1)) if m else 0

    def record(self, kind, t0, outcome, ok):
        ms = (time.time() - t0) * 1000
        with self.lock:
            self.counts[(kind, outcome)] = self.counts.get((kind, outcome), 0) + 1
            if ok:
                self.latencies.setdefault(kind, []).append((t0, ms))

    def fail(self, kind, what):
        with self.lock:
            self.unexpected.append(f"{time.time() - self.start:7.1f}s {kind}: {what}")

    def upstream_excused(self, t0):
        """An upstream-model request that began while its backend was down,
        or within RECOVERY seconds of its return, may fail."""
        return self.backend_down or t0 < self.backend_down_until + RECOVERY

    # --- the kinds of traffic ------------------------------------------------

    def chat(self, model, stream, max_tokens):
        return {
            "model": model,
            "messages": [{"role": "user", "content": random.choice(["Hi", "Name a colour.", "Count to three."])}],
            "max_tokens": max_tokens,
            "stream": stream,
        }

    def whole(self, model):
        kind = f"whole:{model}"
        t0 = time.time()
        try:
            raw = self.read_all(self.request("POST", "/v1/chat/completions", self.chat(model, False, 8)))
            code = self.status(raw)
        except OSError as e:
            code, raw = 0, str(e).encode()
        self.judge(kind, model, t0, code, code == 200, raw)

    def stream(self, model, slow=False):
        kind = f"{'slow' if slow else 'stream'}:{model}"
        t0 = time.time()
        try:
            raw = self.read_all(
                self.request("POST", "/v1/chat/completions", self.chat(model, True, 24)),
                pace=0.05 if slow else 0.0,
                chunk=64 if slow else 65536,
            )
            code = self.status(raw)
            body = self.body(raw)
            ok = code == 200 and body.rstrip().endswith(b"data: [DONE]") and b"event: error" not in body
        except OSError as e:
            code, ok, raw = 0, False, str(e).encode()
        self.judge(kind, model, t0, code, ok, raw)

    def cancel(self):
        kind = "cancel:orinari-small"
        t0 = time.time()
        try:
            s = self.request("POST", "/v1/chat/completions", self.chat("orinari-small", True, 64))
            first = s.recv(4096)
            s.close()
            ok = self.status(first) == 200
        except OSError:
            ok = False
        self.record(kind, t0, "ok" if ok else "failed", ok)
        if not ok:
            self.fail(kind, "no first chunk before the cancel")

    def bad(self):
        cases = [
            ("POST", "/v1/chat/completions", {"model": "orinari-small", "messages": [], "bogus": 1}, "", 400),
            ("POST", "/v1/chat/completions", {"model": "orinari-small"}, "", 400),
            ("GET", "/v1/models", None, "".join(f"X-H{i}: v\r\n" for i in range(100)), 431),
            ("POST", "/v1/chat/completions", {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, "", 404),
        ]
        method, path, body, headers, want = random.choice(cases)
        t0 = time.time()
        try:
            code = self.status(self.read_all(self.request(method, path, body, headers)))
        except OSError:
            code = 0
        self.record("bad", t0, str(code), code == want)
        if code != want:
            self.fail("bad", f"{method} {path}: {code}, expected {want}")

    def judge(self, kind, model, t0, code, ok, raw):
        if ok:
            self.record(kind, t0, "ok", True)
        elif model == "fake-gpt" and code in (0, 502, 503) and self.upstream_excused(t0):
            self.record(kind, t0, f"backend down ({code})", False)
        else:
            self.record(kind, t0, f"failed ({code})", False)
            self.fail(kind, f"status {code}: {raw[-300:]!r}")

    def worker(self, actions):
        while not self.stop.is_set():
            if self.paused.is_set():
                time.sleep(0.05)
                continue
            random.choice(actions)()
            time.sleep(random.uniform(0.0, 0.05))

    # --- operations -----------------------------------------------------------

    def start_fake(self):
        fake = subprocess.Popen(self.fake_cmd.split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.fake_pid = fake.pid
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.fake_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the fake upstream did not start")

    def kill_fake(self):
        self.backend_down = True
        os.kill(self.fake_pid, signal.SIGKILL)
        try:
            os.waitpid(self.fake_pid, 0)
        except ChildProcessError:  # the first one is the script's child
            while os.path.exists(f"/proc/{self.fake_pid}"):
                time.sleep(0.02)

    def upgrade(self):
        before = open(self.log).read().count("upgrade: new process started")
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.time() + 60
        while time.time() < deadline:
            text = open(self.log).read()
            if "upgrade: the new process is ready" in text and text.count("upgrade: new process started") > before:
                line = [l for l in text.splitlines() if "upgrade: new process started" in l][-1]
                new = json.loads(line)["fields"]["pid"]
                old = self.pid
                self.pid = new
                while os.path.exists(f"/proc/{old}") and time.time() < deadline:
                    # A zombie until the shell that started it reaps it.
                    try:
                        if open(f"/proc/{old}/status").read().find("State:\tZ") >= 0:
                            break
                    except OSError:
                        break
                    time.sleep(0.1)
                return new
            time.sleep(0.1)
        raise RuntimeError("the upgrade did not complete within 60 s")

    def upgrade_or_fail(self):
        try:
            self.upgrade()
        except (RuntimeError, OSError, ValueError) as e:
            self.fail("upgrade", str(e))

    def proc(self):
        status = open(f"/proc/{self.pid}/status").read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        return rss, fds, threads

    def upstream_sockets(self):
        """Inodes of the server's TCP connections to the upstream: a pool
        keeps them for 90 s of idleness by design, so they are counted
        apart from the descriptors that must return to their level."""
        inodes = set()
        for table in ("tcp", "tcp6"):
            try:
                lines = open(f"/proc/{self.pid}/net/{table}").read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                cols = line.split()
                if int(cols[2].rsplit(":", 1)[1], 16) == self.fake_port:
                    inodes.add(cols[9])
        return inodes

    def at_rest(self):
        """Descriptors (less pooled upstream connections) and threads with
        no request in flight: traffic paused long enough for every client
        connection to close and for idle blocking-pool threads to end
        (tokio keeps one 10 s)."""
        self.paused.set()
        time.sleep(12)
        pooled = self.upstream_sockets()
        fds = 0
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            fds += not (target.startswith("socket:[") and target[8:-1] in pooled)
        _, _, threads = self.proc()
        self.paused.clear()
        return fds, threads

    def run(self):
        mixes = [
            [lambda: self.whole("orinari-small"), lambda: self.whole("fake-gpt")],
            [lambda: self.stream("orinari-small"), lambda: self.stream("fake-gpt")],
            [self.cancel, lambda: self.stream("fake-gpt", slow=True)],
            [self.bad, lambda: self.whole("fake-gpt"), lambda: self.stream("fake-gpt")],
        ]
        workers = [threading.Thread(target=self.worker, args=(m,), daemon=True) for m in mixes]
        for w in workers:
            w.start()
        next_reload = self.start + RELOAD_EVERY
        next_kill = self.start + BACKEND_KILL_EVERY / 2
        upgraded = False
        baseline = None
        end = self.start + self.seconds
        while time.time() < end:
            now = time.time()
            if not upgraded and now - self.start > 10:
                # In the background: the old process drains its streams
                # while sampling goes on.
                threading.Thread(target=self.upgrade_or_fail, daemon=True).start()
                upgraded = True
            if baseline is None and now - self.start > self.warmup:
                baseline = self.at_rest()
            if now >= next_reload:
                os.kill(self.pid, signal.SIGHUP)
                next_reload += RELOAD_EVERY
            if now >= next_kill and not self.backend_down:
                self.kill_fake()
                next_kill = now + BACKEND_DOWN_FOR
            elif now >= next_kill and self.backend_down:
                self.start_fake()
                self.backend_down = False
                self.backend_down_until = time.time()
                next_kill = now + BACKEND_KILL_EVERY
            rss, fds, threads = self.proc()
            with self.lock:
                window = {k: [ms for t, ms in v if t >= now - SAMPLE_EVERY] for k, v in self.latencies.items()}
            p99 = [round(sorted(v)[int(len(v) * 0.99)], 1) if (v := window.get(k)) else "" for k in PLOTTED]
            self.samples.append((round(now - self.start, 1), round(rss, 1), fds, threads, *p99))
            time.sleep(SAMPLE_EVERY)
        self.stop.set()
        for w in workers:
            w.join(timeout=90)
        if self.backend_down:
            self.start_fake()
            self.backend_down = False
        return baseline, self.at_rest()


def main():
    url, pid, fake_cmd, fake_port, fake_pid, log, seconds, out = sys.argv[1:9]
    soak = Soak(url, int(pid), fake_cmd, int(fake_port), int(fake_pid), log, float(seconds))
    baseline, final = soak.run()
    os.makedirs(out, exist_ok=True)
    # The serving process now (an upgrade replaced the first one), for the
    # script that stops it.
    with open(os.path.join(out, "pid"), "w") as f:
        f.write(str(soak.pid))
    with open(os.path.join(out, "fake.pid"), "w") as f:
        f.write(str(soak.fake_pid))
    with open(os.path.join(out, "soak.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seconds", "rss_mib", "fds", "threads", *(f"p99_ms:{k}" for k in PLOTTED)])
        w.writerows(soak.samples)
    after = [s for s in soak.samples if s[0] >= soak.warmup]
    head = statistics.median(s[1] for s in after[: max(1, len(after) // 10)])
    tail = statistics.median(s[1] for s in after[-max(1, len(after) // 10) :])
    growth = (tail - head) / head
    failures = list(soak.unexpected)
    if growth >= MEMORY_GROWTH_BOUND:
        failures.append(f"resident memory grew {growth:.1%} after the warm-up ({head:.1f} → {tail:.1f} MiB)")
    if final[0] > baseline[0]:
        failures.append(f"open descriptors at rest: {baseline[0]} after the warm-up, {final[0]} at the end")
    if final[1] > baseline[1]:
        failures.append(f"threads at rest: {baseline[1]} after the warm-up, {final[1]} at the end")
    total = sum(soak.counts.values())
    print(f"soak: {soak.seconds:.0f} s, {total} requests:")
    for (kind, outcome), n in sorted(soak.counts.items()):
        lat = sorted(ms for _, ms in soak.latencies.get(kind, [])) if outcome == "ok" else []
        extra = f" p50 {statistics.median(lat):.0f} ms, p99 {lat[int(len(lat) * 0.99)]:.0f} ms" if lat else ""
        print(f"  {kind:24} {outcome:22} {n:6}{extra}")
    print(
        f"soak: memory {head:.1f} → {tail:.1f} MiB after the warm-up ({growth:+.1%}, bound +{MEMORY_GROWTH_BOUND:.0%}); "
        f"at rest: descriptors {baseline[0]} → {final[0]}, threads {baseline[1]} → {final[1]}; "
        f"unexpected errors {len(soak.unexpected)}"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [s[0] for s in soak.samples]
        fig, ax = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
        ax[0].plot(t, [s[1] for s in soak.samples])
        ax[0].set_ylabel("RSS (MiB)")
        ax[1].plot(t, [s[2] for s in soak.samples], label="descriptors")
        ax[1].plot(t, [s[3] for s in soak.samples], label="threads")
        ax[1].legend()
        for i, kind in enumerate(PLOTTED):
            points = [(s[0], s[4 + i]) for s in soak.samples if s[4 + i] != ""]
            ax[2].plot([p[0] for p in points], [p[1] for p in points], label=kind)
        ax[2].set_yscale("log")
        ax[2].set_ylabel("p99 per 2 s (ms)")
        ax[2].legend()
        ax[2].set_xlabel("seconds")
        for a in ax:
            a.axvline(soak.warmup, color="grey", linestyle=":")
        fig.suptitle(f"ORINARI soak, {soak.seconds:.0f} s, {total} requests")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "soak.png"), dpi=90)
        print(f"soak: plot in {os.path.join(out, 'soak.png')}")
    except ImportError:
        pass
    for f in failures:
        print(f"soak: FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
