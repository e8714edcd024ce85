"""Shared helpers for the Python test stages (faults, crash, fairness):
start a real `orinari serve` or the fake upstream on free loopback ports,
make HTTP requests with a deadline, and read a few facts back.

Standard library only, so a stage needs nothing installed to use it.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

ADMIN_TOKEN = "harness-admin-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Response:
    def __init__(self, status, body, seconds, error=None, headers=None):
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.status = status
        self.body = body
        self.seconds = seconds
        self.error = error

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return f"<{self.status} in {self.seconds:.2f}s {self.error or self.body[:120]!r}>"


def request(method, url, body=None, headers=None, timeout=30.0):
    """One request; never raises for HTTP or network errors. `status` is
    None when no answer came (refused, reset, or timed out on our side)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h = {"content-type": "application/json"} if data is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode("utf-8", "replace")
            return Response(r.status, text, time.monotonic() - start, headers=dict(r.headers))
    except urllib.error.HTTPError as e:
        try:
            text = e.read().decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - a cut body is still an answer
            text = ""
        return Response(e.code, text, time.monotonic() - start, headers=dict(e.headers or {}))
    except Exception as e:  # noqa: BLE001 - timeouts, resets, refusals
        return Response(None, "", time.monotonic() - start, error=f"{type(e).__name__}: {e}")


class Server:
    """A real `orinari serve` in its own working directory."""

    def __init__(self, binary, workdir, config, env=None, label="orinari"):
        self.binary = binary
        self.workdir = workdir
        self.config = config
        self.env = env or {}
        self.label = label
        self.proc = None
        self.url = None
        self.log_path = os.path.join(workdir, "server.log")
        self.starts = 0

    def start(self, timeout=60.0):
        os.makedirs(self.workdir, exist_ok=True)
        with open(os.path.join(self.workdir, "orinari.toml"), "w") as f:
            f.write(self.config)
        env = dict(os.environ)
        env.update({
            "ORINARI_SERVER_LISTEN": "127.0.0.1:0",
            "ORINARI_ADMIN_TOKEN": ADMIN_TOKEN,
            "RUST_LOG": env.get("RUST_LOG", "info"),
        })
        env.update(self.env)
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts}\n")
        log.flush()
        offset = log.tell()
        self.proc = subprocess.Popen([self.binary, "serve"], cwd=self.workdir, env=env,
                                     stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                f.seek(offset)
                m = re.search(r"orinari is serving on (http://[^ /]+)/v1", f.read())
            if m:
                self.url = m.group(1)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label}: exited {self.proc.returncode} before listening:\n{self.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.label}: not listening after {timeout}s:\n{self.log_tail()}")

    def try_start(self, timeout=20.0):
        """Start, expecting it may fail: (True, None) or (False, exit code)."""
        try:
            self.start(timeout)
            return True, None
        except RuntimeError:
            return False, self.proc.returncode if self.proc else None

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self, timeout=30.0):
        """SIGTERM, and the exit code (None if it had to be killed)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def log_tail(self, n=30):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    # -- requests ------------------------------------------------------------

    def get(self, path, timeout=30.0, headers=None):
        return request("GET", self.url + path, headers=headers, timeout=timeout)

    def post(self, path, body, timeout=30.0, headers=None):
        return request("POST", self.url + path, body, headers=headers, timeout=timeout)

    def admin(self, method, path, body=None, timeout=30.0):
        return request(method, self.url + path, body,
                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=timeout)

    def chat(self, model, stream=False, key=None, timeout=30.0, content="Say hello."):
        body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return self.post("/v1/chat/completions", body, timeout=timeout, headers=headers)


class FakeUpstream:
    """The in-repo fake model upstream as a process."""

    def __init__(self, binary, args=()):
        self.binary = binary
        self.port = free_port()
        self.args = list(args)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.binary, "--listen", f"127.0.0.1:{self.port}", *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("fake upstream did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(what, check, timeout, every=0.25):
    """Poll `check()` until it returns something truthy; raises with `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def exit_on_sigterm():
    """Turn SIGTERM into SystemExit, so a stage's `finally` cleans up (its
    servers, proxies, mounts) when its run.sh is stopped."""
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
