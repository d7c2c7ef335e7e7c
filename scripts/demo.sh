#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL primary from the installed binaries, a
# safekeeper streaming from it (single node, no etcd, no S3) and archiving
# finished segments to a file:// archive in the work directory, some WAL,
# local segments removed once archived, and pg_receivewal streaming all of
# that WAL back from the safekeeper (the old part read from the archive).
set -euo pipefail
cd "$(dirname "$0")/.."

SK_BIN=${SK_BIN:-bin/safekeeper}
PG_PORT=${DEMO_PG_PORT:-55432}
SK_PORT=${DEMO_SK_PORT:-5454}
HTTP_PORT=${DEMO_HTTP_PORT:-7676}

pgbin=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
  echo "demo: PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BINDIR)" >&2
  exit 1
fi
asuser() {  # PostgreSQL refuses to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

work=$(mktemp -d /tmp/safekeeper-demo.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/pg" "$work/received" "$work/archive"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
pgdata="$work/pg/data"

cleanup() {
  [ -n "${sk_pid:-}" ] && kill -TERM "$sk_pid" 2>/dev/null && wait "$sk_pid" 2>/dev/null || true
  asuser "$pgbin/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "==> initdb and start a throwaway primary on 127.0.0.1:$PG_PORT"
asuser "$pgbin/initdb" -D "$pgdata" -A trust -U postgres --no-sync >/dev/null
cat >>"$pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$work/pg'
wal_level = replica
wal_keep_size = '256MB'
CONF
asuser "$pgbin/pg_ctl" -D "$pgdata" -l "$work/pg/postgres.log" -w start >/dev/null
psql() { "$pgbin/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

echo "==> start the safekeeper (pg protocol on :$SK_PORT, HTTP on :$HTTP_PORT, archive file://$work/archive)"
"$SK_BIN" run --data-dir "$work/safekeeper" \
  --listen-pg "127.0.0.1:$SK_PORT" --listen-http "127.0.0.1:$HTTP_PORT" \
  --upstream "host=127.0.0.1 port=$PG_PORT user=postgres" \
  --archive "file://$work/archive" \
  >"$work/safekeeper.log" 2>&1 &
sk_pid=$!
first=
for _ in $(seq 300); do
  if ! kill -0 "$sk_pid" 2>/dev/null; then break; fi
  if first=$("$pgbin/psql" -X -At "host=127.0.0.1 port=$SK_PORT user=postgres replication=true" -c IDENTIFY_SYSTEM 2>/dev/null | cut -d'|' -f3) && [ -n "$first" ]; then break; fi
  first=
  sleep 0.1
done
# Whatever answered must be our safekeeper: a busy port makes it exit while
# another server may still answer there.
if ! kill -0 "$sk_pid" 2>/dev/null || [ -z "$first" ]; then
  echo "demo: the safekeeper did not start (ports $SK_PORT and $HTTP_PORT must be free; set DEMO_SK_PORT / DEMO_HTTP_PORT). Its log:" >&2
  tail -n 20 "$work/safekeeper.log" >&2
  sk_pid=
  exit 1
fi
# The first segment the safekeeper holds: the one holding the primary's
# position at first contact (16 MB segments: X/Y is segment X*256 + Y>>24).
segname() { printf '00000001%08X%08X' $((0x${1%/*})) $((0x${1#*/} >> 24)); }
firstseg=$(segname "$first")

echo "==> write some WAL on the primary"
psql -c "CREATE TABLE demo(id serial PRIMARY KEY, payload text)"
for _ in 1 2 3; do
  psql -c "INSERT INTO demo(payload) SELECT md5(g::text) FROM generate_series(1, 20000) g" -c "SELECT pg_switch_wal()" >/dev/null
done
psql -c "INSERT INTO demo(payload) VALUES ('last')"
endpos=$(psql -At -c "SELECT pg_current_wal_flush_lsn()")
echo "    primary flushed up to $endpos"

echo "==> IDENTIFY_SYSTEM on the safekeeper"
"$pgbin/psql" -X "host=127.0.0.1 port=$SK_PORT user=postgres replication=true" -c IDENTIFY_SYSTEM

echo "==> finished segments are archived, then removed locally"
segdir=$(dirname "$(ls -d "$work"/safekeeper/*/*/safekeeper.control)")
timeline_id=$(basename "$segdir")
tenant_id=$(basename "$(dirname "$segdir")")
echo "    tenant_id $tenant_id, timeline_id $timeline_id (derived from the primary's system identifier)"
for _ in $(seq 300); do
  archived=$(find "$work/archive" -name '*.zst' | wc -l)
  [ -e "$segdir/$firstseg" ] || [ "$archived" -lt 1 ] || break
  sleep 0.1
done
echo "    archive:"; find "$work/archive" -type f | sed "s|$work/archive/|      |" | sort
echo "    local segments now:"; ls "$segdir" | grep -E '^[0-9A-F]{24}' | sed 's/^/      /'

echo "==> stream all of it back with pg_receivewal from $firstseg (old segments come from the archive)"
# pg_receivewal resumes an empty .partial from its beginning.
: >"$work/received/$firstseg.partial"
"$pgbin/pg_receivewal" -h 127.0.0.1 -p "$SK_PORT" -U postgres -D "$work/received" \
  --endpos "$endpos" --no-loop --verbose 2>&1 | sed 's/^/    /'

echo "==> compare with the primary's pg_wal"
ok=0
for f in "$work"/received/*; do
  name=$(basename "$f")
  case "$name" in *.partial) continue;; esac
  if cmp -s "$f" "$pgdata/pg_wal/$name"; then echo "    $name identical"; ok=$((ok+1)); else echo "    $name DIFFERS"; exit 1; fi
done
echo "    $ok complete segments byte-identical to the primary's"

echo "==> /v1/status"
if command -v curl >/dev/null; then curl -s "http://127.0.0.1:$HTTP_PORT/v1/status" | sed 's/^/    /' | head -n 40; fi

cat <<EOF2

Where to look:
  safekeeper WAL and control file: $segdir/
  WAL archive (zstd):              $work/archive/$tenant_id/$timeline_id/wal/
  safekeeper log:                  $work/safekeeper.log
  WAL received by pg_receivewal:   $work/received/
  primary data directory and log:  $pgdata, $work/pg/postgres.log
(the primary and the safekeeper are stopped now; remove $work when done)
EOF2
