package walsender

import (
	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// Timeline is the WAL of one timeline as a walsender needs it: identity,
// positions, the wake-up channel, the history, and readers.
type Timeline interface {
	// Control returns the timeline's identity (system identifier, segment
	// size, server version, current TLI) and positions.
	Control() walstore.Control
	// FlushLSN is the durable end of WAL: nothing beyond it is sent.
	FlushLSN() wal.LSN
	// Changed is closed when the positions or the timeline change.
	Changed() <-chan struct{}
	// CurrentTLI is the PostgreSQL timeline being written.
	CurrentTLI() uint32
	// HistoryEntries is the history of the current TLI.
	HistoryEntries() []wal.HistoryEntry
	// History returns a stored history file (an error wrapping
	// os.ErrNotExist when there is none).
	History(tli uint32) ([]byte, error)
	// OldestLSN is the oldest position any tier still holds.
	OldestLSN() wal.LSN
	// OpenReader returns a reader over every tier, for one consumer.
	OpenReader() *walreader.Reader
	// WalLevel is the upstream's wal_level ("" while unknown).
	WalLevel() string
}

// Target is what a connection serves once it has chosen a timeline.
type Target struct {
	WAL       Timeline
	Slots     *slots.Set
	Consumers *consumers.Registry
	Metrics   *metrics.Timeline // the timeline's series (nil: not exported)
}

// Resolver finds the timeline a connection asks for.
type Resolver interface {
	// Lookup returns the hosted timeline with id.
	Lookup(id timeline.ID) (Target, bool)
	// Only returns the hosted timeline when there is exactly one.
	Only() (Target, bool)
	// Count is how many timelines are hosted; 0 while the process is
	// still learning which timeline it hosts.
	Count() int
}
