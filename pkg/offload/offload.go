package offload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/internal/notify"
	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// Config tunes an Offloader.
type Config struct {
	// Concurrency is how many segments upload at once (default 4).
	Concurrency int
	// MinBackoff and MaxBackoff bound the retry delay after a failed
	// upload (defaults 200ms and 10s); the delay doubles per attempt and
	// is jittered.
	MinBackoff, MaxBackoff time.Duration
	// AttemptTimeout bounds one upload attempt (default 2m).
	AttemptTimeout time.Duration
}

// Timeline is what the offloader needs of a timeline.
type Timeline interface {
	Initialized() bool
	Control() walstore.Control
	Dir() walstore.Dir
	FlushLSN() wal.LSN
	CurrentTLI() uint32
	Changed() <-chan struct{}
	HistoryEntries() []wal.HistoryEntry
	BackupLSN() wal.LSN
	SetBackupLSN(lsn wal.LSN, tli uint32) error
}

// Archive is what the offloader needs of the archive.
type Archive interface {
	PutSegment(ctx context.Context, tli uint32, segno uint64, data []byte, id archive.Identity) (archive.PutResult, error)
	PutHistory(ctx context.Context, tli uint32, content []byte, id archive.Identity) (archive.PutResult, error)
	List(ctx context.Context, segSize uint64) (segments, histories []archive.Entry, other []string, err error)
	String() string
}

// ErrNotOffloader is wrapped by a Progress error that means this node is
// no longer the timeline's offloader: the run stops at once.
var ErrNotOffloader = errors.New("no longer the offloader")

// Progress records the archived position where the cluster shares it,
// before the timeline records it locally: the election's fenced
// backup_lsn. An error ends the run (a lost leadership).
type Progress interface {
	Advance(ctx context.Context, lsn wal.LSN, tli uint32) error
}

// States reported in Status.
const (
	StateWaiting   = "waiting for WAL"
	StateIdle      = "idle"
	StateUploading = "uploading"
	StateRetrying  = "retrying"
	StateStopped   = "stopped"
	// StateFollower: another safekeeper of the timeline is the offloader.
	StateFollower = "another safekeeper offloads"
)

// Offloader uploads one timeline's finished segments and history files.
type Offloader struct {
	cfg     Config
	tl      Timeline
	ar      Archive
	log     *zap.Logger
	seconds prometheus.Observer // upload duration (may be nil)

	uploadedBytes   atomic.Uint64
	uploadedObjects atomic.Uint64
	errorsTotal     atomic.Uint64
	archiveStart    atomic.Uint64 // oldest archived segment's start + 1; 0 = none known

	// Set for the duration of RunTerm (only one runs at a time).
	progress Progress
	stop     context.CancelCauseFunc

	mu        sync.Mutex
	state     string
	lastErr   string
	lastErrAt time.Time
	// failingSince is the first error after the last success.
	failingSince time.Time
	conflict     string
	conflicted   notify.Broadcast // conflict was set
	histDone     map[uint32]bool
	bufPool      sync.Pool
}

// New returns an offloader of tl into ar; call Run.
func New(cfg Config, tl Timeline, ar Archive, log *zap.Logger, seconds prometheus.Observer) *Offloader {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 2 * time.Minute
	}
	return &Offloader{cfg: cfg, tl: tl, ar: ar, log: log, seconds: seconds, state: StateWaiting,
		histDone: map[uint32]bool{}}
}

// Status is a snapshot of the offloader.
type Status struct {
	State           string     `json:"state"`
	Archive         string     `json:"archive"`
	UploadedObjects uint64     `json:"uploaded_objects"`
	UploadedBytes   uint64     `json:"uploaded_bytes"`
	UploadErrors    uint64     `json:"upload_errors"`
	LastError       string     `json:"last_error,omitempty"`
	LastErrorAt     *time.Time `json:"last_error_at,omitempty"`
	// FailingSince is when archive operations started failing without a
	// success since (nil while they succeed).
	FailingSince *time.Time `json:"failing_since,omitempty"`
	Conflict     string     `json:"conflict,omitempty"`
}

// Status returns a snapshot.
func (o *Offloader) Status() Status {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := Status{State: o.state, Archive: o.ar.String(), LastError: o.lastErr, Conflict: o.conflict,
		UploadedObjects: o.uploadedObjects.Load(), UploadedBytes: o.uploadedBytes.Load(), UploadErrors: o.errorsTotal.Load()}
	if !o.lastErrAt.IsZero() {
		t := o.lastErrAt
		s.LastErrorAt = &t
	}
	if !o.failingSince.IsZero() {
		t := o.failingSince
		s.FailingSince = &t
	}
	return s
}

// ConflictChanged returns a channel closed when offloading stops on a
// conflicting object (Conflicted turns true).
func (o *Offloader) ConflictChanged() <-chan struct{} { return o.conflicted.C() }

// Conflicted reports whether offloading stopped on a conflicting object.
func (o *Offloader) Conflicted() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.conflict != ""
}

// ArchiveStart returns the start of the oldest segment known to be in the
// archive (listed at start-up or uploaded since).
func (o *Offloader) ArchiveStart() (wal.LSN, bool) {
	v := o.archiveStart.Load()
	return wal.LSN(v - 1), v != 0
}

func (o *Offloader) noteArchived(start wal.LSN) {
	for {
		cur := o.archiveStart.Load()
		if cur != 0 && cur-1 <= uint64(start) {
			return
		}
		if o.archiveStart.CompareAndSwap(cur, uint64(start)+1) {
			return
		}
	}
}

func (o *Offloader) setState(s string) {
	o.mu.Lock()
	if o.conflict == "" {
		o.state = s
	}
	o.mu.Unlock()
}

func (o *Offloader) noteError(err error) {
	o.errorsTotal.Add(1)
	o.mu.Lock()
	o.lastErr, o.lastErrAt = err.Error(), time.Now()
	if o.failingSince.IsZero() {
		o.failingSince = o.lastErrAt
	}
	if o.conflict == "" {
		o.state = StateRetrying
	}
	o.mu.Unlock()
}

// noteSuccess records that an archive operation succeeded.
func (o *Offloader) noteSuccess() {
	o.mu.Lock()
	o.failingSince = time.Time{}
	o.mu.Unlock()
}

// Run uploads until ctx ends. It returns nil then; it never fails the
// process: a conflicting object stops offloading (reported in Status)
// until the next start, everything else is retried.
func (o *Offloader) Run(ctx context.Context) error { return o.RunTerm(ctx, nil) }

// SetFollower reports that another safekeeper is the offloader.
func (o *Offloader) SetFollower() { o.setState(StateFollower) }

// RunTerm is Run for one leadership term: every advance of the archived
// position is recorded in p first (when p is not nil); when p refuses it
// (leadership lost) RunTerm stops at once and returns that error.
func (o *Offloader) RunTerm(ctx context.Context, p Progress) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	o.progress = p
	o.stop = cancel
	defer func() { o.progress, o.stop = nil, nil }()
	err := o.run(ctx)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

func (o *Offloader) run(ctx context.Context) error {
	for {
		changed := o.tl.Changed() // before the check: no missed wake-up
		if o.tl.Initialized() {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
	ctl := o.tl.Control()
	id := archive.Identity{SystemID: ctl.SystemID, SegSize: ctl.WalSegSize}
	if err := o.retry(ctx, "list the archive", func(ctx context.Context) error { return o.scan(ctx, id) }); err != nil {
		return nil
	}
	o.log.Info("offloading WAL to the archive", zap.String("archive", o.ar.String()),
		zap.Stringer("backup_lsn", o.tl.BackupLSN()), zap.Int("concurrency", o.cfg.Concurrency))
	for ctx.Err() == nil {
		err := o.round(ctx, id)
		if errors.Is(err, archive.ErrConflict) {
			o.mu.Lock()
			o.conflict, o.state = err.Error(), StateStopped
			o.lastErr, o.lastErrAt = err.Error(), time.Now()
			o.mu.Unlock()
			o.conflicted.Notify()
			o.log.Error("archive holds a different object under a name we must upload; offloading of this timeline stopped, nothing was overwritten; ingest and serving continue",
				zap.Error(err))
			<-ctx.Done()
			return nil
		}
	}
	return nil
}

// scan lists what the archive already holds: the oldest archived segment
// and the history files (which need no upload).
func (o *Offloader) scan(ctx context.Context, id archive.Identity) error {
	segs, hists, _, err := o.ar.List(ctx, id.SegSize)
	if err != nil {
		return err
	}
	if len(segs) > 0 {
		o.noteArchived(wal.LSN(segs[0].SegNo * id.SegSize))
	}
	o.mu.Lock()
	for _, h := range hists {
		// Present: Put would only confirm it. Its content is compared by
		// wal-verify, not at every start.
		o.histDone[h.TLI] = true
	}
	o.mu.Unlock()
	return nil
}

type result struct {
	segno uint64
	err   error
}

// recordRetry is how soon a backup position that could not be recorded
// is tried again when no upload finishes in between.
const recordRetry = time.Second

// round uploads the history files and then segments from backup_lsn on,
// until the PostgreSQL timeline changes (then the caller starts a new
// round from the re-based backup_lsn) or ctx ends. After a conflict it
// schedules nothing more, lets the uploads in flight finish so that
// backup_lsn covers every segment before the conflicting one, and returns
// the conflict.
func (o *Offloader) round(ctx context.Context, id archive.Identity) error {
	tli := o.tl.CurrentTLI()
	hist := o.tl.HistoryEntries()
	if err := o.retry(ctx, "upload history files", func(ctx context.Context) error { return o.uploadHistories(ctx, id) }); err != nil {
		return err
	}
	segSize := id.SegSize
	backup := o.tl.BackupLSN()
	next := wal.SegmentNo(backup, segSize)
	done := map[uint64]bool{}
	inflight := 0
	var conflict error
	results := make(chan result, o.cfg.Concurrency)
	uctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		for ; inflight > 0; inflight-- {
			<-results
		}
	}()
	var retryRecord <-chan time.Time // set while an advance is not recorded
	for {
		changed := o.tl.Changed()
		if o.tl.CurrentTLI() != tli {
			return nil
		}
		flush := o.tl.FlushLSN()
		for conflict == nil && inflight < o.cfg.Concurrency && wal.LSN((next+1)*segSize) <= flush {
			segno, fileTLI := next, wal.FileTLI(hist, next, segSize)
			go func() { results <- result{segno, o.uploadSegment(uctx, fileTLI, segno, id)} }()
			inflight++
			next++
		}
		if inflight == 0 && conflict != nil {
			return conflict
		}
		if inflight == 0 {
			o.setState(StateIdle)
		} else {
			o.setState(StateUploading)
		}
		select {
		case r := <-results:
			inflight--
			switch {
			case errors.Is(r.err, archive.ErrConflict):
				if conflict == nil {
					conflict = r.err
				}
			case r.err != nil:
				return r.err // ctx ended
			default:
				done[r.segno] = true
			}
		case <-changed:
			continue
		case <-retryRecord:
		case <-ctx.Done():
			return ctx.Err()
		}
		advanced := backup
		for done[wal.SegmentNo(advanced, segSize)] {
			advanced += wal.LSN(segSize)
		}
		if advanced > backup {
			if o.progress != nil {
				if err := o.progress.Advance(ctx, advanced, tli); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					if errors.Is(err, ErrNotOffloader) {
						o.log.Warn("no longer the offloader: the cluster refused the archived position; uploads stop",
							zap.Stringer("backup_lsn", advanced), zap.Error(err))
						o.stop(err)
						return err
					}
					o.noteError(fmt.Errorf("share backup_lsn %s: %w", advanced, err))
					o.log.Warn("sharing the archived position failed; will retry", zap.Error(err))
					retryRecord = time.After(recordRetry)
					continue
				}
			}
			if err := o.tl.SetBackupLSN(advanced, tli); err != nil {
				// Not recorded: retention keeps the WAL. The segments stay
				// in done and the advance is tried again.
				o.noteError(fmt.Errorf("record backup_lsn %s: %w", advanced, err))
				o.log.Warn("recording the archived position failed; will retry", zap.Error(err))
				retryRecord = time.After(recordRetry)
				continue
			}
			for lsn := backup; lsn < advanced; lsn += wal.LSN(segSize) {
				delete(done, wal.SegmentNo(lsn, segSize))
			}
			backup, retryRecord = advanced, nil
		}
	}
}

// uploadHistories archives history files not uploaded yet.
func (o *Offloader) uploadHistories(ctx context.Context, id archive.Identity) error {
	tlis, err := o.tl.Dir().Histories()
	if err != nil {
		return fmt.Errorf("list history files: %w", err)
	}
	for _, tli := range tlis {
		o.mu.Lock()
		done := o.histDone[tli]
		o.mu.Unlock()
		if done {
			continue
		}
		err := o.retry(ctx, "upload history file", func(ctx context.Context) error {
			content, err := o.tl.Dir().ReadHistory(tli)
			if err != nil {
				return err
			}
			res, err := o.ar.PutHistory(ctx, tli, content, id)
			if err == nil {
				o.noteUploaded(res)
			}
			return err
		})
		if err != nil {
			return err
		}
		o.mu.Lock()
		o.histDone[tli] = true
		o.mu.Unlock()
	}
	return nil
}

func (o *Offloader) noteUploaded(res archive.PutResult) {
	o.noteSuccess()
	if res.AlreadyPresent {
		o.log.Info("object already in the archive with the same content", zap.String("key", res.Key))
		return
	}
	o.uploadedObjects.Add(1)
	o.uploadedBytes.Add(uint64(res.StoredBytes))
	o.log.Debug("archived", zap.String("key", res.Key), zap.Int64("bytes", res.StoredBytes))
}

// uploadSegment archives one segment, retrying until it is in the archive,
// a conflict is found, or ctx ends.
func (o *Offloader) uploadSegment(ctx context.Context, tli uint32, segno uint64, id archive.Identity) error {
	return o.retry(ctx, "upload segment "+wal.SegmentFileName(tli, segno, id.SegSize), func(ctx context.Context) error {
		buf := o.buffer(id.SegSize)
		defer o.bufPool.Put(buf)
		if err := o.readSegment(*buf, tli, segno, id.SegSize); err != nil {
			return err
		}
		t0 := time.Now()
		res, err := o.ar.PutSegment(ctx, tli, segno, *buf, id)
		if err != nil {
			return err
		}
		if o.seconds != nil {
			o.seconds.Observe(time.Since(t0).Seconds())
		}
		o.noteUploaded(res)
		o.noteArchived(wal.LSN(segno * id.SegSize))
		return nil
	})
}

func (o *Offloader) buffer(segSize uint64) *[]byte {
	if b, ok := o.bufPool.Get().(*[]byte); ok && uint64(len(*b)) == segSize {
		return b
	}
	b := make([]byte, segSize)
	return &b
}

// readSegment reads a complete local segment.
func (o *Offloader) readSegment(buf []byte, tli uint32, segno, segSize uint64) error {
	f, err := o.tl.Dir().OpenSegment(tli, segno, segSize)
	if err != nil {
		return fmt.Errorf("open local segment: %w", err)
	}
	defer f.Close()
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(segSize)), buf); err != nil {
		return fmt.Errorf("read local segment %s: %w", wal.SegmentFileName(tli, segno, segSize), err)
	}
	return nil
}

// retry runs op until it succeeds, fails with a conflict, or ctx ends,
// waiting a capped, jittered exponential backoff between attempts. Every
// attempt gets its own timeout.
func (o *Offloader) retry(ctx context.Context, what string, op func(ctx context.Context) error) error {
	backoff := o.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, o.cfg.AttemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			o.noteSuccess()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, archive.ErrConflict) {
			return err
		}
		o.noteError(fmt.Errorf("%s: %w", what, err))
		o.log.Warn("archive operation failed; will retry", zap.String("op", what), zap.Int("attempt", attempt),
			zap.Duration("backoff", backoff), zap.Error(err))
		// Full jitter in [backoff/2, backoff).
		d := backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if backoff *= 2; backoff > o.cfg.MaxBackoff {
			backoff = o.cfg.MaxBackoff
		}
	}
}
