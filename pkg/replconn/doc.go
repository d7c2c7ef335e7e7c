// Package replconn is the client side of the replication protocol's
// command mode, shared by the upstream receiver and wal-fetch: simple
// queries on a replication connection (pgconn), IDENTIFY_SYSTEM, SHOW
// wal_segment_size and TIMELINE_HISTORY with their results checked, and
// SQLSTATE tests. Streaming (START_REPLICATION) stays with each user: the
// receiver writes what it gets, wal-fetch collects one segment.
package replconn
