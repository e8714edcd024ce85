"""Crash at random points (issue #23 item 4).

A real `orinari serve` takes writes from three clients at once — API keys
(admin API), incidents with updates (admin API) and visitor webhook
subscriptions (public API, verified against a local echo endpoint) — and is
killed with SIGKILL at a random moment, over and over. After each kill:

  * SQLite: `PRAGMA integrity_check` says ok, and every write the clients
    saw acknowledged (a 2xx with its id) is in its table; the server starts
    again on the same file and lists them too;
  * PostgreSQL (the last third of the iterations, own database): every
    acknowledged row is there, read directly with psql, and the server
    starts again on it;
  * backups (SQLite): changes are shipped every second to a file://
    destination while the server is killed; at the end `orinari backup
    verify` passes and a restore to "now" holds every acknowledged write.

Prints a line per iteration and a summary with the counts; exits 1 if any
check failed. The random seed is printed (CRASH_SEED reproduces a run).

Usage: crash.py BINARY WORKDIR ITERATIONS
"""

import base64
import datetime
import http.server
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import Server, exit_on_sigterm, free_port  # noqa: E402

BIN, WORK, ITERATIONS = sys.argv[1], sys.argv[2], int(sys.argv[3])
SEED = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
rng = random.Random(SEED)

failures = []
counts = {"iterations": 0, "kills": 0, "sent": 0, "cut_off": 0, "acknowledged": 0,
          "keys": 0, "incidents": 0, "incident_updates": 0, "subscriptions": 0}


def check(name, ok, detail=""):
    if not ok:
        print(f"crash: FAIL {name}" + (f" ({detail})" if detail else ""), flush=True)
        failures.append(name)
    return ok


class Echo(http.server.BaseHTTPRequestHandler):
    """A webhook endpoint that passes the verification challenge (it echoes
    the body) and accepts every notification."""

    def do_POST(self):  # noqa: N802 - the http.server interface
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# Every acknowledged write: (table, id).
acked = []
acked_lock = threading.Lock()


def ack(table, ident, kind):
    with acked_lock:
        acked.append((table, str(ident)))
        counts["acknowledged"] += 1
        counts[kind] += 1


def tally(r):
    """Count a request: sent, and cut off (no answer: the server died)."""
    counts["sent"] += 1
    if r.status is None:
        counts["cut_off"] += 1
    return r


def writers(srv, echo_port, stop):
    """Three clients writing as fast as they are answered, until `stop`."""
    n = [0]

    def keys():
        while not stop.is_set():
            n[0] += 1
            r = tally(srv.admin("POST", "/admin/v1/keys", {"name": f"crash-{n[0]}"}, timeout=10))
            if r.status in (200, 201) and (r.json() or {}).get("id"):
                ack("api_keys", r.json()["id"], "keys")

    def incidents():
        while not stop.is_set():
            r = tally(srv.admin("POST", "/admin/v1/incidents",
                                {"name": "Crash drill", "status": "investigating", "impact": "minor",
                                 "message": "Checking."}, timeout=10))
            j = r.json() or {}
            if r.status in (200, 201) and j.get("id"):
                ack("status_incidents", j["id"], "incidents")
                u = tally(srv.admin("POST", f"/admin/v1/incidents/{j['id']}/updates",
                                    {"status": "resolved", "message": "Done."}, timeout=10))
                uj = u.json() or {}
                if u.status in (200, 201) and uj.get("status") == "resolved":
                    ack("resolved_incidents", j["id"], "incident_updates")

    def subscriptions():
        # At most 10 a client address an hour (in memory, so per start).
        for i in range(8):
            if stop.is_set():
                return
            r = tally(srv.post("/api/v2/subscribers.json",
                               {"endpoint": f"http://127.0.0.1:{echo_port}/hook/{i}"}, timeout=10))
            j = (r.json() or {}).get("subscriber") or {}
            if r.status in (200, 201) and j.get("id"):
                ack("status_webhooks", j["id"], "subscriptions")

    ts = [threading.Thread(target=f) for f in (keys, incidents, subscriptions)]
    for t in ts:
        t.start()
    return ts


def sqlite_check(db_path):
    """Integrity check and the acknowledged rows, straight from the file."""
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        missing = missing_rows(lambda sql: [str(r[0]) for r in conn.execute(sql).fetchall()])
    finally:
        conn.close()
    return integrity, missing


# What each acknowledged write left behind, as one query per kind.
ROWS = {
    "api_keys": "SELECT id FROM api_keys",
    "status_incidents": "SELECT id FROM status_incidents",
    "resolved_incidents": "SELECT id FROM status_incidents WHERE status = 'resolved'",
    "status_webhooks": "SELECT id FROM status_webhooks",
}


def missing_rows(ids_of):
    """The acknowledged writes not found; `ids_of(sql)` lists the ids."""
    with acked_lock:
        todo = list(acked)
    present = {kind: set(ids_of(sql)) for kind, sql in ROWS.items()}
    return [(kind, ident) for kind, ident in todo if ident not in present[kind]]


def pg_ids(db):
    def ids_of(sql):
        r = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-tAc", sql],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return r.stdout.split()
    return ids_of


def listed(srv):
    """Whether the server, restarted, lists every acknowledged key."""
    r = srv.admin("GET", "/admin/v1/keys", timeout=30)
    ids = {str(k.get("id")) for k in ((r.json() or {}).get("data") or (r.json() or {}).get("keys") or [])}
    with acked_lock:
        want = [i for t, i in acked if t == "api_keys"]
    return r.status == 200 and all(i in ids for i in want), f"{r.status}, {len(want)} keys, listed {len(ids)}"


def run_phase(name, srv, iterations, after_kill, echo_port):
    for i in range(iterations):
        t0 = time.monotonic()
        srv.start()
        started = time.monotonic() - t0
        ok, detail = listed(srv)
        check(f"{name} {i}: the restarted server lists every acknowledged key", ok, detail)
        stop = threading.Event()
        ts = writers(srv, echo_port, stop)
        wait = rng.uniform(0.2, 1.5)
        time.sleep(wait)
        # No new request after this one (each client has one in flight, which
        # the kill cuts off or lets through acknowledged).
        stop.set()
        srv.kill(signal.SIGKILL)
        counts["kills"] += 1
        for t in ts:
            t.join()
        counts["iterations"] += 1
        result = after_kill()
        print(f"crash: {name} {i}: started in {started:.1f}s, killed after {wait:.2f}s of writes; "
              f"{counts['acknowledged']} acknowledged so far; {result}; {time.monotonic() - t0:.1f}s", flush=True)


def main():
    exit_on_sigterm()
    os.makedirs(WORK, exist_ok=True)
    echo_port = free_port()
    echo = http.server.ThreadingHTTPServer(("127.0.0.1", echo_port), Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    print(f"crash: seed {SEED} (CRASH_SEED={SEED} repeats this run), {ITERATIONS} iterations", flush=True)
    t0 = time.monotonic()
    status_cfg = f"""
[status]
webhook_subscriptions = true
webhook_allow = ["127.0.0.0/8"]
builtin_checks = false

[[models]]
name = "fake-gpt"
[[models.backends]]
name = "nowhere"
provider = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"
"""
    key = base64.b64encode(os.urandom(32)).decode()
    backup_dir = os.path.join(WORK, "backups")
    sqlite_work = os.path.join(WORK, "sqlite")
    sqlite_cfg = f"""
[storage]
url = "sqlite://data/orinari.db"

[backup]
interval = "10s"
destinations = ["file://{backup_dir}"]
retention = "1h"
""" + status_cfg
    env = {"ORINARI_BACKUP_KEY": key, "ORINARI_LIMITS_REQUESTS_PER_MINUTE": "1000000"}
    db = f"orinari_crash_{os.getpid()}"
    srv = Server(BIN, sqlite_work, sqlite_cfg, env, label="crash-sqlite")
    pg_srv = None
    try:
        pg_iterations = ITERATIONS // 3
        db_path = os.path.join(sqlite_work, "data", "orinari.db")

        def after_sqlite_kill():
            integrity, missing = sqlite_check(db_path)
            check("sqlite: integrity_check", integrity == "ok", integrity)
            check("sqlite: every acknowledged write is in the file", not missing, f"missing {missing[:5]}")
            return f"integrity {integrity}, missing {len(missing)}"

        run_phase("sqlite", srv, ITERATIONS - pg_iterations, after_sqlite_kill, echo_port)

        # Backups: ship what the kills left behind, stop cleanly, verify, restore.
        srv.start()
        ok, detail = listed(srv)
        check("sqlite: the last restart lists every acknowledged key", ok, detail)
        time.sleep(3)
        code = srv.stop()
        check("sqlite: SIGTERM after the crashes: exit 0", code == 0, f"exit {code}")
        full_env = dict(os.environ, **env)
        v = subprocess.run([BIN, "backup", "verify"], cwd=sqlite_work, env=full_env, capture_output=True,
                           text=True, timeout=120)
        check("backup: `orinari backup verify` passes after the crashes", v.returncode == 0,
              (v.stdout + v.stderr).strip()[-300:])
        restored = os.path.join(WORK, "restored.db")
        at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        r = subprocess.run([BIN, "backup", "restore", "--at", at, "--to", restored], cwd=sqlite_work,
                           env=full_env, capture_output=True, text=True, timeout=120)
        if check("backup: restore to now", r.returncode == 0, (r.stdout + r.stderr).strip()[-300:]):
            integrity, missing = sqlite_check(restored)
            check("backup: the restored copy passes integrity_check", integrity == "ok", integrity)
            check("backup: the restored copy holds every acknowledged write", not missing,
                  f"{len(missing)} missing of {len(acked)}: {missing[:5]}")
            counts["restored_writes_checked"] = len(acked)

        # PostgreSQL.
        with acked_lock:
            acked.clear()
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
        pg_cfg = f"""
[storage]
url = "postgres://postgres@127.0.0.1:5432/{db}"
""" + status_cfg
        pg_srv = Server(BIN, os.path.join(WORK, "postgres"), pg_cfg, env, label="crash-postgres")
        query = pg_ids(db)

        def after_pg_kill():
            missing = missing_rows(query)
            check("postgres: every acknowledged write is in the database", not missing, f"missing {missing[:5]}")
            return f"missing {len(missing)}"

        run_phase("postgres", pg_srv, pg_iterations, after_pg_kill, echo_port)
        pg_srv.start()
        ok, detail = listed(pg_srv)
        check("postgres: the last restart lists every acknowledged key", ok, detail)
        check("postgres: SIGTERM: exit 0", pg_srv.stop() == 0)
        for s in (srv, pg_srv):
            if "panicked" in s.log_text():
                check(f"{s.label}: no panic in the log", False)
    except Exception as e:  # noqa: BLE001 - report, clean up, fail
        check(f"stage aborted: {type(e).__name__}: {e}", False)
        print(srv.log_tail(30), file=sys.stderr)
    finally:
        srv.kill()
        if pg_srv:
            pg_srv.kill()
        echo.shutdown()
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", db],
                       capture_output=True)
    summary = dict(counts, failed=len(failures), seconds=round(time.monotonic() - t0, 1), seed=SEED)
    print("crash: summary " + json.dumps(summary), flush=True)
    if failures:
        print("crash: FAILED: " + "; ".join(sorted(set(failures))[:10]), flush=True)
        return 1
    print("crash: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
