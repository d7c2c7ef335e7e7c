package walreader

import (
	"context"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walmem"
)

// Memory is what the memory tier reads: a window of recent durable WAL
// (*walmem.Window) that copies a whole range or reports that it does not
// hold it.
type Memory interface {
	ReadAt(p []byte, tli uint32, lsn wal.LSN) bool
}

// Lender is a Memory that also lends its own bytes, a chunk at a time,
// without copying them (*walmem.Window): a sender writes them to its
// socket straight from the window (see walmem.Window.Borrow).
type Lender interface {
	Borrow(tli uint32, lsn wal.LSN, n int) ([]byte, walmem.Pin, bool)
}

// MemoryTier serves WAL from the timeline's memory window. It is consulted
// first: a read it does not hold entirely (older than the window, or
// overwritten while being copied) goes to the next tier, so a consumer
// that falls out of the window reads files until it catches up. It never
// blocks and never allocates.
type MemoryTier struct{ m Memory }

// NewMemoryTier returns a tier reading from m.
func NewMemoryTier(m Memory) *MemoryTier { return &MemoryTier{m: m} }

// ReadAt implements Tier.
func (t *MemoryTier) ReadAt(_ context.Context, p []byte, tli uint32, lsn wal.LSN) (int, error) {
	if !t.m.ReadAt(p, tli, lsn) {
		return 0, ErrNotInTier
	}
	return len(p), nil
}

// lend answers ReadOrLocate: the Lender, when the window holds lsn (nil
// when it does not, or lends nothing: then ReadAt copies). The
// caller never asks past the durable end, which the window reaches before
// readers see it, and the window's readable range has no holes, so it
// then holds the whole range unless the writer moves past it meanwhile;
// the sender finds that out when it borrows, and reads the rest again.
func (t *MemoryTier) lend(tli uint32, lsn wal.LSN) Lender {
	l, ok := t.m.(Lender)
	if !ok {
		return nil
	}
	_, p, ok := l.Borrow(tli, lsn, 1)
	if !ok {
		return nil
	}
	p.Release()
	return l
}

// Name implements namer.
func (t *MemoryTier) Name() string { return "memory" }

// Close implements Tier.
func (t *MemoryTier) Close() error { return nil }
