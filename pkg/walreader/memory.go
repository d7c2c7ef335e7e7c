package walreader

import (
	"context"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// Memory is what the memory tier reads: a window of recent durable WAL
// (*walmem.Window) that copies a whole range or reports that it does not
// hold it.
type Memory interface {
	ReadAt(p []byte, tli uint32, lsn wal.LSN) bool
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

// Name implements namer.
func (t *MemoryTier) Name() string { return "memory" }

// Close implements Tier.
func (t *MemoryTier) Close() error { return nil }
