#!/usr/bin/env python3
"""The cluster test's driver (tests/cluster/run.sh prepares the services).

Three `orinari serve` instances on one PostgreSQL and one Redis behind
HAProxy (deploy/haproxy/haproxy.cfg), two fake upstreams as the model's
backends, and a load generator sending whole answers and streams through
HAProxy. HAProxy names the instance that answered in `x-served-by`, and
logs every request with it (and its retries), which attributes every
request, failed ones included. Scenarios, each printing its counts:

1. kill:    one instance SIGKILLed under load. Only requests in flight on
            it may fail (each failure must name it and have started before
            it died); its streams end visibly (a cut, within seconds), none
            hangs; everything else succeeds.
2. upgrade: a rolling upgrade of all three to a new binary file (SIGUSR2,
            one at a time, each handover awaited) under load with streams
            open: 0 failed requests; the rate reached is reported.
3. leader:  the leader (from /admin/v1/instances) SIGKILLed while its probe
            target is down: another instance leads and probes within two
            probe intervals; the down and the recovery are each notified
            exactly once across the failover.
4. services: under load (whole answers, streams, and writers creating API
            keys through the admin API), Redis stopped for a few seconds
            then started, then PostgreSQL stopped (-m fast), held down past
            the store's 5 s connection wait, and started. No chat request
            fails; with Redis down each instance enforces a key's limit
            alone (a key's requests spread over the three get up to three
            times its limit, each instance at most once; logged once,
            counted in orinari_ratelimit_local_fallbacks_total), and with
            Redis back the limit is shared again (once in all); every
            /readyz stays 200 without Redis, flips to 503 without
            PostgreSQL and back to 200 after it; writes get 201 or 503
            `storage_unavailable` with Retry-After, 503 only while the
            store is down; one instance leads again (the lock went with
            its session); every acknowledged key is in the database
            afterwards (read with psql).

Standard library only. Exit status 1 when a scenario's claim fails.
"""

import argparse
import asyncio
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time

ADMIN_TOKEN = "cluster-admin"
NAMES = ["o1", "o2", "o3"]
PROBE_INTERVAL_S = 15.0  # the check's interval in run.sh's config
WHOLE = json.dumps({"model": "fake", "messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM = json.dumps(
    {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
).encode()
REQUEST_TIMEOUT_S = 30.0


def now():
    return time.monotonic()


class Failed(Exception):
    pass


# --------------------------------------------------------------------------
# Processes


class Cluster:
    def __init__(self, work, lb_port, ports):
        self.work = work
        self.lb_port = lb_port
        self.ports = dict(zip(NAMES, ports))

    def log(self, name):
        return os.path.join(self.work, f"{name}.log")

    def pid(self, name):
        with open(os.path.join(self.work, f"{name}.pid")) as f:
            return int(f.read().strip())

    def set_pid(self, name, pid):
        with open(os.path.join(self.work, f"{name}.pid"), "w") as f:
            f.write(f"{pid}\n")

    def start(self, name):
        subprocess.run(["bash", os.path.join(self.work, "instance.sh"), name], check=True)

    def start_haproxy(self):
        subprocess.run(["bash", os.path.join(self.work, "haproxy.sh")], check=True)

    async def wait_ready(self, name, deadline_s=90):
        until = now() + deadline_s
        while now() < until:
            try:
                status, _, _ = await http("127.0.0.1", self.ports[name], "GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise Failed(f"{name} was not ready within {deadline_s} s:\n" + tail(self.log(name)))

    async def instances(self, name):
        status, _, body = await http(
            "127.0.0.1",
            self.ports[name],
            "GET",
            "/admin/v1/instances",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        if status != 200:
            raise Failed(f"/admin/v1/instances on {name}: {status} {body[:200]!r}")
        return json.loads(body)

    def name_of_port(self, port):
        for n, p in self.ports.items():
            if p == port:
                return n
        return None


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def kill_and_reap(pid):
    """SIGKILL and wait until the process is gone (or a zombie of a parent
    that is not us)."""
    os.kill(pid, signal.SIGKILL)
    gone(pid, 10)


def gone(pid, deadline_s):
    until = now() + deadline_s
    while now() < until:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            with open(f"/proc/{pid}/status") as f:
                if "State:\tZ" in f.read():
                    return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


# --------------------------------------------------------------------------
# HTTP/1.1 by hand (keep-alive, chunked, SSE), so nothing hides a cut


async def read_head(reader):
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("closed before the status line")
    parts = line.decode("latin-1").split(" ", 2)
    status = int(parts[1])
    headers = {}
    while True:
        h = await reader.readline()
        if not h:
            raise ConnectionResetError("closed in the head")
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def read_body(reader, headers):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionResetError("cut inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:
                    t = await reader.readline()
                    if not t:
                        raise ConnectionResetError("cut in the trailers")
                    if t in (b"\r\n", b"\n"):
                        return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    n = int(headers.get("content-length", "0"))
    return await reader.readexactly(n)


async def http(host, port, method, path, body=b"", headers=None, timeout=10):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        status, h = await asyncio.wait_for(read_head(reader), timeout)
        data = await asyncio.wait_for(read_body(reader, h), timeout)
        return status, h, data
    finally:
        writer.close()


# --------------------------------------------------------------------------
# Load


class Result:
    __slots__ = ("kind", "start", "end", "status", "served_by", "ok", "reason")

    def __init__(self, kind, start):
        self.kind = kind
        self.start = start
        self.end = None
        self.status = None
        self.served_by = None
        self.ok = False
        self.reason = ""


class Load:
    """Closed-loop clients on keep-alive connections through HAProxy."""

    def __init__(self, port, whole_clients, stream_clients):
        self.port = port
        self.whole = whole_clients
        self.streams = stream_clients
        self.results = []
        self.in_flight = {}
        self.stop = asyncio.Event()
        self.tasks = []

    def begin(self):
        self.started = now()
        for i in range(self.whole):
            self.tasks.append(asyncio.ensure_future(self.client("whole", i)))
        for i in range(self.streams):
            self.tasks.append(asyncio.ensure_future(self.client("stream", i)))

    async def end(self):
        self.stop.set()
        await asyncio.gather(*self.tasks)
        self.ended = now()
        return self.results

    async def client(self, kind, i):
        body = STREAM if kind == "stream" else WHOLE
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        conn = None
        # Streams start staggered, so they are not all in one phase.
        if kind == "stream":
            await asyncio.sleep(0.1 * i)
        while not self.stop.is_set():
            r = Result(kind, now())
            key = (kind, i)
            self.in_flight[key] = r
            try:
                if conn is None:
                    conn = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", self.port), 5
                    )
                reader, writer = conn
                writer.write(request)
                await writer.drain()
                keep = await asyncio.wait_for(self.exchange(r, reader), REQUEST_TIMEOUT_S)
                if not keep:
                    writer.close()
                    conn = None
            except asyncio.TimeoutError:
                r.reason = r.reason or "hung (no end within 30 s)"
                conn = close(conn)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                r.reason = r.reason or f"cut: {type(e).__name__}: {e}"
                conn = close(conn)
            r.end = now()
            del self.in_flight[key]
            self.results.append(r)
        close(conn)

    async def exchange(self, r, reader):
        """One response; returns whether the connection may be reused."""
        r.status, headers = await read_head(reader)
        r.served_by = headers.get("x-served-by")
        data = await read_body(reader, headers)
        if r.status != 200:
            r.reason = f"status {r.status}: {data[:160]!r}"
        elif r.kind == "stream":
            if b'"error"' in data:
                r.reason = "stream ended with an error event"
            elif b"data: [DONE]" not in data:
                r.reason = "stream without [DONE]"
            else:
                r.ok = True
        else:
            r.ok = b'"choices"' in data
            if not r.ok:
                r.reason = "answer without choices"
        return headers.get("connection", "").lower() != "close"


def close(conn):
    if conn is not None:
        conn[1].close()
    return None


def summary(results, seconds):
    by = {}
    for r in results:
        s = by.setdefault(r.served_by or "-", {"sent": 0, "failed": 0})
        s["sent"] += 1
        s["failed"] += 0 if r.ok else 1
    sent = len(results)
    failed = sum(1 for r in results if not r.ok)
    streams = sum(1 for r in results if r.kind == "stream")
    return {
        "sent": sent,
        "failed": failed,
        "streams": streams,
        "whole": sent - streams,
        "seconds": round(seconds, 1),
        "rate": round(sent / seconds, 1) if seconds > 0 else 0,
        "by_instance": dict(sorted(by.items())),
    }


def show(name, counts):
    print(f"cluster {name}: {json.dumps(counts)}", flush=True)


T0 = time.monotonic()


def step(text):
    print(f"cluster: [{time.monotonic() - T0:6.1f}s] {text}", flush=True)


# --------------------------------------------------------------------------
# HAProxy's log: one line per request, with the server and retries


LOG_LINE = re.compile(
    r" orinari (?P<be>orinari(?:_live)?)/(?P<srv>\S+) \S+ (?P<status>-?\d+) \S+ \S+ \S+ (?P<term>\S{4}) "
    r"\S+/\S+/\S+/\S+/(?P<retries>\+?\d+) \S+ (?:\{[^}]*\} )*\"(?P<method>\S+) (?P<path>\S+)"
)
CHECK_LINE = re.compile(r"Server (?P<be>orinari(?:_live)?)/(?P<srv>\S+) is (?P<state>UP|DOWN)")


def haproxy_log(path, skip):
    """(server, status, termination state, retries, redispatched, backend,
    path) per line after the first `skip` bytes."""
    out = []
    with open(path, errors="replace") as f:
        f.seek(skip)
        for line in f:
            m = LOG_LINE.search(line)
            if m:
                rc = m.group("retries")
                out.append(
                    (
                        m.group("srv"),
                        int(m.group("status")),
                        m.group("term"),
                        int(rc.lstrip("+")),
                        rc.startswith("+"),
                        m.group("be"),
                        m.group("path"),
                    )
                )
    return out


def haproxy_checks(path, skip):
    """HAProxy's health-check changes after `skip` bytes, in order:
    `backend/server UP|DOWN`."""
    out = []
    with open(path, errors="replace") as f:
        f.seek(skip)
        for line in f:
            m = CHECK_LINE.search(line)
            if m:
                out.append(f"{m.group('be')}/{m.group('srv')} {m.group('state')}")
    return out


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# --------------------------------------------------------------------------
# The probe target and the webhook receiver


class Watcher:
    def __init__(self):
        self.up = True
        self.probes = []
        self.notices = []

    async def serve(self, port):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", port)

    async def handle(self, reader, writer):
        try:
            line = await reader.readline()
            method, path, _ = line.decode().split(" ", 2)
            headers = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if path.startswith("/probe"):
                self.probes.append(now())
                status = "200 OK" if self.up else "503 Service Unavailable"
            elif path.startswith("/hook"):
                try:
                    self.notices.append((now(), json.loads(body)))
                except ValueError:
                    pass
                status = "200 OK"
            else:
                status = "404 Not Found"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def changes(self):
        return [
            n["new_status"]
            for _, n in self.notices
            if n.get("event") == "component.status_changed"
        ]


# --------------------------------------------------------------------------
# Scenarios


async def scenario_kill(c, args, problems):
    victim = "o2"
    load = Load(c.lb_port, args.whole, args.streams)
    mark = log_size(args.haproxy_log)
    load.begin()
    await asyncio.sleep(args.kill_after)

    # The kill lands while the victim has a stream under way (it nearly
    # always has), so the claim about cut streams is always exercised.
    async def victim_streaming():
        return any(r.kind == "stream" and r.served_by == victim for r in load.in_flight.values())

    await wait_for(f"a stream under way on {victim}", victim_streaming, 30)
    in_flight = list(load.in_flight.values())
    pid = c.pid(victim)
    t_kill = now()
    kill_and_reap(pid)
    t_dead = now()
    await asyncio.sleep(args.kill_for - args.kill_after)
    results = await load.end()
    counts = summary(results, load.ended - load.started)
    failed = [r for r in results if not r.ok]
    on_victim = [r for r in failed if r.served_by == victim and r.start <= t_dead]
    elsewhere = [r for r in failed if r not in on_victim]
    streams_in_flight = [r for r in in_flight if r.kind == "stream"]
    cuts = [r for r in failed if r.kind == "stream"]
    cut_after = max((r.end - t_kill for r in cuts), default=0.0)
    hung = [r for r in results if r.reason.startswith("hung")]
    lines = haproxy_log(args.haproxy_log, mark)
    counts.update(
        {
            "killed": victim,
            "in_flight_at_kill": {
                "streams": len(streams_in_flight),
                "streams_on_killed": sum(1 for r in streams_in_flight if r.served_by == victim),
                "whole": len(in_flight) - len(streams_in_flight),
            },
            "failed_in_flight_on_killed": len(on_victim),
            "failed_streams_cut": len(cuts),
            "failed_elsewhere": len(elsewhere),
            "hung": len(hung),
            "slowest_cut_seen_after_s": round(cut_after, 2),
            "haproxy": {
                "aborted_by_server": sum(1 for l in lines if l[2][0] == "S"),
                "aborted_by_server_on": sorted({l[0] for l in lines if l[2][0] == "S"}),
                "retried": sum(1 for l in lines if l[3] > 0),
                "redispatched": sum(1 for l in lines if l[4]),
            },
        }
    )
    show("kill", counts)
    for r in elsewhere[:10]:
        print(f"  unexpected failure: {r.kind} on {r.served_by} at +{r.start - t_kill:.2f}s: {r.reason}")
    if elsewhere:
        problems.append(f"kill: {len(elsewhere)} failures not in flight on {victim}")
    if hung:
        problems.append(f"kill: {len(hung)} requests hung")
    if not on_victim:
        problems.append(f"kill: no request in flight on {victim} failed (no evidence the kill landed under load)")
    if cut_after > 10:
        problems.append(f"kill: a cut stream ended {cut_after:.1f} s after the kill")
    ok_after = [r for r in results if r.ok and r.start > t_dead + 1.0]
    if not ok_after:
        problems.append("kill: nothing succeeded after the kill")
    # Back to three for the next scenario.
    step(f"restarting {victim}")
    c.start(victim)
    await c.wait_ready(victim)
    await until_served_by(c, victim)
    step(f"{victim} serves again")
    return counts


async def until_served_by(c, name, deadline_s=60):
    until = now() + deadline_s
    while now() < until:
        try:
            status, h, _ = await http("127.0.0.1", c.lb_port, "POST", "/v1/chat/completions", WHOLE)
            if status == 200 and h.get("x-served-by") == name:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise Failed(f"HAProxy sent nothing to {name} within {deadline_s} s")


def new_binary(args):
    """A new binary file at the instances' path (a copy of the build), as a
    deploy would install it; the running processes keep the old inode."""
    tmp = args.instance_bin + ".new"
    subprocess.run(["cp", args.source_bin, tmp], check=True)
    os.replace(tmp, args.instance_bin)


async def upgrade_one(c, name):
    """SIGUSR2 to the instance; returns the new pid once it serves and the
    seconds the old one took to drain and exit after that."""
    log = c.log(name)

    def count(text):
        return (
            text.count("upgrade: new process started"),
            text.count("upgrade: the new process is ready"),
        )

    before = count(open(log, errors="replace").read())
    old = c.pid(name)
    os.kill(old, signal.SIGUSR2)
    until = now() + 60
    new = None
    while now() < until and new is None:
        text = open(log, errors="replace").read()
        started, ready = count(text)
        if started > before[0] and ready > before[1]:
            line = [l for l in text.splitlines() if "upgrade: new process started" in l][-1]
            new = json.loads(line)["fields"]["pid"]
        else:
            await asyncio.sleep(0.05)
    if new is None:
        raise Failed(f"{name}: the upgrade did not complete within 60 s:\n" + tail(log))
    c.set_pid(name, new)
    step(f"{name}: pid {new} serves; pid {old} drains")
    t_ready = now()
    # The old process drains its streams, then exits.
    if not await asyncio.to_thread(gone, old, 60):
        raise Failed(f"{name}: the old process {old} did not exit within 60 s of the handover")
    return new, round(now() - t_ready, 2)


async def scenario_upgrade(c, args, problems):
    new_binary(args)
    load = Load(c.lb_port, args.whole, args.streams)
    mark = log_size(args.haproxy_log)
    load.begin()
    await asyncio.sleep(args.upgrade_warmup)
    steps = []
    for name in NAMES:
        streams = [r for r in load.in_flight.values() if r.kind == "stream"]
        step(f"SIGUSR2 to {name}")
        t0 = now()
        pid, drained = await upgrade_one(c, name)
        steps.append(
            {
                "instance": name,
                "new_pid": pid,
                "streams_open_at_signal": len(streams),
                "of_them_on_it": sum(1 for r in streams if r.served_by == name),
                "handover_s": round(now() - t0 - drained, 2),
                "old_drained_in_s": drained,
            }
        )
        await asyncio.sleep(args.upgrade_gap)
    await asyncio.sleep(args.upgrade_warmup)
    results = await load.end()
    counts = summary(results, load.ended - load.started)
    lines = haproxy_log(args.haproxy_log, mark)
    counts["steps"] = steps
    counts["haproxy"] = {
        "retried": sum(1 for l in lines if l[3] > 0),
        "redispatched": sum(1 for l in lines if l[4]),
        "aborted_by_server": sum(1 for l in lines if l[2][0] == "S"),
    }
    show("upgrade", counts)
    failed = [r for r in results if not r.ok]
    for r in failed[:10]:
        print(f"  failure: {r.kind} on {r.served_by}: {r.reason}")
    if failed:
        problems.append(f"upgrade: {len(failed)} failed requests (0 expected)")
    if counts["rate"] < args.min_rate:
        problems.append(f"upgrade: {counts['rate']} req/s, below the floor of {args.min_rate}")
    versions = await c.instances("o1")
    up = [i for i in versions["data"] if i["state"] == "up"]
    if len(up) != 3 or not versions["agree"]:
        problems.append(f"upgrade: the instances after the upgrade: {json.dumps(versions)}")
    return counts


async def leader_of(c, names):
    for n in names:
        try:
            v = await c.instances(n)
        except (OSError, Failed, asyncio.TimeoutError):
            continue
        for i in v["data"]:
            if i["leader"] and i["this"]:
                return n, v
    return None, None


async def wait_for(what, check, deadline_s):
    until = now() + deadline_s
    while now() < until:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise Failed(f"timed out after {deadline_s} s waiting for {what}")


def table(c, view):
    """name, id, leader, state of each instance in an /admin/v1/instances answer."""
    return [
        [c.name_of_port(int(i["id"].rsplit(":", 1)[1])), i["id"], i["leader"], i["state"]]
        for i in view["data"]
    ]


async def scenario_leader(c, args, watcher, problems):
    # One leader among the three (it may still be settling after the
    # upgrades).
    async def one_leader():
        n, v = await leader_of(c, NAMES)
        return (n, v) if n and v["leaders"] == 1 else None

    leader, view = await wait_for("one leader", one_leader, 60)
    step(f"{leader} leads; its probe target goes down")
    instances_before = table(c, view)
    # Only the leader probes: hits over a few intervals ~ one per interval.
    # The target goes down; the leader notices and notifies once.
    watcher.up = False
    t_down = now()

    async def down_notified():
        return "major_outage" in watcher.changes()

    await wait_for("the down notification", down_notified, 3 * PROBE_INTERVAL_S + 10)
    t_notified = now()
    # Kill the leader.
    step(f"down notified; SIGKILL to the leader {leader}")
    t_kill = now()
    kill_and_reap(c.pid(leader))
    others = [n for n in NAMES if n != leader]

    async def new_leader():
        n, _ = await leader_of(c, others)
        return n

    successor = await wait_for("a new leader", new_leader, 30)
    t_lead = now()
    step(f"{successor} leads")

    async def probed_after_kill():
        return any(t > t_kill for t in watcher.probes)

    await wait_for("a probe by the new leader", probed_after_kill, 3 * PROBE_INTERVAL_S)
    t_probe = min(t for t in watcher.probes if t > t_kill)
    # The target recovers; the new leader notices and notifies once.
    watcher.up = True

    async def up_notified():
        return "operational" in watcher.changes()

    await wait_for("the recovery notification", up_notified, 3 * PROBE_INTERVAL_S + 10)
    # Room for a duplicate to show up.
    await asyncio.sleep(args.duplicate_wait)
    changes = watcher.changes()
    # The killed leader shows stale once not seen for its staleness bound.
    async def stale_shown():
        v = await c.instances(successor)
        port = c.ports[leader]
        for i in v["data"]:
            if i["id"].endswith(f":{port}") and i["state"] == "stale":
                return v
        return None

    view = await wait_for("the killed leader shown stale", stale_shown, 30)
    probes_before = [t for t in watcher.probes if t_down - 3 * PROBE_INTERVAL_S <= t <= t_kill]
    counts = {
        "killed_leader": leader,
        "new_leader": successor,
        "takeover_s": round(t_lead - t_kill, 2),
        "first_probe_after_kill_s": round(t_probe - t_kill, 2),
        "probe_interval_s": PROBE_INTERVAL_S,
        "down_notified_after_s": round(t_notified - t_down, 2),
        "notifications": {s: changes.count(s) for s in sorted(set(changes))},
        "probe_hits_total": len(watcher.probes),
        "instances_before": instances_before,
        "instances_after": table(c, view),
    }
    show("leader", counts)
    if t_probe - t_kill > 2 * PROBE_INTERVAL_S:
        problems.append(f"leader: the first probe after the kill came {t_probe - t_kill:.1f} s later (> 2 intervals)")
    if changes.count("major_outage") != 1 or changes.count("operational") != 1:
        problems.append(f"leader: notifications {changes} (each change exactly once expected)")
    if view["leaders"] != 1:
        problems.append(f"leader: {view['leaders']} leaders after the takeover")
    del probes_before
    return counts



# --------------------------------------------------------------------------
# Shared services: Redis stopped, PostgreSQL restarted

FALLBACKS = "orinari_ratelimit_local_fallbacks_total"
REDIS_DOWN_LOG = "Redis unreachable; rate limits fall back to local limits"
REDIS_UP_LOG = "Redis reachable again; rate limits are shared again"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def metric(c, name, metric_name):
    """The sum of one metric's samples on instance `name`."""
    status, _, body = await http("127.0.0.1", c.ports[name], "GET", "/metrics", headers=AUTH)
    if status != 200:
        raise Failed(f"/metrics on {name}: {status}")
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(metric_name + " ") or line.startswith(metric_name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def fallbacks(c):
    return {n: int(await metric(c, n, FALLBACKS)) for n in NAMES}


async def create_key(c, name, key_name, rpm):
    status, _, body = await http(
        "127.0.0.1",
        c.ports[name],
        "POST",
        "/admin/v1/keys",
        json.dumps({"name": key_name, "requests_per_minute": rpm}).encode(),
        headers=AUTH,
    )
    if status != 201:
        raise Failed(f"creating the key {key_name} on {name}: {status} {body[:200]!r}")
    return json.loads(body)["key"]


async def limit_probe(c, key, per_instance):
    """`per_instance` whole answers with `key` straight to each instance (the
    three at once, each one after the other): how many each admitted."""

    async def one(name):
        got = {"ok": 0, "refused_429": 0, "other": []}
        for _ in range(per_instance):
            try:
                status, h, body = await http(
                    "127.0.0.1",
                    c.ports[name],
                    "POST",
                    "/v1/chat/completions",
                    WHOLE,
                    headers={"Authorization": f"Bearer {key}"},
                )
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                got["other"].append(f"{type(e).__name__}: {e}")
                continue
            if status == 200 and b'"choices"' in body:
                got["ok"] += 1
            elif status == 429 and "retry-after" in h:
                got["refused_429"] += 1
            else:
                got["other"].append(f"{status} {body[:120]!r}")
        return name, got

    t0 = now()
    got = dict(await asyncio.gather(*(one(n) for n in NAMES)))
    return got, now() - t0


class Readiness:
    """Each instance's /readyz, asked directly every 0.1 s."""

    def __init__(self, c):
        self.c = c
        self.samples = {n: [] for n in NAMES}
        self.stop = asyncio.Event()
        self.tasks = []

    def begin(self):
        self.tasks = [asyncio.ensure_future(self.poll(n)) for n in NAMES]

    async def end(self):
        self.stop.set()
        await asyncio.gather(*self.tasks)

    async def poll(self, name):
        while not self.stop.is_set():
            t = now()
            try:
                status, _, _ = await http("127.0.0.1", self.c.ports[name], "GET", "/readyz", timeout=5)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                status = 0
            self.samples[name].append((t, now(), status))
            await asyncio.sleep(0.1)

    def ready_all_since(self, t):
        """Whether every instance answered 200 to a question asked after `t`."""
        return all(any(a > t and st == 200 for a, _, st in self.samples[n]) for n in NAMES)


class Writer:
    """Closed-loop writers creating API keys through HAProxy; every answer
    kept (status, error code, Retry-After, the key's id when created)."""

    def __init__(self, port, clients, pause_s):
        self.port = port
        self.clients = clients
        self.pause_s = pause_s
        self.results = []
        self.stop = asyncio.Event()
        self.tasks = []

    def begin(self):
        self.tasks = [asyncio.ensure_future(self.client(i)) for i in range(self.clients)]

    async def end(self):
        self.stop.set()
        await asyncio.gather(*self.tasks)
        return self.results

    async def client(self, i):
        n = 0
        while not self.stop.is_set():
            n += 1
            rec = {"name": f"cw-{i}-{n}", "start": now(), "status": 0, "code": None}
            try:
                status, h, body = await http(
                    "127.0.0.1",
                    self.port,
                    "POST",
                    "/admin/v1/keys",
                    json.dumps({"name": rec["name"]}).encode(),
                    headers=AUTH,
                    timeout=20,
                )
                rec["status"] = status
                rec["served_by"] = h.get("x-served-by")
                rec["retry_after"] = h.get("retry-after")
                try:
                    v = json.loads(body)
                except ValueError:
                    v = {}
                if status == 201:
                    rec["id"] = v.get("id")
                elif isinstance(v.get("error"), dict):
                    rec["code"] = v["error"].get("code")
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                rec["reason"] = f"{type(e).__name__}: {e}"
            rec["end"] = now()
            self.results.append(rec)
            await asyncio.sleep(self.pause_s)


def log_mark(c):
    return {n: log_size(c.log(n)) for n in NAMES}


def log_count(c, mark, text):
    out = {}
    for n in NAMES:
        with open(c.log(n), errors="replace") as f:
            f.seek(mark[n])
            out[n] = f.read().count(text)
    return out


def log_events(c, mark, texts):
    """Per instance, in order: (which of `texts`, its log time as Unix
    seconds) for each line after `mark` holding one of them."""
    out = {}
    for n in NAMES:
        out[n] = []
        with open(c.log(n), errors="replace") as f:
            f.seek(mark[n])
            for line in f:
                for i, t in enumerate(texts):
                    if t in line:
                        try:
                            stamp = json.loads(line)["timestamp"]
                            when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                        except (ValueError, KeyError):
                            when = 0.0
                        out[n].append((i, when))
    return out


async def tcp_open(port):
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
        w.close()
        return True
    except (OSError, asyncio.TimeoutError):
        return False


async def scenario_services(c, args, problems, restart):
    # The leader scenario left one instance killed: back to three.
    if restart:
        step(f"restarting {restart}")
        c.start(restart)
        await c.wait_ready(restart)
        await until_served_by(c, restart)
    redis_pid = int(open(os.path.join(args.work, "redis.pid")).read().strip())
    rpm = args.limit_rpm

    load = Load(c.lb_port, args.whole, args.streams)
    writer = Writer(c.lb_port, args.writers, args.write_pause)
    ready = Readiness(c)
    hmark = log_size(args.haproxy_log)
    lmark = log_mark(c)
    load.begin()
    writer.begin()
    ready.begin()
    await asyncio.sleep(args.services_warmup)

    # Redis stopped: each instance limits alone.
    key_local = await create_key(c, "o1", "limit-local", rpm)
    f_before = await fallbacks(c)
    step("stopping Redis")
    t_redis_stop = now()
    wall_redis_stop = time.time()
    os.kill(redis_pid, signal.SIGTERM)
    if not await asyncio.to_thread(gone, redis_pid, 10):
        raise Failed("Redis did not stop within 10 s")
    await asyncio.sleep(0.5)
    local, local_s = await limit_probe(c, key_local, args.limit_probe)
    f_down = await fallbacks(c)
    await asyncio.sleep(max(0.0, t_redis_stop + args.redis_down - now()))
    key_shared = await create_key(c, "o1", "limit-shared", rpm)
    step("starting Redis")
    t_redis_start = now()
    subprocess.run(["bash", os.path.join(args.work, "redis.sh")], check=True)

    async def redis_listening():
        return await tcp_open(args.redis_port)

    await wait_for("Redis listening", redis_listening, 10)

    # Every instance says it shares again (its log), then the probe.
    async def shared_again():
        return all(v >= 1 for v in log_count(c, lmark, REDIS_UP_LOG).values())

    await wait_for("every instance back on Redis", shared_again, 15)
    t_shared = now()
    f_up = await fallbacks(c)
    shared, shared_s = await limit_probe(c, key_shared, args.limit_probe)
    f_after = await fallbacks(c)
    redis_keys = subprocess.run(
        ["redis-cli", "-p", str(args.redis_port), "dbsize"], capture_output=True, text=True
    ).stdout.strip()
    step(f"every instance back on Redis {t_shared - t_redis_start:.1f} s after its start")

    # PostgreSQL stopped (fast: sessions cut), held down, started.
    await asyncio.sleep(args.services_gap)
    step(f"stopping PostgreSQL for {args.pg_down:.0f} s")
    t_pg_stop = now()
    await asyncio.to_thread(subprocess.run, ["bash", os.path.join(args.work, "pg.sh"), "stop"], check=True)
    t_pg_stopped = now()
    await asyncio.sleep(max(0.0, t_pg_stop + args.pg_down - now()))
    step("starting PostgreSQL")
    t_pg_start = now()
    await asyncio.to_thread(subprocess.run, ["bash", os.path.join(args.work, "pg.sh"), "start"], check=True)
    t_pg_started = now()

    async def all_ready():
        return ready.ready_all_since(t_pg_started)

    await wait_for("every instance ready again", all_ready, 30)
    t_ready = now()
    step(f"every instance ready {t_ready - t_pg_started:.1f} s after PostgreSQL started")

    # The leader lost its lock with its session: one instance (each asked
    # about itself) leads again, within an election period and the grace.
    async def leading():
        out = []
        for n in NAMES:
            try:
                v = await c.instances(n)
            except (OSError, Failed, asyncio.TimeoutError, ValueError):
                continue
            if any(i["this"] and i["leader"] for i in v["data"]):
                out.append(n)
        return out

    async def one_leader():
        got = await leading()
        return got if len(got) == 1 else None

    leader_again = (await wait_for("one leader after PostgreSQL restarted", one_leader, 30))[0]
    t_leader = now()
    step(f"{leader_again} leads {t_leader - t_pg_started:.1f} s after PostgreSQL started")
    await asyncio.sleep(max(0.0, t_ready + args.services_after - now()))
    leaders_at_end = await leading()
    results = await load.end()
    writes = await writer.end()
    await ready.end()
    t_end = now()

    # Chat: no request fails.
    counts = summary(results, load.ended - load.started)
    failed = [r for r in results if not r.ok]
    by_status = {}
    for r in failed:
        k = str(r.status or "cut")
        by_status[k] = by_status.get(k, 0) + 1
    counts["failed_by_status"] = by_status
    for r in failed[:10]:
        print(f"  chat failure: {r.kind} on {r.served_by} at +{r.start - t_redis_stop:.2f}s: {r.reason}")
    if failed:
        problems.append(f"services: {len(failed)} chat requests failed (0 expected)")

    # Limits: alone while Redis is down, shared once it is back.
    local_ok = {n: v["ok"] for n, v in local.items()}
    shared_ok = {n: v["ok"] for n, v in shared.items()}
    # A probe takes ~1 s; the GCRA frees one more request every 60/rpm s.
    slack_local = 1 + int(local_s * rpm / 60)
    slack_shared = 1 + int(shared_s * rpm / 60)
    fell_back = {n: f_down[n] - f_before[n] for n in NAMES}
    after_back = {n: f_after[n] - f_up[n] for n in NAMES}
    # Each change logged once (never per request): per instance the lines
    # alternate, the fallback first, within the outage, the return once
    # Redis was back. A reply over 250 ms outside the outage (this machine
    # is shared and loaded) is a change too: counted, not a failure.
    events = log_events(c, lmark, [REDIS_DOWN_LOG, REDIS_UP_LOG])

    def rel(wall):
        return round(wall - wall_redis_stop, 2)

    w_start = wall_redis_stop + (t_redis_start - t_redis_stop)
    w_shared = wall_redis_stop + (t_shared - t_redis_stop)
    logged_down = {n: sum(1 for k, _ in events[n] if k == 0) for n in NAMES}
    logged_up = {n: sum(1 for k, _ in events[n] if k == 1) for n in NAMES}
    changes_logged = {n: [f"{'fallback' if k == 0 else 'shared'} {rel(w):+.2f}s" for k, w in events[n]] for n in NAMES}
    counts["redis"] = {
        "down_s": round(t_redis_start - t_redis_stop, 2),
        "shared_again_after_start_s": round(t_shared - t_redis_start, 2),
        "key_rpm": rpm,
        "probe_per_instance": args.limit_probe,
        "admitted_while_down": local_ok,
        "admitted_while_down_total": sum(local_ok.values()),
        "admitted_after_back": shared_ok,
        "admitted_after_back_total": sum(shared_ok.values()),
        "local_decisions_while_down": fell_back,
        "local_decisions_after_back": after_back,
        "logged_fallback": logged_down,
        "logged_shared_again": logged_up,
        "changes_logged_after_stop": changes_logged,
        "redis_keys_after": int(redis_keys) if redis_keys.isdigit() else redis_keys,
    }
    for phase, got in (("while Redis was down", local), ("after Redis came back", shared)):
        for n, v in got.items():
            if v["other"]:
                problems.append(f"services: {phase}, {n} answered the probe with {v['other'][:3]}")
    for n in NAMES:
        if not 1 <= local_ok[n] <= rpm + slack_local:
            problems.append(f"services: while Redis was down {n} admitted {local_ok[n]} of the key's requests (limit {rpm} per instance)")
        if fell_back[n] <= 0:
            problems.append(f"services: {n} counted no local decision while Redis was down")
        if after_back[n] != 0:
            problems.append(f"services: {n} decided {after_back[n]} requests locally after Redis was back")
        kinds = [k for k, _ in events[n]]
        first_down = next((w for k, w in events[n] if k == 0), None)
        first_up = next((w for k, w in events[n] if k == 1), None)
        if any(kinds[i] != i % 2 for i in range(len(kinds))):
            problems.append(f"services: {n} logged the limiter's changes out of turn: {changes_logged[n]}")
        if first_down is None or not wall_redis_stop - 0.1 <= first_down <= w_start + 0.1:
            problems.append(f"services: {n} did not log the fallback while Redis was down: {changes_logged[n]}")
        if first_up is None or not w_start - 0.1 <= first_up <= w_shared + 0.1:
            problems.append(f"services: {n} did not log the return once Redis was back: {changes_logged[n]}")
    if sum(local_ok.values()) <= rpm + slack_local:
        problems.append(f"services: while Redis was down the instances admitted {sum(local_ok.values())} in all, not more than one shared limit ({rpm})")
    if not rpm <= sum(shared_ok.values()) <= rpm + slack_shared:
        problems.append(f"services: after Redis came back the instances admitted {sum(shared_ok.values())} in all (one shared limit: {rpm})")

    # Readiness: 200 without Redis; 503 without PostgreSQL, 200 again after.
    flips = {}
    for n in NAMES:
        samples = ready.samples[n]
        early = [st for _, b, st in samples if b < t_pg_stop]
        during = [(a, b, st) for a, b, st in samples if t_pg_stopped <= a and b <= t_pg_start]
        down = [b for a, b, st in samples if a >= t_pg_stop and st == 503]
        later = [a for a, b, st in samples if a >= t_pg_started and st == 200]
        odd = sorted({st for _, _, st in samples} - {200, 503})
        flips[n] = {
            "first_503_after_stop_s": round(min(down) - t_pg_stop, 2) if down else None,
            "ready_after_start_s": round(min(later) - t_pg_started, 2) if later else None,
            "answers": len(samples),
            "503_while_down": sum(1 for _, _, st in during if st == 503),
            "200_while_down": sum(1 for _, _, st in during if st == 200),
        }
        if any(st != 200 for st in early):
            problems.append(f"services: {n}'s /readyz was not 200 before PostgreSQL stopped (Redis is not readiness)")
        if not down:
            problems.append(f"services: {n}'s /readyz never turned 503 while PostgreSQL was down")
        if any(st == 200 for _, _, st in during):
            problems.append(f"services: {n}'s /readyz said 200 while PostgreSQL was down")
        if odd:
            problems.append(f"services: {n}'s /readyz answered {odd} (200 or 503 expected)")
        if samples and samples[-1][2] != 200:
            problems.append(f"services: {n}'s /readyz ended at {samples[-1][2]}")
    counts["readiness"] = flips

    # Writes: 201, or 503 storage_unavailable with Retry-After while the
    # store is down; every acknowledged one is in the database.
    acked = [w for w in writes if w["status"] == 201 and w.get("id")]
    unavailable = [w for w in writes if w["status"] == 503 and w["code"] == "storage_unavailable" and w.get("retry_after")]
    other = [w for w in writes if w not in acked and w not in unavailable]
    late_503 = [w for w in unavailable if w["start"] > t_ready + 1.0]
    rows = subprocess.run(
        [args.psql, "-X", "-At", args.db_url, "-c", "SELECT id FROM api_keys WHERE name LIKE 'cw-%'"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    in_db = set(rows)
    missing = [w for w in acked if w["id"] not in in_db]
    w_by = {}
    for w in writes:
        s_ = w_by.setdefault(w.get("served_by") or "-", {})
        k = str(w["status"] or "cut")
        s_[k] = s_.get(k, 0) + 1
    counts["writes"] = {
        "sent": len(writes),
        "acknowledged": len(acked),
        "storage_unavailable_503": len(unavailable),
        "other": len(other),
        "by_instance_and_status": dict(sorted(w_by.items())),
        "acknowledged_after_pg_start": sum(1 for w in acked if w["start"] > t_pg_started),
        "unavailable_first_s_after_stop": round(min((w["end"] for w in unavailable), default=t_pg_stop) - t_pg_stop, 2),
        "unavailable_last_s_after_start": round(max((w["end"] for w in unavailable), default=t_pg_start) - t_pg_start, 2),
        "retry_after_values": sorted({w["retry_after"] for w in unavailable}),
        "slowest_s": round(max((w["end"] - w["start"] for w in writes), default=0.0), 2),
        "rows_in_db": len(in_db),
        "acknowledged_missing_in_db": len(missing),
        "unacknowledged_but_in_db": len(in_db - {w["id"] for w in acked}),
    }
    for w in other[:10]:
        print(f"  write: {w['name']} at +{w['start'] - t_pg_stop:.2f}s from the stop: {w['status']} {w['code']} retry-after={w.get('retry_after')} {w.get('reason', '')}")
    if other:
        problems.append(f"services: {len(other)} writes got neither 201 nor 503 storage_unavailable with Retry-After")
    if not unavailable:
        problems.append("services: no write got 503 storage_unavailable while PostgreSQL was down")
    if late_503:
        problems.append(f"services: {len(late_503)} writes got 503 after every instance was ready again")
    if not any(w["start"] > t_pg_started for w in acked):
        problems.append("services: no write was acknowledged after PostgreSQL came back")
    if missing:
        problems.append(f"services: {len(missing)} acknowledged writes are not in the database: {[w['id'] for w in missing[:5]]}")

    # HAProxy: which backend served while no instance was ready.
    lines = haproxy_log(args.haproxy_log, hmark)
    by_backend = {}
    for l in lines:
        k = f"{l[5]} {'admin' if l[6].startswith('/admin/') else 'chat'}"
        b = by_backend.setdefault(k, {})
        b[str(l[1])] = b.get(str(l[1]), 0) + 1
    checks = []
    for x in haproxy_checks(args.haproxy_log, hmark):
        if not checks or checks[-1] != x:
            checks.append(x)
    counts["pg"] = {
        "down_s": round(t_pg_start - t_pg_stop, 2),
        "stop_took_s": round(t_pg_stopped - t_pg_stop, 2),
        "start_took_s": round(t_pg_started - t_pg_start, 2),
        "all_ready_after_start_s": round(t_ready - t_pg_started, 2),
        "leader_after_start": leader_again,
        "leader_after_start_s": round(t_leader - t_pg_started, 2),
        "leaders_at_end": leaders_at_end,
    }
    if len(leaders_at_end) != 1:
        problems.append(f"services: {leaders_at_end} lead at the end (one expected)")
    counts["haproxy"] = {"by_backend_path_status": dict(sorted(by_backend.items())), "checks": checks}
    counts["seconds_total"] = round(t_end - load.started, 1)
    show("services", counts)
    return counts


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--lb-port", type=int, required=True)
    p.add_argument("--ports", required=True, help="o1,o2,o3 ports")
    p.add_argument("--watcher-port", type=int, required=True)
    p.add_argument("--haproxy-log", required=True)
    p.add_argument("--source-bin", required=True)
    p.add_argument("--instance-bin", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--db-url", required=True)
    p.add_argument("--psql", required=True)
    p.add_argument("--full", action="store_true")
    args = p.parse_args()
    # The services scenario: a key limited to `limit_rpm`, probed with
    # `limit_probe` requests on each instance; writers creating keys.
    args.limit_rpm, args.limit_probe = 20, 30
    args.writers, args.write_pause = 3, 0.05
    args.services_gap = 1.0
    if args.full:
        args.whole, args.streams = 48, 24
        args.kill_after, args.kill_for = 10.0, 30.0
        args.upgrade_warmup, args.upgrade_gap = 10.0, 10.0
        args.duplicate_wait = 15.0
        args.services_warmup, args.redis_down, args.pg_down, args.services_after = 5.0, 10.0, 15.0, 5.0
        args.deadline = 900
    else:
        args.whole, args.streams = 24, 12
        args.kill_after, args.kill_for = 4.0, 10.0
        args.upgrade_warmup, args.upgrade_gap = 3.0, 1.0
        args.duplicate_wait = 5.0
        # PostgreSQL down past the store's 5 s connection wait, so writes
        # that wait for it give up with 503 while it is still down.
        args.services_warmup, args.redis_down, args.pg_down, args.services_after = 2.0, 4.0, 7.0, 2.0
        args.deadline = 360
    args.min_rate = 0  # reported, not enforced: the 2-core machine is shared

    watcher = Watcher()
    await watcher.serve(args.watcher_port)
    c = Cluster(args.work, args.lb_port, [int(x) for x in args.ports.split(",")])
    for n in NAMES:
        c.start(n)
    for n in NAMES:
        await c.wait_ready(n)
    c.start_haproxy()
    for n in NAMES:
        await until_served_by(c, n)
    print("cluster: three instances behind HAProxy are serving", flush=True)

    problems = []
    report = {"mode": "full" if args.full else "fast"}

    async def scenarios():
        step("scenario kill")
        report["kill"] = await scenario_kill(c, args, problems)
        step("scenario upgrade")
        report["upgrade"] = await scenario_upgrade(c, args, problems)
        step("scenario leader")
        report["leader"] = await scenario_leader(c, args, watcher, problems)
        step("scenario services")
        report["services"] = await scenario_services(c, args, problems, report["leader"]["killed_leader"])

    def dump():
        # What each task waits on, before the deadline cancels them.
        print("cluster: the deadline is near; every task's stack:", file=sys.stderr, flush=True)
        for t in asyncio.all_tasks():
            t.print_stack(file=sys.stderr)

    asyncio.get_running_loop().call_later(args.deadline - 5, dump)
    try:
        await asyncio.wait_for(scenarios(), args.deadline)
    except Failed as e:
        problems.append(str(e))
    except asyncio.TimeoutError:
        problems.append(f"the scenarios did not finish within {args.deadline} s")
    except Exception as e:  # noqa: BLE001 - reported as a failure, with its trace
        import traceback

        traceback.print_exc()
        problems.append(f"the driver failed: {type(e).__name__}: {e}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    for pr in problems:
        print(f"cluster: FAILED: {pr}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
