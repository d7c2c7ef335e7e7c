package retention

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// Config tunes retention.
type Config struct {
	// Archived makes the archived position a holder (an archive is
	// configured).
	Archived bool
	// WalKeepBytes keeps this much WAL behind the durable end
	// (--wal-keep-size; 0 keeps none beyond the other holders).
	WalKeepBytes uint64
	// Interval is how often the horizon is re-evaluated at least (default
	// 1s); it is also re-evaluated when the timeline's positions change,
	// at most every MinInterval (default 100ms).
	Interval, MinInterval time.Duration
}

// Timeline is what retention needs of a timeline.
type Timeline interface {
	Initialized() bool
	Control() walstore.Control
	Dir() walstore.Dir
	FlushLSN() wal.LSN
	Changed() <-chan struct{}
	BackupLSN() wal.LSN
	LocalStartLSN() wal.LSN
	RemoveBefore(lsn wal.LSN) ([]string, error)
}

// SlotHorizon is the oldest restart position of slots that are not lost,
// as saved on disk; Checkpoint saves positions that advanced.
type SlotHorizon interface {
	Horizon() (lsn wal.LSN, slot string, ok bool)
	Checkpoint()
}

// PageserverHorizon is what connected pageserver-style consumers need.
type PageserverHorizon interface {
	PageserverHorizon() (lsn wal.LSN, app string, ok bool)
}

// Holders reported in Status.HeldBy.
const (
	HeldByArchive     = "archive"
	HeldByWalKeepSize = "wal_keep_size"
	HeldByFlush       = "current segment"
	slotPrefix        = "slot:"
	pageserverPrefix  = "pageserver:"
)

// Retainer removes local WAL of one timeline.
type Retainer struct {
	cfg   Config
	tl    Timeline
	slots SlotHorizon
	ps    PageserverHorizon
	log   *zap.Logger

	removedTotal atomic.Uint64

	counted   [2]wal.LSN // (local start, segment of flush) at the last count
	countedAt time.Time

	mu            sync.Mutex
	horizon       wal.LSN
	heldBy        string
	localBytes    int64
	localSegments int
	lastErr       string
	lastErrAt     time.Time
}

// New returns a retainer; call Run.
func New(cfg Config, tl Timeline, slots SlotHorizon, ps PageserverHorizon, log *zap.Logger) *Retainer {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 100 * time.Millisecond
	}
	return &Retainer{cfg: cfg, tl: tl, slots: slots, ps: ps, log: log}
}

// Horizon returns the oldest position still held locally and its holder.
// Segments entirely before it may be removed.
func (r *Retainer) Horizon() (wal.LSN, string) {
	ctl := r.tl.Control()
	segSize := ctl.WalSegSize
	flush := r.tl.FlushLSN()
	h, by := wal.SegmentStart(flush, segSize), HeldByFlush
	hold := func(lsn wal.LSN, who string) {
		if lsn < h {
			h, by = lsn, who
		}
	}
	if r.cfg.Archived {
		hold(r.tl.BackupLSN(), HeldByArchive)
	}
	if lsn, slot, ok := r.slots.Horizon(); ok {
		hold(lsn, slotPrefix+slot)
	}
	if keep := r.cfg.WalKeepBytes; keep > 0 {
		if uint64(flush) > keep {
			hold(flush-wal.LSN(keep), HeldByWalKeepSize)
		} else {
			hold(0, HeldByWalKeepSize)
		}
	}
	if lsn, app, ok := r.ps.PageserverHorizon(); ok {
		hold(lsn, pageserverPrefix+app)
	}
	return h, by
}

// Run re-evaluates the horizon when the timeline's positions change (at
// most every MinInterval) and at least every Interval (slots and consumers
// move on their own), and removes what it allows, until ctx ends. Failures
// (a control file that cannot be written, an unlink that fails) are logged
// and retried at the next pass.
func (r *Retainer) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		changed := r.tl.Changed()
		r.pass()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-changed:
		}
		pause := time.NewTimer(r.cfg.MinInterval)
		select {
		case <-ctx.Done():
			pause.Stop()
			return nil
		case <-pause.C:
		}
	}
}

// pass is one evaluation: compute the horizon, remove, recount.
func (r *Retainer) pass() {
	if !r.tl.Initialized() {
		return
	}
	r.slots.Checkpoint()
	h, by := r.Horizon()
	removed, err := r.tl.RemoveBefore(h)
	r.removedTotal.Add(uint64(len(removed)))
	if len(removed) > 0 {
		r.log.Info("removed local WAL segments", zap.Int("count", len(removed)),
			zap.String("first", removed[0]), zap.String("last", removed[len(removed)-1]),
			zap.Stringer("local_start_lsn", r.tl.LocalStartLSN()), zap.String("held_by", by))
	}
	// Count the local files only when the set can have changed (a removal
	// or a new segment), or every 10 s for the size of the partial one.
	ctl := r.tl.Control()
	now := [2]wal.LSN{ctl.StartLSN, wal.SegmentStart(ctl.FlushLSN, ctl.WalSegSize)}
	count := now != r.counted || time.Since(r.countedAt) >= 10*time.Second
	var bytes int64
	var files []walstore.SegmentFile
	var lerr error
	if count {
		files, lerr = r.tl.Dir().ListSegments(ctl.WalSegSize)
		for _, f := range files {
			bytes += f.Size
		}
		if lerr == nil {
			r.counted, r.countedAt = now, time.Now()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.horizon, r.heldBy = h, by
	if count && lerr == nil {
		r.localBytes, r.localSegments = bytes, len(files)
	}
	if err != nil {
		r.lastErr, r.lastErrAt = err.Error(), time.Now()
		r.log.Warn("removing local WAL failed; will retry", zap.Error(err))
	}
}

// Status is a snapshot of retention.
type Status struct {
	HorizonLSN      string     `json:"horizon_lsn"`
	HeldBy          string     `json:"held_by"`
	LocalBytes      int64      `json:"local_wal_bytes"`
	LocalSegments   int        `json:"local_wal_segments"`
	RemovedSegments uint64     `json:"removed_segments"`
	LastError       string     `json:"last_error,omitempty"`
	LastErrorAt     *time.Time `json:"last_error_at,omitempty"`
}

// Status returns a snapshot.
func (r *Retainer) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{HorizonLSN: r.horizon.String(), HeldBy: r.heldBy, LocalBytes: r.localBytes,
		LocalSegments: r.localSegments, RemovedSegments: r.removedTotal.Load(), LastError: r.lastErr}
	if !r.lastErrAt.IsZero() {
		t := r.lastErrAt
		s.LastErrorAt = &t
	}
	return s
}
