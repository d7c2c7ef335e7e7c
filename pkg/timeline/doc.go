// Package timeline owns the in-memory state of each hosted timeline, keyed
// by (tenant_id, timeline_id): its control data, the WAL writer, the durable
// end of WAL and the broadcast that wakes waiting senders when it advances,
// the upstream's status, and the registry of connected consumers with their
// latest feedback.
//
// Ingest writes through a Timeline (Append, then Flush); senders read the
// durable end (FlushLSN) and wait on Changed() without polling.
package timeline
