#!/bin/bash
# Run once, at initdb time, by the postgres image's entrypoint
# (/docker-entrypoint-initdb.d): the role the safekeepers and the standby's
# base backup connect as, and the pg_hba.conf rule letting it replicate with
# SCRAM. Sourced or executed, so no `exit` and no `set -u` here.
set -eo pipefail

replicator_password="$(cat /run/secrets/replicator_password)"

# synchronous_standby_names ('ANY 2 (sk1, sk2, sk3)') is already in force on
# the entrypoint's temporary server and no safekeeper is connected yet: commit
# locally, or CREATE ROLE would wait for a quorum that cannot exist.
PGOPTIONS='-c synchronous_commit=local' psql -v ON_ERROR_STOP=1 --no-psqlrc \
	--username "$POSTGRES_USER" --dbname postgres \
	--set replicator_password="$replicator_password" <<'SQL'
CREATE ROLE replicator WITH LOGIN REPLICATION PASSWORD :'replicator_password';
SQL

# "all" in the database column does not match replication connections: the
# image's own "host all all all scram-sha-256" line does not cover them.
cat >> "$PGDATA/pg_hba.conf" <<'HBA'

# safekeepers and the standby's base backup (deploy/primary/init-replication.sh)
host replication replicator all scram-sha-256
HBA
