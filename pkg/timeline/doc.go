// Package timeline owns the WAL of each hosted timeline, keyed by
// (tenant_id, timeline_id): its control data, the WAL writer, the durable
// end of WAL and the broadcast that wakes waiting senders when it (or the
// local start, the archived position or the PostgreSQL timeline) changes,
// the PostgreSQL timeline history and switches to a new timeline, and the
// two positions that bound local WAL: the local start (advanced by
// RemoveBefore) and the archived prefix (BackupLSN).
//
// Ingest writes through a Timeline (Append, then Flush); senders read the
// durable end (FlushLSN) and wait on Changed() without polling. The files
// themselves belong to walstore; slots, consumers and the upstream status
// live in their own packages, and a supervisor runs the services that act
// on a timeline.
package timeline
