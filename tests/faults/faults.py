"""Faults between ORINARI and what it depends on (issue #23 item 3).

A real `orinari serve` talks to the fake model upstream, to PostgreSQL and
to Redis, each through its own fault-injecting proxy (faultproxy.py). One
fault at a time is injected and the server's answers are judged:

  upstream    latency under / over the first-token deadline, half-open
              connections, resets of the pooled connections, truncated
              answers, a bandwidth limit: every request is answered within
              its deadline (+ slack), the breaker opens and closes again,
              pooled connections are replaced
  postgres    latency, resets of the pooled connections, half-open
              connections (blackhole), truncated replies: writes are
              answered within their deadline (an error, never a hang),
              readiness says degraded, what needs no store keeps serving,
              writes work again after the fault, and every write the
              client saw acknowledged is in the database
  redis       half-open, latency over the limiter's timeout, resets: chat
              requests keep being answered (local fallback) and the shared
              limiter is used again afterwards
  disk        SQLite on a full tmpfs and on a read-only remount: writes get
              a clear error, reads and chat keep serving, writes work once
              space (or write access) is back; a read-only data directory
              at start-up is refused with a message naming it

Prints one line per check and a summary with the counts; exits 1 if any
check failed.

Usage: faults.py BINARY FAKE_UPSTREAM_BINARY WORKDIR [--long]
"""

import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from faultproxy import FaultProxy  # noqa: E402
from harness import FakeUpstream, Server, exit_on_sigterm, free_port, percentile, wait_for  # noqa: E402

BIN, FAKE, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
LONG = "--long" in sys.argv
ROUNDS = 3 if LONG else 1

# The deadlines the server is configured with below, and the slack a loaded
# 2-core CI machine gets on top of each (a hang is minutes, not seconds).
FIRST_TOKEN_S = 2.0
TOTAL_S = 6.0
CONNECT_S = 1.0
SLACK_S = 5.0
# Active health checks every 60 s (a failed one takes the backend out until
# the next passes): rare enough that the breaker is what the faults meet.
HEALTH_S = 60
# The store: the pool's acquire timeout (5 s) and the per-query deadline.
STORE_DEADLINE_S = 10.0

failures = []
counts = {"checks": 0, "requests": 0, "acknowledged_writes": 0}


def check(name, ok, detail=""):
    counts["checks"] += 1
    print(f"faults: {'ok  ' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""), flush=True)
    if not ok:
        failures.append(name)
    return ok


def pg(sql, db):
    r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-d", db, "-tAc", sql],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"psql: {r.stderr.strip()}")
    return r.stdout.strip()


def redis_cli(port, *args):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def backend(srv):
    r = srv.admin("GET", "/admin/v1/models/fake-gpt", timeout=10)
    j = r.json() or {}
    backs = j.get("backends") or []
    return backs[0] if backs else {}


def circuit(srv):
    return backend(srv).get("circuit")


def eventually(fn, timeout, every=0.5):
    """Whether `fn()` becomes true within `timeout` seconds."""
    try:
        wait_for("condition", fn, timeout, every)
        return True
    except AssertionError:
        return False


def chat_ok(srv, stream=False):
    r = srv.chat("fake-gpt", stream=stream, timeout=TOTAL_S + SLACK_S + 10)
    counts["requests"] += 1
    if stream:
        return r.status == 200 and "data: [DONE]" in r.body and '"error"' not in r.body
    return r.status == 200


def healthy_again(srv, what):
    """Wait until the upstream model answers again (breaker closed, and its
    active health check passed: one that failed during a fault keeps the
    backend out until the next one, up to HEALTH_S later)."""
    try:
        wait_for(f"{what}: chat answered again", lambda: chat_ok(srv), HEALTH_S + 15, every=0.5)
        wait_for(f"{what}: circuit closed", lambda: circuit(srv) == "closed", 30, every=0.5)
        return True
    except AssertionError as e:
        check(str(e), False)
        return False


# -- upstream ---------------------------------------------------------------

def upstream_faults(srv, proxy):
    base = [chat_ok(srv, stream=i % 2 == 1) for i in range(6)]
    check("upstream: clean link, 6 whole and streamed answers", all(base))

    proxy.set(latency_ms=200)
    rs = [srv.chat("fake-gpt", timeout=TOTAL_S + SLACK_S) for _ in range(3)]
    counts["requests"] += 3
    check("upstream: 200 ms latency under the deadline: answered",
          all(r.status == 200 for r in rs), f"{[r.status for r in rs]}, worst {max(r.seconds for r in rs):.2f}s")

    # Slower than every deadline: a stream must time out at its first-token
    # deadline, a whole answer at the total one (it may fail over at any
    # point until its last token), neither before.
    proxy.set(latency_ms=int((TOTAL_S + 2) * 1000))
    st = srv.chat("fake-gpt", stream=True, timeout=60)
    whole = srv.chat("fake-gpt", timeout=60)
    counts["requests"] += 2
    check("upstream: latency over the deadlines: a stream gets 504 at its first-token deadline",
          st.status == 504 and FIRST_TOKEN_S - 0.1 <= st.seconds < FIRST_TOKEN_S + SLACK_S,
          f"{st.status} in {st.seconds:.2f}s, deadline {FIRST_TOKEN_S}s")
    check("upstream: latency over the deadlines: a whole answer gets 504 at the total deadline",
          whole.status == 504 and TOTAL_S - 0.1 <= whole.seconds < TOTAL_S + SLACK_S,
          f"{whole.status} in {whole.seconds:.2f}s, deadline {TOTAL_S}s")
    proxy.set()
    healthy_again(srv, "after latency")

    # Half-open: the link goes dead under the pooled connections and new
    # ones are accepted but never answered.
    before = proxy.stats()["forwarded"]
    proxy.set(blackhole=True)
    rs = []
    for _ in range(4):
        rs.append(srv.chat("fake-gpt", timeout=60))
    counts["requests"] += 4
    check("upstream: half-open connections: every request answered (5xx) within its deadline",
          all(r.status in (502, 503, 504) and r.seconds < TOTAL_S + SLACK_S for r in rs),
          ", ".join(f"{r.status} in {r.seconds:.2f}s" for r in rs))
    b = backend(srv)
    check("upstream: half-open: the backend was taken out (breaker open, or its health check failed)",
          b.get("circuit") == "open" or b.get("up") is False, f"circuit {b.get('circuit')}, up {b.get('up')}")
    r = srv.chat("fake-gpt", timeout=60)
    counts["requests"] += 1
    check("upstream: while out, refused at once", r.status in (502, 503) and r.seconds < SLACK_S,
          f"{r.status} in {r.seconds:.2f}s")
    proxy.set()
    t0 = time.monotonic()
    closed = healthy_again(srv, "after half-open")
    check("upstream: back in once the link was back", closed, f"{time.monotonic() - t0:.1f}s")
    after = proxy.stats()["forwarded"]
    check("upstream: new connections replaced the half-open ones", after > before, f"{before} -> {after}")

    # The breaker itself: pooled connections reset and new ones refused, so
    # three requests fail at once (failure_threshold 3) and it opens; it
    # refuses without trying while open, and one trial closes it open_ms
    # after the link is back.
    proxy.set(refuse=True)
    proxy.reset_all()
    rs = [srv.chat("fake-gpt", timeout=60) for _ in range(3)]
    counts["requests"] += 3
    state = circuit(srv)
    tried = proxy.stats()["accepted"]
    r = srv.chat("fake-gpt", timeout=60)
    counts["requests"] += 1
    check("upstream: refused connections: 3 failures (502 at once) open the breaker",
          all(r.status == 502 and r.seconds < SLACK_S for r in rs) and state == "open",
          ", ".join(f"{r.status} in {r.seconds:.2f}s" for r in rs) + f"; circuit {state}")
    check("upstream: while open, refused at once (503)",
          r.status == 503 and r.seconds < SLACK_S,
          f"{r.status} in {r.seconds:.2f}s; connections tried meanwhile {proxy.stats()['accepted'] - tried}")
    proxy.set()
    t0 = time.monotonic()
    closed = healthy_again(srv, "after refusals")
    check("upstream: the breaker closed again (a trial after open_ms 2 s)", closed,
          f"{time.monotonic() - t0:.1f}s after the link was back")

    # Resets of every pooled connection between requests.
    resets_ok = 0
    for _ in range(5 * ROUNDS):
        proxy.reset_all()
        time.sleep(0.3)
        resets_ok += chat_ok(srv)
    check("upstream: pooled connections reset between requests: every next request answered",
          resets_ok == 5 * ROUNDS, f"{resets_ok}/{5 * ROUNDS}")

    # A reset in the middle of streams (a thin link keeps them going): each
    # ends with an error event or a 5xx, never a hang.
    proxy.set(bandwidth_bps=1500)
    results = []

    def one():
        results.append(srv.chat("fake-gpt", stream=True, timeout=60))

    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    time.sleep(1.0)
    proxy.reset_all()
    for t in ts:
        t.join()
    proxy.set()
    counts["requests"] += 4
    ended = all(r.status in (502, 503, 504) or (r.status == 200 and "data: [DONE]" in r.body)
                for r in results)
    cut = sum(1 for r in results if r.status == 200 and '"error"' in r.body and "data: [DONE]" in r.body)
    check("upstream: reset mid-stream: every stream ended (error event then [DONE], or 5xx), none hung",
          ended and cut >= 1 and all(r.seconds < TOTAL_S + SLACK_S for r in results),
          f"{cut} cut mid-stream; " + ", ".join(f"{r.status} in {r.seconds:.2f}s" for r in results))
    healthy_again(srv, "after mid-stream reset")

    # Truncated answers: the upstream's reply is cut after 100 bytes.
    proxy.set(truncate_after=100)
    rs = [srv.chat("fake-gpt", stream=s, timeout=60) for s in (False, True, False)]
    counts["requests"] += 3
    good = all((r.status in (502, 503, 504)) or (r.status == 200 and "event: error" in r.body
                                                  and "data: [DONE]" in r.body) for r in rs)
    check("upstream: truncated answers: 502 or a stream error event, within the deadline",
          good and all(r.seconds < TOTAL_S + SLACK_S for r in rs),
          ", ".join(f"{r.status} in {r.seconds:.2f}s" for r in rs))
    proxy.set()
    healthy_again(srv, "after truncation")

    # A thin link: 4 KB/s is slow but inside the deadline.
    proxy.set(bandwidth_bps=4000)
    rs = [srv.chat("fake-gpt", stream=s, timeout=60) for s in (False, True)]
    counts["requests"] += 2
    check("upstream: 4 KB/s link: answered, within the total deadline",
          all(r.status == 200 and r.seconds < TOTAL_S + SLACK_S for r in rs),
          ", ".join(f"{r.status} in {r.seconds:.2f}s" for r in rs))
    proxy.set()

    # The embedded pages and the model list never needed the upstream.
    check("upstream: /healthz and /v1/models served throughout",
          srv.get("/healthz").status == 200 and srv.get("/v1/models").status == 200)


# -- PostgreSQL -------------------------------------------------------------

acked = []  # key ids the client saw acknowledged
write_no = [0]


def write(srv, timeout=STORE_DEADLINE_S + SLACK_S + 20):
    write_no[0] += 1
    r = srv.admin("POST", "/admin/v1/keys", {"name": f"faults-{write_no[0]}"}, timeout=timeout)
    if r.status in (200, 201):
        j = r.json() or {}
        if j.get("id") is not None:
            acked.append(str(j["id"]))
            counts["acknowledged_writes"] += 1
    return r


def postgres_faults(srv, proxy, db):
    rs = [write(srv) for _ in range(5)]
    check("postgres: clean link, 5 writes acknowledged", all(r.status in (200, 201) for r in rs),
          f"{[r.status for r in rs]}")

    proxy.set(latency_ms=100)
    rs = [write(srv) for _ in range(3)]
    check("postgres: 100 ms latency: writes acknowledged", all(r.status in (200, 201) for r in rs),
          f"worst {max(r.seconds for r in rs):.2f}s")
    proxy.set()

    ok = 0
    before = proxy.stats()["forwarded"]
    for _ in range(4 * ROUNDS):
        proxy.reset_all()
        time.sleep(0.2)
        r = write(srv)
        ok += r.status in (200, 201)
    check("postgres: pooled connections reset: the next write is acknowledged on a new connection",
          ok == 4 * ROUNDS and proxy.stats()["forwarded"] > before,
          f"{ok}/{4 * ROUNDS}, connections {before} -> {proxy.stats()['forwarded']}")

    # Half-open: the database stops answering.
    proxy.set(blackhole=True)
    t0 = time.monotonic()
    results = []

    def w():
        results.append(write(srv))

    ts = [threading.Thread(target=w) for _ in range(3)]
    for t in ts:
        t.start()
    ready = srv.get("/readyz", timeout=30)
    health = srv.get("/healthz", timeout=30)
    models = srv.get("/v1/models", timeout=30)
    chat = chat_ok(srv)
    for t in ts:
        t.join()
    check("postgres: half-open: writes answered with an error within the store deadline",
          all(r.status is not None and r.status >= 500 and r.seconds < STORE_DEADLINE_S + SLACK_S
              for r in results),
          ", ".join(f"{r.status} in {r.seconds:.2f}s" for r in results))
    msg = (results[0].json() or {}).get("error", {}).get("message", "") if results else ""
    check("postgres: the error says what failed", "stor" in msg.lower() or "database" in msg.lower(),
          msg)
    check("postgres: half-open: /readyz says degraded (storage), quickly",
          ready.status == 503 and "storage" in ready.body and ready.seconds < SLACK_S,
          f"{ready.status} in {ready.seconds:.2f}s")
    check("postgres: half-open: /healthz, /v1/models and chat keep serving",
          health.status == 200 and models.status == 200 and chat)
    # More writes while it lasts, so that many pooled connections are stuck
    # in the dead link.
    for _ in range(3):
        write(srv)
    proxy.set()
    t1 = time.monotonic()
    try:
        wait_for("writes acknowledged again", lambda: write(srv, timeout=60).status in (200, 201),
                 STORE_DEADLINE_S * 3, every=0.5)
        recovered = True
    except AssertionError:
        recovered = False
    check("postgres: link back: writes acknowledged again (half-open connections replaced)",
          recovered, f"{time.monotonic() - t1:.1f}s after clearing, {t1 - t0:.1f}s of fault")
    rs = [write(srv) for _ in range(5)]
    check("postgres: link back: the next 5 writes acknowledged", all(r.status in (200, 201) for r in rs),
          f"{[r.status for r in rs]}")
    check("postgres: link back: /readyz ready again", eventually(lambda: srv.get("/readyz").status == 200, 30))

    # Truncated replies on every new connection, and resets while writes run.
    proxy.set(truncate_after=40)
    proxy.reset_all()
    r = write(srv, timeout=60)
    check("postgres: truncated replies: the write fails within its deadline",
          r.status is not None and r.status >= 500 and r.seconds < STORE_DEADLINE_S + SLACK_S,
          f"{r.status} in {r.seconds:.2f}s")
    proxy.set()
    stop = threading.Event()
    statuses = []

    def writer():
        while not stop.is_set():
            statuses.append(write(srv, timeout=60).status)

    ts = [threading.Thread(target=writer) for _ in range(3)]
    for t in ts:
        t.start()
    for _ in range(5 * ROUNDS):
        time.sleep(0.4)
        proxy.reset_all()
    stop.set()
    for t in ts:
        t.join()
    check("postgres: resets while 3 clients write: every write answered",
          None not in statuses, f"{len(statuses)} writes, {sum(s in (200, 201) for s in statuses)} acknowledged")

    # Nothing acknowledged is lost: read the table directly, not through the proxy.
    ids = set(pg("SELECT id FROM api_keys", db).split())
    missing = [i for i in acked if i not in ids]
    check("postgres: every acknowledged write is in the database",
          not missing, f"{len(acked)} acknowledged, {len(missing)} missing")


# -- Redis ------------------------------------------------------------------

def redis_faults(srv, proxy, redis_port):
    rs = [chat_ok(srv) for _ in range(3)]
    shared = redis_cli(redis_port, "--scan", "--pattern", "orinari*")
    check("redis: clean link: answered, the shared limiter holds state in Redis", all(rs) and bool(shared))

    for name, faults in (("half-open", {"blackhole": True}), ("1 s latency", {"latency_ms": 1000}),
                         ("refused", {"refuse": True})):
        proxy.set(**faults)
        proxy.reset_all() if name == "refused" else None
        rs = [srv.chat("fake-gpt", timeout=60) for _ in range(4)]
        counts["requests"] += 4
        check(f"redis: {name}: chat answered (local limits) within the deadline",
              all(r.status == 200 and r.seconds < SLACK_S for r in rs),
              ", ".join(f"{r.status} in {r.seconds:.2f}s" for r in rs))
        proxy.set()
    redis_cli(redis_port, "FLUSHALL")

    def shared_again():
        chat_ok(srv)
        return bool(redis_cli(redis_port, "--scan", "--pattern", "orinari*"))

    try:
        wait_for("shared limiter back", shared_again, 20, every=0.5)
        back = True
    except AssertionError:
        back = False
    check("redis: link back: the shared limiter is used again (a new connection)", back)
    check("redis: the fallback was logged", "Redis unreachable" in srv.log_text())


# -- disk -------------------------------------------------------------------

def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True)


def umount(path):
    subprocess.run(["umount", "-l", path], capture_output=True)


def disk_faults(upstream_port):
    config = f"""
[storage]
url = "sqlite://data/orinari.db"

[[models]]
name = "fake-gpt"
[[models.backends]]
name = "fake"
provider = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"
"""
    env = {"ORINARI_LIMITS_REQUESTS_PER_MINUTE": "1000000"}

    # Full disk.
    work = os.path.join(WORK, "full")
    data = os.path.join(work, "data")
    mount_tmpfs(data, "8m")
    srv = Server(BIN, work, config, env, label="disk-full")
    try:
        srv.start()
        check("disk full: a write works before", write(srv).status in (200, 201))
        filler = os.path.join(data, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        rs = [write(srv, timeout=60) for _ in range(20)]
        failed = [r for r in rs if r.status not in (200, 201)]
        check("disk full: writes fail with 503 storage_unavailable, none hangs",
              failed and all(r.status == 503 and "storage_unavailable" in r.body
                             and r.seconds < STORE_DEADLINE_S + SLACK_S for r in failed),
              f"{len(failed)}/20 failed, statuses {sorted({r.status for r in rs}, key=str)}")
        msgs = sorted({(r.json() or {}).get("error", {}).get("message", "") for r in failed})
        check("disk full: the answers say the disk is full", any("full" in m.lower() for m in msgs),
              " | ".join(msgs))
        check("disk full: the log names the cause", "full" in srv.log_text().lower())
        check("disk full: chat, /healthz, /v1/models and reads keep serving",
              chat_ok(srv) and chat_ok(srv, stream=True) and srv.get("/healthz").status == 200
              and srv.get("/v1/models").status == 200 and srv.admin("GET", "/admin/v1/keys").status == 200)
        os.remove(filler)
        try:
            wait_for("writes back", lambda: write(srv).status in (200, 201), 20, every=0.5)
            check("disk full: space back: writes acknowledged again", True)
        except AssertionError as e:
            check(f"disk full: space back: writes acknowledged again ({e})", False)
        alive = srv.proc.poll() is None
        check("disk full: the server stayed up", alive)
    finally:
        srv.kill()
        umount(data)

    # The data directory turns read-only while running: an ext4 image on a
    # loop device, mounted errors=remount-ro, with a filesystem error
    # triggered through sysfs — the kernel then refuses every write, as
    # after a real disk error. (A plain `mount -o remount,ro` is refused
    # while the database is open for writing.)
    work = os.path.join(WORK, "ro")
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    image = os.path.join(WORK, "ro.img")
    subprocess.run(["truncate", "-s", "32M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", image, data], check=True)
    srv = Server(BIN, work, config, env, label="disk-ro")
    try:
        srv.start()
        check("read-only: a write works before", write(srv).status in (200, 201))
        dev = os.path.basename(subprocess.run(["findmnt", "-n", "-o", "SOURCE", data], capture_output=True,
                                              text=True, check=True).stdout.strip())
        with open(f"/sys/fs/ext4/{dev}/trigger_fs_error", "w") as f:
            f.write("orinari faults test\n")
        rs = [write(srv, timeout=60) for _ in range(3)]
        check("read-only: writes fail with an error answer, none hangs",
              all(r.status is not None and r.status >= 500 and r.seconds < STORE_DEADLINE_S + SLACK_S for r in rs),
              ", ".join(f"{r.status} in {r.seconds:.2f}s" for r in rs))
        msg = (rs[0].json() or {}).get("error", {}).get("message", "")
        check("read-only: the answer says storage cannot be written",
              rs[0].status == 503 and ("read-only" in msg.lower() or "cannot be written" in msg.lower()), msg)
        check("read-only: chat, /healthz, /v1/models and reads keep serving",
              chat_ok(srv) and chat_ok(srv, stream=True) and srv.get("/healthz").status == 200
              and srv.get("/v1/models").status == 200 and srv.admin("GET", "/admin/v1/keys").status == 200)
        check("read-only: the server stayed up", srv.proc.poll() is None)
    finally:
        srv.kill()
        umount(data)

    # Read-only data directory at start-up: refused, and the message names it.
    work = os.path.join(WORK, "ro-start")
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", data], check=True)
    srv = Server(BIN, work, config, env, label="disk-ro-start")
    try:
        started, code = srv.try_start(timeout=30)
        log = srv.log_text()
        check("read-only at start: refused with exit 2 and a message naming the store",
              not started and code == 2 and "orinari.db" in log,
              f"started={started} exit={code} {log.strip().splitlines()[-1] if log.strip() else ''}")
    finally:
        srv.kill()
        umount(data)


def main():
    exit_on_sigterm()
    fake = FakeUpstream(FAKE, ["--tokens", "24"]).start()
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = f"orinari_faults_{os.getpid()}"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
    up_proxy = FaultProxy("127.0.0.1", fake.port, name="upstream").start()
    pg_proxy = FaultProxy("127.0.0.1", 5432, name="postgres").start()
    redis_proxy = FaultProxy("127.0.0.1", redis_port, name="redis").start()
    config = f"""
[storage]
url = "postgres://postgres@127.0.0.1:{pg_proxy.port}/{db}"

[cluster]
redis_url = "redis://127.0.0.1:{redis_proxy.port}"

[[models]]
name = "fake-gpt"
connect_timeout_ms = {int(CONNECT_S * 1000)}
first_token_timeout_ms = {int(FIRST_TOKEN_S * 1000)}
idle_timeout_ms = {int(FIRST_TOKEN_S * 1000)}
total_timeout_ms = {int(TOTAL_S * 1000)}
max_attempts = 1
failure_threshold = 3
open_ms = 2000
# Active health checks out of the way: the passive breaker is what is tested.
health_interval_ms = {HEALTH_S * 1000}
[[models.backends]]
name = "fake"
provider = "openai"
base_url = "http://127.0.0.1:{up_proxy.port}/v1"
"""
    srv = Server(BIN, os.path.join(WORK, "main"), config,
                 {"ORINARI_LIMITS_REQUESTS_PER_MINUTE": "1000000",
                  "ORINARI_LIMITS_TOKENS_PER_MINUTE": "100000000"}, label="faults")
    t0 = time.monotonic()
    try:
        srv.start()
        wait_for("upstream model ready", lambda: srv.get("/readyz").status == 200, 30)
        for _ in range(ROUNDS):
            upstream_faults(srv, up_proxy)
            postgres_faults(srv, pg_proxy, db)
            redis_faults(srv, redis_proxy, redis_port)
        code = srv.stop()
        check("the server drained and exited 0 on SIGTERM", code == 0, f"exit {code}")
        log = srv.log_text()
        check("no panic in the server log", "panicked" not in log)
        disk_faults(fake.port)
    except Exception as e:  # noqa: BLE001 - report, clean up, fail
        check(f"stage aborted: {type(e).__name__}: {e}", False)
        print(srv.log_tail(40), file=sys.stderr)
    finally:
        srv.kill()
        for p in (up_proxy, pg_proxy, redis_proxy):
            p.stop()
        fake.stop()
        redis.kill()
        redis.wait()
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", db],
                       capture_output=True)
    summary = dict(counts, failed=len(failures), seconds=round(time.monotonic() - t0, 1),
                   proxies={"upstream": up_proxy.stats(), "postgres": pg_proxy.stats(),
                            "redis": redis_proxy.stats()})
    print("faults: summary " + json.dumps(summary), flush=True)
    if failures:
        print("faults: FAILED: " + "; ".join(failures), flush=True)
        return 1
    print("faults: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
