"""A fault-injecting TCP proxy for the test harness (issue #23 item 3).

It sits between ORINARI and something it depends on (a model upstream,
PostgreSQL, Redis): ORINARI connects to the proxy's port, the proxy connects
to the real peer and copies bytes both ways, and on the way it can inject
the faults a real network and real peers produce:

  latency_ms      every chunk waits this long before it is passed on (both
                  directions), as on a slow or distant link
  bandwidth_bps   each direction of each connection is throttled to this
                  many bytes per second
  blackhole       half-open connections: new connections are accepted (the
                  kernel completes the handshake) but never reach the peer,
                  and on open connections nothing is passed on any more in
                  either direction — the other side waits forever unless
                  its own deadline fires; the connections stay half-open
                  even after the fault is cleared, as after a peer's crash
                  behind a dead route
  refuse          new connections are reset at once (RST), as by a peer
                  whose port is closed
  truncate_after  each connection's answer (peer -> client) is cut after
                  this many bytes with a reset, as by a peer dying mid-reply
  reset_all()     every open connection is reset now (pooled connections die)

Only the standard library is used. The proxy runs its own asyncio event
loop in a daemon thread, so a synchronous test script drives it:

    from faultproxy import FaultProxy
    p = FaultProxy("127.0.0.1", 5432).start()   # p.port: where to connect
    p.set(latency_ms=300)                        # faults, changed live
    p.set()                                      # back to a clean link
    p.reset_all()
    p.stats()                                    # counters

Or as a process, with commands on standard input (one per line:
`latency 300`, `bandwidth 1000`, `blackhole on|off`, `refuse on|off`,
`truncate 100|off`, `reset`, `clear`, `stats`):

    python3 faultproxy.py TARGET_HOST:TARGET_PORT [LISTEN_PORT]
"""

import asyncio
import socket
import struct
import sys
import threading
import time

CHUNK = 16384


def _rst(writer):
    """Close a connection with a reset (SO_LINGER 0) instead of a FIN."""
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    except Exception:  # noqa: BLE001 - already gone is fine
        pass


class FaultProxy:
    """One listening port forwarding to one target, with live faults."""

    def __init__(self, target_host, target_port, listen_port=0, name="proxy"):
        self.target = (target_host, target_port)
        self.listen_port = listen_port
        self.name = name
        self.port = None
        self._faults = {}
        self._conns = set()
        self._loop = None
        self._server = None
        self._ready = threading.Event()
        self.counters = {"accepted": 0, "forwarded": 0, "refused": 0, "blackholed": 0,
                         "truncated": 0, "reset": 0, "upstream_errors": 0}

    # -- control (any thread) ------------------------------------------------

    def start(self):
        """Start listening on 127.0.0.1 (port 0: a free one); returns self."""
        threading.Thread(target=self._run, name=self.name, daemon=True).start()
        if not self._ready.wait(10) or self.port is None:
            raise RuntimeError(f"{self.name}: did not start")
        return self

    def set(self, **faults):
        """Replace the faults: latency_ms, bandwidth_bps, blackhole, refuse,
        truncate_after. `set()` clears them all."""
        known = {"latency_ms", "bandwidth_bps", "blackhole", "refuse", "truncate_after"}
        unknown = set(faults) - known
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}")
        self._faults = {k: v for k, v in faults.items() if v}

    def reset_all(self):
        """Reset every open connection (both sides)."""
        done = threading.Event()

        def run():
            for client, upstream in list(self._conns):
                _rst(client)
                if upstream is not None:
                    _rst(upstream)
                self.counters["reset"] += 1
            self._conns.clear()
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def stats(self):
        """Counters, plus the connections open now."""
        return dict(self.counters, open=len(self._conns))

    def stop(self):
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- the proxy (its own loop) --------------------------------------------

    def _run(self):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def listen():
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)
            self.port = self._server.sockets[0].getsockname()[1]

        try:
            self._loop.run_until_complete(listen())
        finally:
            self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader, writer):
        self.counters["accepted"] += 1
        f = self._faults
        if f.get("refuse"):
            self.counters["refused"] += 1
            _rst(writer)
            return
        if f.get("blackhole"):
            # Accepted, never forwarded, never answered.
            self.counters["blackholed"] += 1
            pair = (writer, None)
            self._conns.add(pair)
            try:
                while await reader.read(CHUNK):
                    pass
            except Exception:  # noqa: BLE001
                pass
            self._conns.discard(pair)
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.counters["upstream_errors"] += 1
            _rst(writer)
            return
        self.counters["forwarded"] += 1
        pair = (writer, up_writer)
        self._conns.add(pair)
        state = {"dead": False}
        await asyncio.gather(
            self._pump(reader, up_writer, pair, state, downstream=False),
            self._pump(up_reader, writer, pair, state, downstream=True),
        )
        self._conns.discard(pair)

    async def _pump(self, reader, writer, pair, state, downstream):
        sent = 0
        try:
            while not state["dead"]:
                data = await reader.read(CHUNK)
                if not data:
                    break
                f = self._faults
                if f.get("blackhole"):
                    # A link that went dead: swallow, never deliver.
                    state["blackholed"] = True
                if state.get("blackholed"):
                    continue
                if f.get("latency_ms"):
                    await asyncio.sleep(f["latency_ms"] / 1000)
                cut = f.get("truncate_after")
                if downstream and cut and sent + len(data) > cut:
                    writer.write(data[: max(0, cut - sent)])
                    await writer.drain()
                    self.counters["truncated"] += 1
                    state["dead"] = True
                    for w in pair:
                        _rst(w)
                    return
                bps = f.get("bandwidth_bps")
                if bps:
                    # Pass it on in small pieces, each after its share of time.
                    step = max(1, bps // 20)
                    for i in range(0, len(data), step):
                        piece = data[i : i + step]
                        await asyncio.sleep(len(piece) / bps)
                        writer.write(piece)
                        await writer.drain()
                else:
                    writer.write(data)
                    await writer.drain()
                sent += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if not state["dead"] and not state.get("blackholed"):
                # A clean end on one side is passed on as a clean end.
                try:
                    if writer.can_write_eof():
                        writer.write_eof()
                except (ConnectionError, OSError, RuntimeError):
                    pass


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    host, port = sys.argv[1].rsplit(":", 1)
    listen = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    p = FaultProxy(host, int(port), listen).start()
    print(f"faultproxy: 127.0.0.1:{p.port} -> {host}:{port}", flush=True)
    faults = {}
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, arg = words[0], (words[1] if len(words) > 1 else "")
        on = arg not in ("off", "0", "")
        if cmd == "latency":
            faults["latency_ms"] = int(arg) if on else 0
        elif cmd == "bandwidth":
            faults["bandwidth_bps"] = int(arg) if on else 0
        elif cmd in ("blackhole", "refuse"):
            faults[cmd] = on
        elif cmd == "truncate":
            faults["truncate_after"] = int(arg) if on else 0
        elif cmd == "reset":
            p.reset_all()
        elif cmd == "clear":
            faults = {}
        elif cmd != "stats":
            print(f"faultproxy: unknown command {cmd}", flush=True)
            continue
        p.set(**faults)
        print(f"faultproxy: {faults} {p.stats()}", flush=True)
    time.sleep(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
