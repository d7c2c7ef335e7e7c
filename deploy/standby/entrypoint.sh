#!/bin/bash
# Entry point of docker-compose.yml's hot standby. On the first start: wait
# until a quorum of safekeepers streams from the primary (their slots are
# active), take a base backup of the primary, mark it a standby. Then run the
# service's command (postgres with primary_conninfo naming the safekeepers:
# after the base backup the standby never streams from the primary itself).
set -euo pipefail

: "${PGDATA:?PGDATA must be set}"
export PGPASSWORD
PGPASSWORD="$(cat /run/secrets/replicator_password)"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 0700 "$PGDATA"

	# The safekeepers stream from the segment holding the primary's position
	# when they first connected: WAL the standby needs after the backup is
	# theirs only if they were streaming before it started.
	echo "standby: waiting for 2 of sk1, sk2, sk3 to stream from the primary"
	until n="$(psql -h primary -U replicator -d postgres -XAt -c \
		"SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('sk1', 'sk2', 'sk3') AND active" 2>/dev/null)" &&
		[ "${n:-0}" -ge 2 ]; do
		sleep 2
	done

	echo "standby: base backup of the primary"
	gosu postgres pg_basebackup -h primary -U replicator -D "$PGDATA" \
		--wal-method=stream --checkpoint=fast --no-password --progress
	gosu postgres touch "$PGDATA/standby.signal"
fi

unset PGPASSWORD
exec gosu postgres "$@"
