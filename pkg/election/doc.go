// Package election chooses, per timeline, the one safekeeper that offloads
// WAL to the archive, and lets the safekeepers of a timeline see each other.
//
// It owns everything this project keeps in etcd, under a prefix (default
// /safekeeper):
//
//	<prefix>/timelines/<tenant>/<timeline>/nodes/<name>   lease-bound JSON NodeInfo, one per node
//	<prefix>/timelines/<tenant>/<timeline>/offloader/...  the election: one lease-bound key per candidate
//	<prefix>/timelines/<tenant>/<timeline>/backup_lsn     the shared archived position, "%08X/%016X" (tli, lsn)
//
// A Member runs one node's part for one timeline in etcd sessions: a lease
// kept alive by client/v3/concurrency. In each session it publishes the
// node's NodeInfo (rate-limited), watches the timeline's keys (peers, the
// leader, backup_lsn, which it hands to the node with Local.AdoptBackup),
// and campaigns while the node is eligible (it holds the next segment to
// archive). When the session is lost (lease expired or revoked, etcd
// unreachable for the TTL) everything of the session stops and a new one is
// built, with backoff, for as long as Run runs.
//
// The election uses concurrency.Election's layout (offloader/<lease id>;
// the candidate created first leads) but its own waiting, so that every "am
// I first?" check also proves the candidate's own key still exists, and so
// that giving up never blocks on an unreachable etcd. The winner runs the
// leader's work (a LeadFunc) under a context that ends with its session, on
// shutdown, or on hand-over. Its only shared write, moving backup_lsn
// forward (Term.Advance), is a transaction guarded by the leader key's
// create revision, so a former leader that was paused past its lease is
// fenced: its writes fail with ErrLostLeadership. Objects in the archive
// are never overwritten (package archive), which makes an overlapping
// former leader harmless there too.
//
// A leader whose archive lag (start of the flush position's segment minus
// its backup position) exceeds MaxLag while its backup position does not
// move for StallTimeout hands over when a peer is eligible: it resigns and
// does not campaign for StallTimeout, so that a stuck offloader cannot stop
// WAL removal on every node.
package election
