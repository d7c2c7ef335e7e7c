// Package offload archives a timeline's finished WAL: every complete,
// fsynced segment of the timeline's history and every history file is
// uploaded exactly once to the archive (pkg/archive), with bounded
// parallelism. The archived position, backup_lsn, advances only over a
// contiguous prefix of uploaded segments, is persisted in the control file
// before retention may act on it, and never moves backwards, with two
// exceptions the timeline makes: a timeline switch whose switch point lies
// below it re-bases it to the segment holding the switch point (that
// segment of the new timeline is not archived yet), and pointing the
// timeline at another archive restarts it at the local start.
//
// An Offloader is a per-timeline service: Run uploads until its context
// ends, so whoever decides that this node offloads (today: always; with a
// leader election: the elected node) starts and stops it. Failed uploads
// are retried forever with capped exponential backoff and jitter; an
// archive outage never blocks ingest, acknowledgements or serving, because
// nothing on those paths waits for the offloader. An object that exists
// with different content stops offloading for the timeline (logged,
// reported in status and metrics); it is never overwritten.
package offload
