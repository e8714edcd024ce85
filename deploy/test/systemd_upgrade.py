#!/usr/bin/env python3
"""deploy/systemd/orinari.service under a real systemd, run by
scripts/test-deploy.sh (`make deploy`).

    systemd_upgrade.py LEADER BINARY INSTALLED [ROUNDS]

The script boots Debian's systemd (252) as PID 1 of a systemd-nspawn
container (the host's /usr, a fresh tmpfs for the rest, a private network)
with the unit installed as shipped, and runs this in the container's network
namespace (`nsenter --net`), so http://127.0.0.1:8080 is the server inside.
LEADER is the host's pid of the container's systemd: `systemctl` and
`journalctl` run inside the container (nsenter into its mount, pid, uts, ipc
and network namespaces). BINARY is the build to install for each upgrade and
INSTALLED the host path of the container's /usr/local/bin/orinari.

It checks, with systemd's own view (`systemctl show`, its journal):

  - `systemctl start orinari` returns only once orinari said READY=1
    (Type=notify): /readyz answers 200 at once;
  - chat (whole and streamed), /healthz and /metrics answer;
  - ROUNDS times (default 2), while clients loop requests and streams: the
    binary is installed anew (`install`, a new file), and
    `systemctl kill --kill-whom=main --signal=SIGUSR2 orinari` upgrades:
    MainPID becomes the new process, which is systemd's own child (systemd
    waits on `stop` only for such a main PID), the unit stays active/running
    (polled every 50 ms), systemd reaps the old process with exit status 0,
    the new process runs the new file, no restart;
  - 0 failed requests across the upgrades;
  - `systemctl reload` (ExecReload, SIGHUP to $MAINPID) reaches the process
    that took over;
  - `systemctl stop` drains it: a stream open during the stop ends whole,
    no SIGKILL, inactive, Result=success, the main process exited 0;
  - systemd logged no warning about the unit (a notification it refused, a
    main PID it did not accept).
"""

import json
import pathlib
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "lib"))
import harness  # noqa: E402

URL = "http://127.0.0.1:8080"
UNIT = "orinari.service"
PROPS = "MainPID,ActiveState,SubState,Result,NRestarts,Type,NotifyAccess,ExecMainCode,ExecMainStatus"

leader = 0
failures = []


def inside(*cmd, timeout=60, check=True):
    """A command in the container (its systemd, its /proc, its journal)."""
    r = subprocess.run(
        ["nsenter", f"--target={leader}", "--mount", "--pid", "--uts", "--ipc", "--net", "--", *cmd],
        capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def show():
    out = inside("systemctl", "show", f"--property={PROPS}", UNIT).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def ok(msg):
    print(f"ok   {msg}", flush=True)


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}", flush=True)


def expect(cond, msg):
    (ok if cond else fail)(msg)
    return cond


def journal(*args):
    return inside("journalctl", "--no-pager", "-o", "json", *args).stdout.splitlines()


def messages(*args):
    """(pid, message) of the journal entries matching `args`."""
    out = []
    for line in journal(*args):
        e = json.loads(line)
        msg = e.get("MESSAGE")
        if isinstance(msg, list):  # a message journald stored as bytes
            msg = bytes(msg).decode("utf-8", "replace")
        out.append((int(e.get("_PID", 0)), msg or ""))
    return out


def alive(pid):
    return inside("test", "-d", f"/proc/{pid}", check=False).returncode == 0


def exe(pid):
    return inside("readlink", f"/proc/{pid}/exe", check=False).stdout.strip()


def ppid(pid):
    status = inside("cat", f"/proc/{pid}/status", check=False).stdout
    m = re.search(r"^PPid:\s*(\d+)", status, re.M)
    return int(m.group(1)) if m else None


def chat(stream, max_tokens):
    body = {"model": "orinari-small", "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": max_tokens, "stream": stream}
    return harness.request("POST", URL + "/v1/chat/completions", body, timeout=60)


def answered(kind, r):
    """Whether a request of `kind` got the whole answer it should."""
    if r.status != 200:
        return False
    if kind == "stream":
        # Whole: no error event (a drain past its deadline ends a stream
        # with one), then [DONE].
        events = [line[6:] for line in r.body.splitlines() if line.startswith("data: ")]
        return bool(events) and events[-1] == "[DONE]" and not any('"error"' in e for e in events)
    if kind == "chat":
        j = r.json()
        return bool(j and j.get("choices"))
    return True


class Load:
    """Clients looping requests, each on a new connection, until stopped:
    two asking /healthz and /v1/models in turn, one whole chat answers, one
    streaming answers."""

    def __init__(self):
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = {}
        self.slowest = {}
        self.failed = []
        self.threads = [threading.Thread(target=self.loop, args=(kinds,), daemon=True)
                        for kinds in (("healthz", "models"), ("models", "healthz"), ("chat",), ("stream",))]

    def record(self, kind, r):
        with self.lock:
            self.sent[kind] = self.sent.get(kind, 0) + 1
            self.slowest[kind] = max(self.slowest.get(kind, 0.0), r.seconds)
            if not answered(kind, r):
                self.failed.append((kind, r))

    def loop(self, kinds):
        n = 0
        while not self.stop.is_set():
            kind = kinds[n % len(kinds)]
            n += 1
            if kind == "chat":
                r = chat(False, 8)
            elif kind == "stream":
                r = chat(True, 16)
            else:
                r = harness.request("GET", URL + ("/healthz" if kind == "healthz" else "/v1/models"), timeout=60)
            self.record(kind, r)
            if kind in ("healthz", "models"):
                time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(120)


def start():
    t0 = time.monotonic()
    inside("systemctl", "start", UNIT, timeout=150)
    took = time.monotonic() - t0
    ready = harness.request("GET", URL + "/readyz", timeout=5)
    p = show()
    expect(p.get("Type") == "notify" and p.get("NotifyAccess") == "all",
           f"the unit is Type={p.get('Type')} NotifyAccess={p.get('NotifyAccess')} (want notify, all)")
    expect(p.get("ActiveState") == "active" and p.get("SubState") == "running",
           f"systemctl start returned after {took:.2f} s: {p.get('ActiveState')}/{p.get('SubState')}, MainPID={p.get('MainPID')}")
    expect(ready.status == 200,
           f"/readyz right after `systemctl start` returned: {ready.status} (start waits for READY=1)")
    return int(p.get("MainPID", 0))


def traffic():
    r = harness.request("GET", URL + "/healthz", timeout=10)
    expect(r.status == 200, f"GET /healthz: {r.status} {r.body.strip()[:80]}")
    r = chat(False, 8)
    j = r.json() or {}
    expect(answered("chat", r), f"POST /v1/chat/completions: {r.status}, usage {j.get('usage')}")
    r = chat(True, 8)
    expect(answered("stream", r), f"POST /v1/chat/completions (stream): {r.status}, ends with [DONE]")
    r = harness.request("GET", URL + "/metrics", timeout=10)
    expect(r.status == 200 and "orinari_queue_depth" in r.body, f"GET /metrics: {r.status}")


def upgrade(n, binary, installed):
    old = int(show()["MainPID"])
    subprocess.run(["install", "-m", "0755", binary, installed], check=True)
    expect(exe(old).endswith("(deleted)"),
           f"upgrade {n}: new binary installed; pid {old} runs {exe(old)!r}")
    t0 = time.monotonic()
    inside("systemctl", "kill", "--kill-whom=main", "--signal=SIGUSR2", UNIT)
    states = set()
    new = old
    while time.monotonic() - t0 < 90:
        p = show()
        states.add(f"{p['ActiveState']}/{p['SubState']}")
        new = int(p["MainPID"])
        if new not in (old, 0):
            break
        time.sleep(0.05)
    took = time.monotonic() - t0
    if not expect(new not in (old, 0), f"upgrade {n}: MainPID {old} -> {new}, {took:.2f} s after SIGUSR2"):
        return old
    # systemd waits on `stop` only for a main PID that is its own child.
    parent = ppid(new)
    expect(parent == 1, f"upgrade {n}: pid {new} is systemd's child, not pid {old}'s (PPid {parent})")
    expect(exe(new) == "/usr/local/bin/orinari", f"upgrade {n}: pid {new} runs {exe(new)!r}")
    while alive(old) and time.monotonic() - t0 < 90:
        p = show()
        states.add(f"{p['ActiveState']}/{p['SubState']}")
        time.sleep(0.05)
    gone = time.monotonic() - t0
    expect(not alive(old), f"upgrade {n}: pid {old} exited {gone:.2f} s after SIGUSR2 (drained)")
    p = show()
    states.add(f"{p['ActiveState']}/{p['SubState']}")
    expect(states == {"active/running"},
           f"upgrade {n}: unit states seen, polled every 50 ms: {sorted(states)}")
    expect(int(p["MainPID"]) == new and p["NRestarts"] == "0",
           f"upgrade {n}: after it MainPID={p['MainPID']} NRestarts={p['NRestarts']}")
    # systemd's own record of the old process (debug level, set below).
    died = [m for pid, m in messages("_PID=1") if m.startswith(f"Child {old} (")]
    expect(any("code=exited, status=0/SUCCESS" in m for m in died),
           f"upgrade {n}: systemd: {died[-1] if died else f'no record of pid {old} exiting'}")
    said = [m for pid, m in messages("-u", UNIT) if pid == old]
    expect(any("the new process is ready; draining" in m for m in said),
           f"upgrade {n}: pid {old} logged the handover")
    for m in said:
        if '"level":"WARN"' in m or '"level":"ERROR"' in m:
            print(f"     pid {old} logged: {m[:200]}")
    return new


def main(argv):
    global leader
    if len(argv) < 4:
        print(__doc__)
        return 2
    leader, binary, installed = int(argv[1]), argv[2], argv[3]
    rounds = int(argv[4]) if len(argv) > 4 else 2
    version = inside("systemctl", "--version").stdout.splitlines()[0]
    ok(f"{version} is PID 1 of the container ({inside('systemd-detect-virt', check=False).stdout.strip()})")
    main_pid = start()
    traffic()
    # PID 1's debug log records every child it reaps with its exit status.
    inside("systemctl", "log-level", "debug")
    with Load() as load:
        time.sleep(2)
        for n in range(1, rounds + 1):
            main_pid = upgrade(n, binary, installed)
            time.sleep(2)
    sent = sum(load.sent.values())
    kinds = ", ".join(f"{k} {v} (slowest {load.slowest[k]:.2f} s)" for k, v in sorted(load.sent.items()))
    expect(sent > 0 and not load.failed, f"load across {rounds} upgrades: {sent} requests ({kinds}), {len(load.failed)} failed")
    for kind, r in load.failed[:10]:
        print(f"     failed {kind}: {r!r}")
    # ExecReload signals $MAINPID: the process that took over.
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 1))
    inside("systemctl", "reload", UNIT)
    reloaded = harness.wait_for(
        "SIGHUP in the journal",
        lambda: [pid for pid, m in messages("-u", UNIT, "--since", since, "--utc") if "SIGHUP: reloading" in m],
        timeout=20)
    expect(reloaded == [main_pid], f"systemctl reload: SIGHUP reached pid {reloaded} (MainPID {main_pid})")
    # `systemctl stop` with a stream open: SIGTERM to the main PID, which
    # drains (the stream ends whole) and exits 0; never SIGKILL.
    streamed = []
    stream = threading.Thread(target=lambda: streamed.append(chat(True, 16)))
    stream.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    inside("systemctl", "stop", UNIT, timeout=90)
    took = time.monotonic() - t0
    stream.join(60)
    p = show()
    expect(p["ActiveState"] == "inactive" and p["Result"] == "success",
           f"systemctl stop: {took:.2f} s, {p['ActiveState']}, Result={p['Result']}")
    # The unit is unloaded once inactive (ExecMainStatus reads 0 then):
    # systemd's own line about the main process's end.
    ended = [m for pid, m in messages("_PID=1") if m.startswith(f"{UNIT}: Main process exited")]
    expect(ended and "code=exited, status=0/SUCCESS" in ended[-1],
           f"systemd: {ended[-1] if ended else 'no record of the main process exiting'}")
    expect(streamed and answered("stream", streamed[0]),
           f"a stream open during the stop ended whole: {streamed[0] if streamed else None!r}")
    killed = [m for pid, m in messages("_PID=1") if "orinari" in m and "SIGKILL" in m]
    expect(not killed, f"systemd sent no SIGKILL: {killed[:3]}")
    inside("systemctl", "log-level", "info")
    warned = [m for pid, m in messages("_PID=1", "-p", "warning") if "orinari" in m]
    expect(not warned, f"systemd logged {len(warned)} warnings about the unit")
    for m in warned[:10]:
        print(f"     {m}")
    print(f"systemd: {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (RuntimeError, AssertionError, subprocess.TimeoutExpired) as e:
        print(f"FAIL {e}")
        sys.exit(1)
