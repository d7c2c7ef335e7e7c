// Package walmem keeps a window of a timeline's most recent durable WAL in
// memory, so that consumers keeping up with the end of WAL are served
// without reading segment files.
//
// A Window is a ring of fixed capacity split into chunks. The ingest path
// copies WAL into it as it is appended (Write, before the bytes go to the
// segment file) and publishes the durable end after each fsync (Publish):
// only bytes below the published end are ever readable. Nothing is read back
// from disk to fill it.
//
// Memory: the ring's bookkeeping is allocated at the first Write and each
// chunk's buffer the first time the writer reaches it, so a timeline that
// never receives WAL costs nothing and one that received little costs
// little; Release (an idle timeline) drops all of it and the next Write
// starts over. The capacity bounds it, plus one chunk prepared ahead.
// Chunks of 2 MiB or more are mapped outside the Go heap (mem_linux.go):
// the first of a ring on small pages, mapped by the writer, the next ones
// on transparent huge pages, each prepared and populated on a goroutine of
// its own once the writer is half way through the one before, so that the
// kernel's compaction for huge pages never stalls ingest and a timeline
// that received little holds no chunk ahead. Release unmaps what no
// reader holds; a chunk a reader held then is unmapped by a cleanup once
// nothing refers to it.
//
// Concurrency: one writer (serialized by the Window's mutex: Write,
// Publish, Switch, Release), any number of lock-free readers. A reader
// never blocks the writer and the writer never waits for a reader: each
// chunk carries a generation (its base position and the window's epoch) and
// a count of readers copying from it. A reader announces itself, checks the
// generation, copies and leaves (or, with Borrow, uses the chunk's bytes in
// place for one non-blocking write to a socket, then releases its Pin);
// the writer, before reusing a chunk,
// invalidates its generation and checks the count. Sequentially consistent
// atomics guarantee that either the reader sees the invalid generation
// (and misses) or the writer sees the reader (and skips that chunk: the
// window restarts at the next chunk, the skipped bytes are read from files).
// A reader whose position the window has moved past therefore gets a miss,
// never overwritten bytes, and falls back to the next tier.
//
// A switch to a new PostgreSQL timeline bumps the epoch: every chunk written
// before it stops matching readers of the new timeline, the chunk holding
// the switch point is taken over (its bytes before the switch point are
// shared history), and nothing of the old timeline past the switch point is
// ever served as new-timeline WAL. Readers take a consistent snapshot of
// (timeline, epoch, start, end) with a sequence counter that Switch makes
// odd while it changes them.
//
// The package does no logging and keeps no globals.
package walmem
