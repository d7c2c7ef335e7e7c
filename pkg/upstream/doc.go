// Package upstream owns the ingest side: a physical replication client of a
// stock PostgreSQL primary (pgx/v5 pgconn) that feeds one timeline. It
// writes received WAL through the timeline, makes it durable in group
// fsyncs on a separate goroutine so the network read never waits for the
// disk, and reports write/flush/apply positions upstream after every fsync
// and whenever the primary asks, so the primary can count this safekeeper
// as a synchronous standby.
package upstream
