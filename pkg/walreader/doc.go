// Package walreader reads WAL byte ranges for senders through tiers
// consulted in order, each answering ErrNotInTier when it does not hold
// the range: the window of recent durable WAL in memory (MemoryTier, see
// package walmem), the local segment files (LocalTier), then the archive
// (ArchiveTier: whole segments, checksum-verified, the next one
// prefetched). A consumer inside the memory window is served from it; one
// the window moved past misses it and reads files (or the archive) without
// a gap, and returns to memory once it has caught up. When no
// tier holds the WAL, the read fails with an error wrapping ErrUnavailable
// and PostgreSQL's 58P01 "requested WAL segment %s has already been
// removed", which the walsender turns into the consumer's error.
//
// Observers learn which tier served each read and how much (the consumer's
// status, the per-tier read metric). Bytes the memory window lends are
// counted when the sender reports them sent (Lent), so that a message the
// window moved past in the middle counts each byte once, for the tier it
// went out from.
//
// A Reader belongs to one consumer and is not safe for concurrent use. The
// local tier keeps the current segment file open, so streaming costs one
// pread per message and no allocation. ReadOrLocate reads nothing at all
// where it can: the sender gets the open file (for sendfile) or the memory
// window itself (a Lender, whose bytes it writes to the socket in place).
// When another tier takes over, the archive tier drops the segments it
// holds.
package walreader
