#!/usr/bin/env bash
# PostgreSQL point-in-time recovery drill (docs/operations/postgres-pitr.md).
#
# Proves, on this machine and with PostgreSQL's own tools, that a base backup
# plus a WAL archive restores exactly the state committed at a time T, and that
# a restored copy running with archive_mode=off leaves the shared archive
# untouched (no new timeline). Nothing here touches the system cluster on 5432:
# every server is a throwaway cluster in a private temp dir, on a free port,
# listening on 127.0.0.1 only, reached through its own Unix socket.
#
# Steps: initdb a primary with WAL archiving -> rows "base" -> pg_basebackup +
# pg_verifybackup -> rows "before" -> record T -> rows "after" and a delete ->
# switch and archive WAL -> crash the primary -> restore the base backup with
# restore_command + recovery_target_time=T + archive_mode=off -> assert.
# Then a control run repeats the restore with archive_mode=ON against a COPY
# of the archive, to show the pitfall the main run avoids is real: that copy
# writes 00000002.history into its archive, and a later "restore to latest"
# from it silently follows the stray timeline.
#
# Usage: scripts/pg-pitr-drill.sh [--no-control]
# Env:   PG_BIN (default /usr/lib/postgresql/15/bin)
#        PITR_DRILL_KEEP=1   keep the temp dir on exit (for debugging)
# Run as root (servers then run as the `postgres` OS user) or as any non-root
# user that may run initdb. Exit status 0 only when every check passes.
set -Eeuo pipefail

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
WAIT_S=60          # upper bound for every wait (server start, archiving, promotion)
# Free ports are searched upward from here. Below Linux's ephemeral range
# (32768-60999 by default), so no outgoing connection of a busy machine can
# hold the port between the free check (which only sees listeners) and the
# server's bind: that race once failed `make test` with "Address already in use".
FIRST_PORT=25432
CONTROL=1
for arg in "$@"; do
  case "$arg" in
    --no-control) CONTROL=0 ;;
    -h | --help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# Never pick up a connection target from the caller's environment.
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGOPTIONS PGDATA

# Keep the caller's stdout/stderr: a signal trap runs inside whatever
# redirection is active (e.g. a command's >/dev/null), and the summary must
# still reach the caller.
exec 8>&1 9>&2

step="setup"
started=()          # data dirs of servers this script started
used_ports=()
failures=0
checks=0
summary_done=0

say() { printf '[pitr-drill %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
now_ms() { date +%s%3N; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }

check() { # check NAME CONDITION-EXIT-STATUS(0=ok)
  local name="$1" ok="$2"
  checks=$((checks + 1))
  if [ "$ok" -eq 0 ]; then
    echo "PASS  $name"
  else
    echo "FAIL  $name"
    failures=$((failures + 1))
  fi
}

for tool in initdb pg_ctl psql pg_basebackup pg_verifybackup; do
  [ -x "$PG_BIN/$tool" ] || { echo "FAIL  $PG_BIN/$tool not found (set PG_BIN)" >&2; exit 1; }
done

# Servers refuse to run as root: as root, run every PostgreSQL command as the
# `postgres` OS user; otherwise as the current user.
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || { echo "FAIL  no 'postgres' OS user" >&2; exit 1; }
  as_pg() { runuser -u postgres -- "$@"; }
  pg_owner="postgres"
else
  as_pg() { "$@"; }
  pg_owner="$(id -un)"
fi

work="$(mktemp -d /tmp/orinari-pitr-drill.XXXXXX)"
chmod 700 "$work"
mkdir -p "$work/sock" "$work/archive" "$work/bin"
chown -R "$pg_owner:" "$work"
cd "$work" # the postgres user may not be able to read the caller's cwd

stop_server() { # stop_server DATADIR: bounded; escalates to SIGKILL of that postmaster only
  local dir="$1" pid
  [ -f "$dir/postmaster.pid" ] || return 0
  as_pg "$PG_BIN/pg_ctl" stop -D "$dir" -m immediate -w -t 15 >/dev/null 2>&1 && return 0
  pid="$(head -n1 "$dir/postmaster.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  exec 1>&8 2>&9
  for dir in "${started[@]}"; do stop_server "$dir"; done
  cd /
  if [ "${PITR_DRILL_KEEP:-0}" = 1 ]; then
    echo "kept: $work"
  else
    rm -rf "$work"
  fi
  if [ "$summary_done" -eq 0 ]; then
    echo "RESULT: FAIL (aborted during: $step, exit $rc)"
    [ "$rc" -eq 0 ] && rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { # sets PORT (no subshell, so used_ports is kept)
  local p=$FIRST_PORT
  while [ "$p" -lt $((FIRST_PORT + 200)) ]; do
    if [[ " ${used_ports[*]} " != *" $p "* ]] && port_free "$p"; then
      used_ports+=("$p")
      PORT="$p"
      return 0
    fi
    p=$((p + 1))
  done
  echo "no free port in $FIRST_PORT..$((FIRST_PORT + 199))" >&2
  return 1
}

sql() { # sql PORT QUERY -> unaligned tuples, stops on the first error
  as_pg "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$work/sock" -p "$1" -d postgres -c "$2"
}

start_server() { # start_server DATADIR: bounded wait for connections
  started+=("$1")
  if ! as_pg "$PG_BIN/pg_ctl" start -D "$1" -l "$1.log" -w -t "$WAIT_S" >/dev/null 8>&- 9>&-; then
    echo "server in $1 did not start; last log lines:" >&2
    tail -n 20 "$1.log" >&2 || true
    return 1
  fi
}

wait_for() { # wait_for WHAT PORT QUERY EXPECTED: poll up to WAIT_S seconds
  local what="$1" port="$2" query="$3" want="$4" got="" deadline=$(($(date +%s) + WAIT_S))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    got="$(sql "$port" "$query" 2>/dev/null || true)"
    [ "$got" = "$want" ] && return 0
    sleep 0.1
  done
  echo "timed out after ${WAIT_S}s waiting for $what (last: '$got')" >&2
  return 1
}

wait_archived() { # wait_archived PORT: switch WAL and wait until that segment is archived
  local port="$1" seg
  seg="$(sql "$port" "SELECT pg_walfile_name(pg_switch_wal())")"
  wait_for "archiving of $seg" "$port" \
    "SELECT coalesce(last_archived_wal >= '$seg', false) FROM pg_stat_archiver" t
}

# The archive command from the guide: copy to a temp name, fsync, rename; an
# existing file is accepted only if identical, otherwise archiving fails
# rather than overwrite.
cat >"$work/bin/pg-wal-archive" <<'SH'
#!/bin/sh
set -eu
src="$1" dst="$2"
if [ -e "$dst" ]; then
  cmp -s "$src" "$dst" && exit 0
  echo "pg-wal-archive: $dst exists and differs; refusing to overwrite" >&2
  exit 1
fi
cp "$src" "$dst.tmp"
sync "$dst.tmp"
mv "$dst.tmp" "$dst"
sync "$(dirname "$dst")"
SH
chmod 755 "$work/bin/pg-wal-archive"
chown "$pg_owner:" "$work/bin/pg-wal-archive"

server_conf() { # server_conf PORT: settings every drill server shares
  cat <<EOF
listen_addresses = '127.0.0.1'
port = $1
unix_socket_directories = '$work/sock'
EOF
}

# restore DATADIR ARCHIVE ARCHIVE_MODE [TARGET_TIME]: base backup -> new data dir
# with recovery settings, start it, wait for promotion. Sets PORT.
restore() {
  local dir="$1" archive="$2" mode="$3" target="${4:-}" port
  pick_port
  port="$PORT"
  as_pg cp -a "$work/base" "$dir"
  chmod 700 "$dir"
  {
    echo "# --- restore settings written by pg-pitr-drill.sh ---"
    server_conf "$port"
    echo "archive_mode = $mode"
    if [ "$mode" = on ]; then
      echo "archive_command = '$work/bin/pg-wal-archive %p $archive/%f'"
    fi
    echo "restore_command = 'cp $archive/%f %p'"
    if [ -n "$target" ]; then
      echo "recovery_target_time = '$target'"
      echo "recovery_target_action = 'promote'"
    fi
  } >>"$dir/postgresql.auto.conf"
  as_pg touch "$dir/recovery.signal"
  start_server "$dir" || return 1
  wait_for "promotion of $dir" "$port" "SELECT pg_is_in_recovery()" f || return 1
}

count() { sql "$1" "SELECT count(*) FROM drill WHERE phase = '$2'"; }

# --- 1. primary with continuous WAL archiving ------------------------------
step="initdb primary"
primary="$work/primary"
as_pg "$PG_BIN/initdb" -D "$primary" --auth-local=peer --auth-host=reject \
  --encoding=UTF8 --locale=C --data-checksums --no-instructions >"$work/initdb.log" 2>&1 ||
  { cat "$work/initdb.log" >&2; exit 1; }
pick_port
p_port="$PORT"
{
  echo "# --- settings written by pg-pitr-drill.sh ---"
  server_conf "$p_port"
  cat <<EOF
wal_level = replica
archive_mode = on
archive_command = '$work/bin/pg-wal-archive %p $work/archive/%f'
archive_timeout = 60
EOF
} >>"$primary/postgresql.conf"
step="start primary"
start_server "$primary"
say "primary up on 127.0.0.1:$p_port (data $primary)"

step="write base rows"
sql "$p_port" "CREATE TABLE drill (id bigserial PRIMARY KEY, phase text NOT NULL,
               at timestamptz NOT NULL DEFAULT clock_timestamp())" >/dev/null
sql "$p_port" "INSERT INTO drill (phase) SELECT 'base' FROM generate_series(1, 100)" >/dev/null

# --- 2. base backup ---------------------------------------------------------
step="base backup"
as_pg "$PG_BIN/pg_basebackup" -h "$work/sock" -p "$p_port" -D "$work/base" \
  -Fp -X stream -c fast -l "orinari-pitr-drill" >/dev/null
as_pg "$PG_BIN/pg_verifybackup" -q "$work/base"
say "base backup taken and verified ($(du -sh "$work/base" | cut -f1))"

# --- 3. writes before T, T, writes after T -----------------------------------
step="write rows around T"
for _ in 1 2 3; do # three transactions, only in the WAL archive, not in the base backup
  sql "$p_port" "INSERT INTO drill (phase) SELECT 'before' FROM generate_series(1, 100)" >/dev/null
done
wait_archived "$p_port"
sleep 0.2
target="$(sql "$p_port" "SELECT clock_timestamp()")"
sleep 0.2
say "T = $target"
sql "$p_port" "INSERT INTO drill (phase) SELECT 'after' FROM generate_series(1, 100)" >/dev/null
sql "$p_port" "DELETE FROM drill WHERE id = (SELECT min(id) FROM drill WHERE phase = 'before')" >/dev/null
wait_archived "$p_port"
say "primary: base $(count "$p_port" base), before $(count "$p_port" before) (one deleted after T), after $(count "$p_port" after); WAL archived"

# --- 4. lose the primary ----------------------------------------------------
step="crash primary"
as_pg "$PG_BIN/pg_ctl" stop -D "$primary" -m immediate -w -t 15 >/dev/null
ls "$work/archive" >"$work/archive.before"
say "primary crashed (pg_ctl stop -m immediate); archive holds $(wc -l <"$work/archive.before") files"

# --- 5. point-in-time restore with archive_mode=off --------------------------
step="restore to T"
t0="$(now_ms)"
restore "$work/restored" "$work/archive" off "$target"
r_port="$PORT"
sql "$r_port" "INSERT INTO drill (phase) VALUES ('restored-write')" >/dev/null
rto_ms=$(($(now_ms) - t0))
say "restored copy on 127.0.0.1:$r_port promoted and wrote a row after $(secs "$rto_ms") s"
stopped_at="$(grep -m1 'recovery stopping' "$work/restored.log" || true)"
[ -n "$stopped_at" ] && say "server log: ${stopped_at#*LOG:  }"

step="assertions"
echo
base_n="$(count "$r_port" base)"
before_n="$(count "$r_port" before)"
after_n="$(count "$r_port" after)"
check "rows committed before the base backup are present ($base_n/100)" "$([ "$base_n" = 100 ] && echo 0 || echo 1)"
check "rows committed after the backup and before T are present ($before_n/300, incl. the one deleted after T)" \
  "$([ "$before_n" = 300 ] && echo 0 || echo 1)"
check "rows committed after T are absent ($after_n found)" "$([ "$after_n" = 0 ] && echo 0 || echo 1)"
in_rec="$(sql "$r_port" "SELECT pg_is_in_recovery()")"
written="$(count "$r_port" restored-write)"
check "restored server is promoted (in recovery: $in_rec) and accepts writes ($written row)" \
  "$([ "$in_rec" = f ] && [ "$written" = 1 ] && echo 0 || echo 1)"
mode="$(sql "$r_port" "SHOW archive_mode")"
check "restored server runs with archive_mode=$mode" "$([ "$mode" = off ] && echo 0 || echo 1)"
# Give a would-be archiver every chance: a WAL switch and a checkpoint, then a pause.
sql "$r_port" "SELECT pg_switch_wal()" >/dev/null
sql "$r_port" "CHECKPOINT" >/dev/null
sleep 1
local_tl="$(find "$work/restored/pg_wal" -maxdepth 1 -name '*.history' | wc -l)"
history_n="$(find "$work/archive" -maxdepth 1 -name '*.history' | wc -l)"
ls "$work/archive" >"$work/archive.after"
check "restored copy branched a new timeline locally ($local_tl history file in its pg_wal)" \
  "$([ "$local_tl" -ge 1 ] && echo 0 || echo 1)"
check "shared archive gained no timeline history file ($history_n *.history) and no file at all" \
  "$([ "$history_n" = 0 ] && cmp -s "$work/archive.before" "$work/archive.after" && echo 0 || echo 1)"
stop_server "$work/restored"

# --- 6. control: the pitfall, on a copy of the archive -----------------------
if [ "$CONTROL" -eq 1 ]; then
  step="control restore with archive_mode=on"
  as_pg cp -a "$work/archive" "$work/archive-copy"
  restore "$work/control" "$work/archive-copy" on "$target"
  c_port="$PORT"
  sql "$c_port" "INSERT INTO drill (phase) VALUES ('stray')" >/dev/null
  wait_archived "$c_port"
  stop_server "$work/control"
  leaked="$(find "$work/archive-copy" -maxdepth 1 -name '*.history' -printf '%f ')"
  check "control: a restored copy with archive_mode=on writes ${leaked:-nothing }into its archive" \
    "$([ -n "$leaked" ] && echo 0 || echo 1)"
  step="control restore to latest"
  restore "$work/latest" "$work/archive-copy" off
  l_port="$PORT"
  stray_n="$(count "$l_port" stray)"
  after_n="$(count "$l_port" after)"
  check "control: a later restore-to-latest from that archive follows the stray timeline (stray $stray_n, after-T rows $after_n)" \
    "$([ "$stray_n" = 1 ] && [ "$after_n" = 0 ] && echo 0 || echo 1)"
  stop_server "$work/latest"
fi

echo
summary_done=1
if [ "$failures" -eq 0 ]; then
  echo "RESULT: PASS ($checks/$checks checks) - restore to T took $(secs "$rto_ms") s (RTO for this drill)"
else
  echo "RESULT: FAIL ($failures of $checks checks failed) - restore to T took $(secs "$rto_ms") s"
  exit 1
fi
