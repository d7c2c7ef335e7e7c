// Package walreader reads WAL byte ranges for senders. It is designed as a
// tiered reader: an in-memory window of recent WAL, the local segment files,
// and the S3 archive, consulted in that order, each tier answering
// ErrNotInTier when it does not hold the requested range. This version
// implements the local-segment tier; the other tiers plug in behind the
// same Tier interface.
//
// A Reader belongs to one consumer and is not safe for concurrent use. It
// keeps the current segment file open, so streaming costs one pread per
// message and no allocation.
package walreader
