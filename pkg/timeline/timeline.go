package timeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walmem"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// controlPersistInterval bounds how often the durable position is written
// to the control file during streaming. The true end is always recoverable
// from the segment files; the control file only has to be no later than it.
const controlPersistInterval = time.Second

// memoryIdleRelease is how long a timeline receives no WAL before its
// memory window is released (checked by CloseIdle, which the receiver calls
// at each idle status interval). A timeline keeping up a trickle of WAL
// keeps its window; one idle this long has consumers that are all caught
// up (or reading files anyway), and 1000 such timelines hold no window
// memory. The next WAL allocates again, chunk by chunk.
const memoryIdleRelease = time.Minute

// UpstreamInfo is what the upstream told us at first contact.
type UpstreamInfo struct {
	SystemID         uint64
	WalSegSize       uint64
	ServerVersion    string
	ServerVersionNum int
	TLI              uint32
}

// Timeline is the WAL of one hosted timeline: its control data, the writer,
// the durable end of WAL with the broadcast that wakes waiting senders, and
// the PostgreSQL timeline history. Files are walstore's business.
type Timeline struct {
	id  ID
	dir walstore.Dir
	log *zap.Logger

	// ctlMu serializes control-file writes (and removals of old files).
	// It is taken before mu, and never by the ingest path: Append takes no
	// lock, Flush only mu for the publication and ctlMu with TryLock for
	// its periodic write, so a control-file fsync or an unlink never
	// delays a network read or an acknowledgement.
	ctlMu sync.Mutex

	mu          sync.Mutex
	ctl         walstore.Control // changed only with ctlMu (and mu) held
	lastPersist time.Time
	changed     chan struct{}
	hist        []wal.HistoryEntry // parsed history of histTLI
	histTLI     uint32

	w        atomic.Pointer[walstore.Writer] // nil until first contact
	flush    atomic.Uint64                   // durable end of WAL; what may be served and acknowledged
	lastSync atomic.Int64                    // unix ns of the last fsync that moved flush
	tli      atomic.Uint32                   // current PostgreSQL timeline
	walLevel atomic.Pointer[string]          // the upstream's wal_level, as last seen

	archived SegmentSource  // nil without an archive
	mem      *walmem.Window // recent durable WAL in memory; nil when disabled
}

// SegmentSource returns a whole, verified archived segment of PostgreSQL
// timeline tli of the cluster systemID (the archive, when one is
// configured). It must not call back into the timeline.
type SegmentSource func(ctx context.Context, tli uint32, segno, segSize, systemID uint64) ([]byte, error)

// BindArchive records which archive backup_lsn refers to. A timeline
// whose backup_lsn was reached in another archive (or with none) starts
// over from its local start: what lies below it cannot be uploaded from
// here, and retention must not trust a position the new archive does not
// hold. It returns the previous archive when it differed.
func (t *Timeline) BindArchive(name string) (previous string, err error) {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	err = t.updateControl(func(c *walstore.Control) bool {
		if c.Archive == name {
			return false
		}
		previous = c.Archive
		c.Archive = name
		if c.Initialized() {
			c.BackupLSN = c.StartLSN
		}
		return true
	})
	return previous, err
}

// SetArchive makes archived segments available to a timeline switch whose
// switch point lies before the local start (a promoted standby that was
// behind, after local removal). Call it before the timeline is used.
func (t *Timeline) SetArchive(src SegmentSource) { t.archived = src }

// SetMemoryWindow gives the timeline a window of at most size bytes of its
// most recent durable WAL in memory (0 disables it), filled by Append and
// published by Flush; the memory is allocated as WAL arrives. Call it before
// the timeline is used.
func (t *Timeline) SetMemoryWindow(size uint64) { t.mem = walmem.New(size) }

// Memory returns the timeline's memory window (nil when disabled).
func (t *Timeline) Memory() *walmem.Window { return t.mem }

// Open loads (or creates) the timeline stored in dir. For a timeline that
// has WAL, the true end of valid WAL is recovered before Open returns.
func Open(dir string, id ID, log *zap.Logger) (*Timeline, error) {
	o, err := walstore.Open(dir, id.TenantID, id.TimelineID)
	if err != nil {
		return nil, fmt.Errorf("timeline %s: %w", id, err)
	}
	t := &Timeline{id: id, dir: o.Dir, log: log, changed: make(chan struct{}), ctl: o.Control}
	t.w.Store(o.Writer)
	t.tli.Store(o.Control.TLI)
	t.flush.Store(uint64(o.Control.FlushLSN))
	if len(o.RemovedTemp) > 0 {
		log.Info("removed temp files of interrupted writes", zap.Strings("files", o.RemovedTemp))
	}
	if o.Writer != nil {
		res := o.Recovery
		log.Info("recovered end of WAL",
			zap.Stringer("end_lsn", res.End), zap.Stringer("control_flush_lsn", res.ControlEnd),
			zap.String("scanned", res.Scanned), zap.Stringer("scan_end", res.ScanEnd),
			zap.Int64("truncated_bytes", res.Truncated), zap.Strings("removed", res.Removed))
	}
	if o.ControlNotSaved != nil {
		log.Warn("the recovered end of WAL is not recorded in the control file: the disk is full; serving the WAL held",
			zap.Error(o.ControlNotSaved))
	}
	if len(o.SetAside) > 0 {
		log.Info("completed an interrupted timeline switch", zap.Strings("set_aside", o.SetAside))
	}
	if len(o.RemovedOld) > 0 {
		log.Info("completed an interrupted removal of old segments", zap.Strings("removed", o.RemovedOld))
	}
	return t, nil
}

// ID returns the timeline's id.
func (t *Timeline) ID() ID { return t.id }

// Dir returns the directory holding the timeline's files.
func (t *Timeline) Dir() walstore.Dir { return t.dir }

// Control returns a snapshot of the control data, with the current
// durable end of WAL as FlushLSN.
func (t *Timeline) Control() walstore.Control {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.ctl
	c.FlushLSN = t.FlushLSN()
	return c
}

// Initialized reports whether the timeline has had contact with an upstream
// and holds (or is about to hold) WAL.
func (t *Timeline) Initialized() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ctl.Initialized()
}

// ErrNoWAL is the error replication commands get before first contact.
func ErrNoWAL() *pgerr.Error {
	return pgerr.New(pgerr.ObjectNotInPrerequisiteState, "safekeeper holds no WAL yet").
		WithDetail("The safekeeper has not yet received WAL from its upstream server.").
		WithHint("Check the safekeeper's --upstream setting and its log.")
}

// ErrSystemIDMismatch is returned when an upstream belongs to another cluster.
var ErrSystemIDMismatch = errors.New("upstream database system identifier differs from the one this timeline holds")

// CheckUpstream verifies that an upstream may feed this timeline. Nothing is
// written when it may not.
func (t *Timeline) CheckUpstream(info UpstreamInfo) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.ctl.Initialized() {
		return nil
	}
	if info.SystemID != t.ctl.SystemID {
		return fmt.Errorf("%w: upstream has %d, timeline %s has %d", ErrSystemIDMismatch, info.SystemID, t.id, t.ctl.SystemID)
	}
	if info.WalSegSize != t.ctl.WalSegSize {
		return fmt.Errorf("upstream WAL segment size %d differs from the timeline's %d", info.WalSegSize, t.ctl.WalSegSize)
	}
	return nil
}

// Initialize records the first upstream contact and opens the WAL writer at
// start (rounded down to a segment start).
func (t *Timeline) Initialize(info UpstreamInfo, start wal.LSN) error {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctl.Initialized() {
		return errors.New("timeline already initialized")
	}
	if !wal.ValidSegmentSize(info.WalSegSize) {
		return fmt.Errorf("invalid WAL segment size %d", info.WalSegSize)
	}
	start = wal.SegmentStart(start, info.WalSegSize)
	ctl := t.ctl
	ctl.SystemID = info.SystemID
	ctl.WalSegSize = info.WalSegSize
	ctl.ServerVersion = info.ServerVersion
	ctl.ServerVersionNum = info.ServerVersionNum
	ctl.TLI = info.TLI
	ctl.StartLSN = start
	ctl.BackupLSN = start
	ctl.FlushLSN = start
	w, err := walstore.OpenWriter(t.dir.Path(), ctl.TLI, ctl.WalSegSize, start)
	if err != nil {
		return err
	}
	if err := t.dir.WriteControl(ctl); err != nil {
		w.Close()
		return err
	}
	t.ctl = ctl
	t.w.Store(w)
	t.tli.Store(ctl.TLI)
	t.flush.Store(uint64(start))
	t.lastPersist = time.Now()
	t.broadcastLocked()
	return nil
}

// UpdateServerVersion records the upstream's version string when it changes
// (a minor upgrade of the primary).
func (t *Timeline) UpdateServerVersion(version string, num int) {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	err := t.updateControl(func(c *walstore.Control) bool {
		if c.ServerVersion == version && c.ServerVersionNum == num {
			return false
		}
		c.ServerVersion, c.ServerVersionNum = version, num
		return true
	})
	if err != nil {
		t.log.Warn("persisting control file", zap.Error(err))
	}
}

// WrittenLSN returns the end of WAL written (received), durable or not.
func (t *Timeline) WrittenLSN() wal.LSN {
	w := t.w.Load()
	if w == nil {
		return 0
	}
	return w.Written()
}

// Append writes received WAL starting at start. It is not durable until
// Flush returns a position past it. The bytes are copied into the memory
// window first, so that the window holds everything the next Flush makes
// durable.
func (t *Timeline) Append(start wal.LSN, data []byte) error {
	w := t.w.Load()
	if w == nil {
		return errors.New("timeline not initialized")
	}
	t.mem.Write(t.tli.Load(), start, data)
	if err := w.Write(start, data); err != nil {
		t.mem.Truncate(w.Written())
		return err
	}
	return nil
}

// WaitRefolds waits until the WAL writer has refolded the segments it
// finished so far (see walstore.Refold), for tests that evict or inspect
// the page cache.
func (t *Timeline) WaitRefolds() {
	if w := t.w.Load(); w != nil {
		w.WaitRefolds()
	}
}

// SetCatchingUp tells the WAL writer whether the upstream is far ahead
// (see walstore.Writer.SetCatchingUp). It is cheap when nothing changes,
// so the receiver says it with every message, which also covers a writer
// replaced at a timeline switch.
func (t *Timeline) SetCatchingUp(on bool) {
	if w := t.w.Load(); w != nil {
		w.SetCatchingUp(on)
	}
}

// CatchingUp reports whether the WAL writer was last told that the
// upstream is far ahead.
func (t *Timeline) CatchingUp() bool {
	w := t.w.Load()
	return w != nil && w.CatchingUp()
}

// Flush makes all appended WAL durable, publishes the new end to waiting
// senders and returns it. Concurrent callers never move the published end
// backwards: it is advanced under the lock, only forwards.
func (t *Timeline) Flush() (wal.LSN, error) { return t.FlushAnd(nil) }

// FlushAnd is Flush with ack (when not nil) called once the new durable
// end is published, before the control file is brought up to date (about
// once a second, three fsyncs): the receiver acknowledges the flush
// upstream from ack, so that no commit waits for that write. An error
// from ack is returned.
func (t *Timeline) FlushAnd(ack func() error) (wal.LSN, error) {
	w := t.w.Load()
	if w == nil {
		return 0, errors.New("timeline not initialized")
	}
	d, err := w.Sync()
	if err != nil {
		return t.FlushLSN(), err
	}
	t.mu.Lock()
	if t.w.Load() != w {
		// A timeline switch replaced the writer while we synced; its
		// position is the truth now.
		t.mu.Unlock()
		if ack != nil {
			return t.FlushLSN(), ack()
		}
		return t.FlushLSN(), nil
	}
	persist := false
	if uint64(d) > t.flush.Load() {
		t.mem.Publish(d) // before the senders can see d
		t.flush.Store(uint64(d))
		t.lastSync.Store(time.Now().UnixNano())
		t.broadcastLocked()
		persist = time.Since(t.lastPersist) >= controlPersistInterval
	}
	t.mu.Unlock()
	if ack != nil {
		if err := ack(); err != nil {
			return t.FlushLSN(), err
		}
	}
	// The control file only has to trail the true end: when another
	// control write is under way, this one is skipped, not waited for.
	if persist && t.ctlMu.TryLock() {
		err := t.updateControl(func(*walstore.Control) bool { return true })
		t.ctlMu.Unlock()
		if err != nil {
			t.log.Warn("persisting control file", zap.Error(err))
		}
	}
	return t.FlushLSN(), nil
}

// CloseIdle closes the current segment file when everything appended is
// durable (call it after Flush), so that an idle timeline holds no file
// descriptor; the next Append opens it again. It does nothing otherwise,
// or before the first contact.
//
// It also releases the memory window once no WAL has been made durable for
// memoryIdleRelease.
func (t *Timeline) CloseIdle() error {
	if last := t.LastSync(); !last.IsZero() && time.Since(last) >= memoryIdleRelease {
		t.mem.Release()
	}
	if w := t.w.Load(); w != nil {
		return w.CloseIdle()
	}
	return nil
}

// broadcastLocked wakes everything waiting on Changed. t.mu is held.
func (t *Timeline) broadcastLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// updateControl applies mod to a copy of the control data and, when mod
// reports a change, writes it (with the current durable end) and then
// makes it the timeline's. t.ctlMu is held, t.mu is not: the write's
// fsyncs happen outside it.
func (t *Timeline) updateControl(mod func(*walstore.Control) bool) error {
	t.mu.Lock()
	c := t.ctl
	t.mu.Unlock()
	if !mod(&c) {
		return nil
	}
	c.FlushLSN = t.FlushLSN()
	if err := t.dir.WriteControl(c); err != nil {
		return err
	}
	t.mu.Lock()
	t.ctl = c
	t.lastPersist = time.Now()
	t.mu.Unlock()
	return nil
}

// CurrentTLI returns the PostgreSQL timeline being written.
func (t *Timeline) CurrentTLI() uint32 { return t.tli.Load() }

// FlushLSN returns the durable end of WAL.
func (t *Timeline) FlushLSN() wal.LSN { return wal.LSN(t.flush.Load()) }

// Changed returns a channel that is closed the next time the durable end of
// WAL (or the local start, backup position or timeline) changes. Read the
// positions after taking the channel to avoid missing a wake-up.
func (t *Timeline) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// SetWalLevel records the upstream's wal_level (SHOW wal_level).
func (t *Timeline) SetWalLevel(level string) { t.walLevel.Store(&level) }

// WalLevel returns the upstream's wal_level as last seen by this process,
// "" before its first contact.
func (t *Timeline) WalLevel() string {
	if p := t.walLevel.Load(); p != nil {
		return *p
	}
	return ""
}

// LastSync returns when an fsync last made new WAL durable (zero before
// the first one of this process).
func (t *Timeline) LastSync() time.Time {
	if ns := t.lastSync.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// LocalStartLSN returns the first WAL position held in local files.
func (t *Timeline) LocalStartLSN() wal.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ctl.StartLSN
}

// BackupLSN returns the end of the contiguous archived prefix.
func (t *Timeline) BackupLSN() wal.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ctl.BackupLSN
}

// SetBackupLSN records that every segment of the history of PostgreSQL
// timeline tli below lsn is archived; it does nothing once the timeline
// has moved past tli (the switch re-based the position). It is persisted in
// the control file before it takes effect, so local removal never trusts
// an archived position a crash could forget. It never moves backwards.
func (t *Timeline) SetBackupLSN(lsn wal.LSN, tli uint32) error {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	changed := false
	err := t.updateControl(func(c *walstore.Control) bool {
		changed = lsn > c.BackupLSN && tli == c.TLI
		c.BackupLSN = max(c.BackupLSN, lsn)
		return changed
	})
	if err != nil {
		return fmt.Errorf("persist backup position: %w", err)
	}
	if changed {
		t.broadcast()
	}
	return nil
}

// broadcast wakes everything waiting on Changed.
func (t *Timeline) broadcast() {
	t.mu.Lock()
	t.broadcastLocked()
	t.mu.Unlock()
}

// RemoveBefore removes the local segments that lie entirely before lsn (a
// segment start no later than the segment holding the durable end). The new
// local start is recorded in the control file first, then the files are
// unlinked: a crash in between leaves files that Open removes, never a
// hole. Senders reading a removed file keep their open descriptor.
//
// Only ctlMu is held meanwhile: ingest goes on. The files removed lie
// before the local start, which a timeline switch never touches (its
// switch point is at or after the local start).
func (t *Timeline) RemoveBefore(lsn wal.LSN) ([]string, error) {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	var segSize uint64
	changed := false
	err := t.updateControl(func(c *walstore.Control) bool {
		if !c.Initialized() {
			return false
		}
		segSize = c.WalSegSize
		lsn = wal.SegmentStart(lsn, segSize)
		if limit := wal.SegmentStart(t.FlushLSN(), segSize); lsn > limit {
			lsn = limit
		}
		if lsn <= c.StartLSN {
			return false
		}
		c.StartLSN, changed = lsn, true
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("persist local start: %w", err)
	}
	if !changed {
		return nil, nil
	}
	t.broadcast()
	return t.dir.RemoveSegmentsBelow(lsn, segSize)
}

// SaveHistory stores a timeline history file received from the upstream.
func (t *Timeline) SaveHistory(tli uint32, content []byte) error {
	return t.dir.SaveHistory(tli, content)
}

// History returns a stored timeline history file.
func (t *Timeline) History(tli uint32) ([]byte, error) { return t.dir.ReadHistory(tli) }

// HasHistory reports whether the history file of tli is stored.
func (t *Timeline) HasHistory(tli uint32) bool { return t.dir.HasHistory(tli) }

// HistoryEntries returns the timeline history of the current PostgreSQL
// timeline: every TLI with the range of WAL positions it covers, the last
// one (the current TLI) open-ended.
func (t *Timeline) HistoryEntries() []wal.HistoryEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.historyLocked()
}

func (t *Timeline) historyLocked() []wal.HistoryEntry {
	tli := t.ctl.TLI
	if t.hist == nil || t.histTLI != tli {
		t.hist, t.histTLI = t.dir.HistoryEntries(tli), tli
	}
	return t.hist
}

// TLIOfPoint returns the timeline, in the current history, that holds lsn.
func (t *Timeline) TLIOfPoint(lsn wal.LSN) uint32 {
	hist := t.HistoryEntries()
	if tli, ok := wal.TLIOfPoint(hist, lsn); ok {
		return tli
	}
	return hist[len(hist)-1].TLI
}

// Close makes everything durable and records the final position in the
// control file.
func (t *Timeline) Close() error {
	w := t.w.Load()
	if w == nil {
		return nil
	}
	if _, err := t.Flush(); err != nil {
		return err
	}
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	if err := t.updateControl(func(*walstore.Control) bool { return true }); err != nil {
		t.log.Warn("persisting control file", zap.Error(err))
	}
	t.w.Store(nil)
	t.mem.Release()
	return w.Close()
}

// SwitchTimeline moves the timeline to PostgreSQL timeline newTLI starting
// at switchpoint, the end of the current timeline in newTLI's history (whose
// history file must be stored). WAL of the old timeline up to the switch
// point stays; the segment holding the switch point is started on the new
// timeline with the old one's bytes before it (as PostgreSQL does), and
// old-timeline WAL from that segment on is set aside (walstore.DivergedDir).
//
// Crash safety: the new timeline's first segment is written, then the
// control file naming the new timeline (the commit point), and only then
// are old files moved; walstore.Open completes an interrupted move.
func (t *Timeline) SwitchTimeline(ctx context.Context, newTLI uint32, switchpoint wal.LSN) error {
	t.ctlMu.Lock()
	defer t.ctlMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.w.Load()
	if cur == nil {
		return errors.New("timeline not initialized")
	}
	if newTLI <= t.ctl.TLI {
		return fmt.Errorf("cannot switch from timeline %d to %d", t.ctl.TLI, newTLI)
	}
	flush, err := cur.Sync()
	if err != nil {
		return err
	}
	if switchpoint > flush {
		return fmt.Errorf("switch point %s is ahead of the end of WAL %s", switchpoint, flush)
	}
	oldTLI, segSize := t.ctl.TLI, t.ctl.WalSegSize
	segno := wal.SegmentNo(switchpoint, segSize)
	headTLI := wal.FileTLI(t.historyLocked(), segno, segSize)
	var head []byte
	local := switchpoint >= t.ctl.StartLSN
	if local {
		head, err = t.dir.SwitchHead(headTLI, switchpoint, segSize)
	} else {
		// The new timeline forks before what is held locally (the
		// promoted server was behind and the rest was archived and
		// removed): its first segment starts with archived bytes.
		head, err = t.archivedHead(ctx, headTLI, switchpoint)
	}
	if err != nil {
		return err
	}
	if err := t.dir.StartTimeline(newTLI, switchpoint, segSize, head); err != nil {
		return err
	}
	ctl := t.ctl
	ctl.TLI = newTLI
	ctl.FlushLSN = switchpoint
	if !local {
		ctl.StartLSN = wal.SegmentStart(switchpoint, segSize)
	}
	if start := wal.SegmentStart(switchpoint, segSize); ctl.BackupLSN > start {
		// The archived old-timeline segment holding the switch point stays
		// in the archive; the new timeline's file of that segment is not
		// archived yet.
		ctl.BackupLSN = start
	}
	if err := t.dir.WriteControl(ctl); err != nil {
		return err
	}
	// Committed: from here on a failure leaves a state that Open completes,
	// so errors are ErrBroken, which makes the process restart.
	t.w.Store(nil)
	cur.Close()
	// Old-timeline bytes past the switch point leave the memory window
	// before the new timeline and its end are published.
	t.mem.Switch(newTLI, switchpoint)
	t.ctl = ctl
	t.hist = nil
	t.tli.Store(newTLI)
	t.flush.Store(uint64(switchpoint))
	t.broadcastLocked()
	moved, err := t.dir.SetAsideDiverged(newTLI, t.historyLocked(), segSize)
	if err != nil {
		return fmt.Errorf("%w: setting aside diverged WAL: %w", walstore.ErrBroken, err)
	}
	w, err := walstore.OpenWriter(t.dir.Path(), newTLI, segSize, switchpoint)
	if err != nil {
		return fmt.Errorf("%w: %w", walstore.ErrBroken, err)
	}
	t.w.Store(w)
	t.log.Info("switched to new timeline",
		zap.Uint32("old_tli", oldTLI), zap.Uint32("new_tli", newTLI),
		zap.Stringer("switch_point", switchpoint), zap.Stringer("previous_end", flush),
		zap.Strings("set_aside", moved))
	return nil
}

// archivedHead reads from the archive the bytes before switchpoint of the
// segment of timeline tli that holds it.
func (t *Timeline) archivedHead(ctx context.Context, tli uint32, switchpoint wal.LSN) ([]byte, error) {
	segSize := t.ctl.WalSegSize
	off := wal.SegmentOffset(switchpoint, segSize)
	if off == 0 {
		return nil, nil
	}
	if t.archived == nil {
		return nil, fmt.Errorf("switch point %s is before the first WAL held locally (%s) and no archive is configured", switchpoint, t.ctl.StartLSN)
	}
	seg, err := t.archived(ctx, tli, wal.SegmentNo(switchpoint, segSize), segSize, t.ctl.SystemID)
	if err != nil {
		return nil, fmt.Errorf("switch point %s is before the first WAL held locally (%s); reading its segment from the archive: %w",
			switchpoint, t.ctl.StartLSN, err)
	}
	return seg[:off], nil
}
