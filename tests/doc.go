// Package tests holds the end-to-end tests: a real PostgreSQL primary (and
// standbys) started by internal/pgtest, the safekeeper binary built from
// this tree and run as a separate process, and the unmodified PostgreSQL
// clients (pg_receivewal, psql, a hot standby's walreceiver) talking to it.
package tests
