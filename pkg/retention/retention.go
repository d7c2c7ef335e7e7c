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
	// MinInterval is the least time between two passes (default 100ms):
	// while WAL streams, the durable end moves at every flush.
	MinInterval time.Duration
	// RetryInterval is how soon a pass that failed is repeated when no
	// change comes first (default 1s).
	RetryInterval time.Duration
}

// recountEvery bounds how often the local files are listed only because
// the partial segment grew (see pass).
const recountEvery = 10 * time.Second

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
// as saved on disk; Checkpoint saves positions that advanced. Changed is
// closed when Horizon may have moved, other than through the timeline's
// positions (which Timeline.Changed covers).
type SlotHorizon interface {
	Horizon() (lsn wal.LSN, slot string, ok bool)
	Checkpoint()
	Changed() <-chan struct{}
}

// PageserverHorizon is what connected pageserver-style consumers need;
// PageserverChanged is closed when it may have moved.
type PageserverHorizon interface {
	PageserverHorizon() (lsn wal.LSN, app string, ok bool)
	PageserverChanged() <-chan struct{}
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
	passes       atomic.Uint64 // evaluations run (for tests)

	counted      [2]wal.LSN // (local start, segment of flush) at the last count
	countedFlush wal.LSN    // the durable end at the last count
	countedAt    time.Time

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
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
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

// Run re-evaluates the horizon whenever one of its inputs may have changed,
// and removes what it allows, until ctx ends. The inputs say when they
// change: the timeline's durable end, local start, backup_lsn and TLI
// (Timeline.Changed: wal_keep_size, the current segment, the archive, and
// slots that fall too far behind), the slots (SlotHorizon.Changed:
// created, dropped, a restart position saved), and the pageserver
// consumers (PageserverChanged: feedback, a departure). Passes are at
// least MinInterval apart.
//
// Between changes Run sleeps with no timer: an idle timeline costs
// nothing. A timer is armed only for work a pass left pending: a failure
// (a control file that cannot be written, an unlink that fails; logged,
// and retried after RetryInterval or at the next change) or a count of
// the local files left stale (see pass).
func (r *Retainer) Run(ctx context.Context) error {
	for {
		// Taken before the pass reads the inputs: a change made after
		// the read is not missed.
		tlChanged, slotsChanged, psChanged := r.tl.Changed(), r.slots.Changed(), r.ps.PageserverChanged()
		again := r.pass()
		var due <-chan time.Time
		var timer *time.Timer
		if again > 0 {
			timer = time.NewTimer(again)
			due = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-tlChanged:
		case <-slotsChanged:
		case <-psChanged:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
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

// pass is one evaluation: compute the horizon, remove, recount. It
// returns how soon it wants to run again though nothing changes (0:
// not at all).
func (r *Retainer) pass() (again time.Duration) {
	r.passes.Add(1)
	if !r.tl.Initialized() {
		return 0
	}
	retryIn := func(d time.Duration) {
		if again == 0 || d < again {
			again = d
		}
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
	if err != nil {
		retryIn(r.cfg.RetryInterval)
	}
	// Count the local files when the set can have changed (a removal or
	// a new segment), and for the size of the partial segment when the
	// durable end moved, at most every recountEvery: passes come at
	// every flush while WAL streams. A count put off that way is made
	// when due, so that the status of a timeline gone idle ends exact.
	ctl := r.tl.Control()
	now := [2]wal.LSN{ctl.StartLSN, wal.SegmentStart(ctl.FlushLSN, ctl.WalSegSize)}
	count := now != r.counted
	if !count && ctl.FlushLSN != r.countedFlush {
		if wait := recountEvery - time.Since(r.countedAt); wait > 0 {
			retryIn(wait)
		} else {
			count = true
		}
	}
	var bytes int64
	var files []walstore.SegmentFile
	var lerr error
	if count {
		files, lerr = r.tl.Dir().ListSegments(ctl.WalSegSize)
		n := 0
		for _, f := range files {
			// A ".partial" holds WAL only up to the durable end: past it
			// are the zeros of a preallocated file, or nothing yet. The
			// writer's preallocation of the next segment is not WAL.
			size := f.Size
			if f.Partial {
				if f.SegNo > wal.SegmentNo(ctl.FlushLSN, ctl.WalSegSize) {
					continue
				}
				size = min(size, max(0, int64(ctl.FlushLSN)-int64(f.SegNo*ctl.WalSegSize)))
			}
			bytes += size
			files[n] = f
			n++
		}
		files = files[:n]
		if lerr == nil {
			r.counted, r.countedFlush, r.countedAt = now, ctl.FlushLSN, time.Now()
		} else {
			retryIn(r.cfg.RetryInterval)
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
	return again
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
