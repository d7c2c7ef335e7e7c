package timeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// controlPersistInterval bounds how often the durable position is written
// to the control file during streaming. The true end is always recoverable
// from the segment files; the control file only has to be no later than it.
const controlPersistInterval = time.Second

// UpstreamInfo is what the upstream told us at first contact.
type UpstreamInfo struct {
	SystemID         uint64
	WalSegSize       uint64
	ServerVersion    string
	ServerVersionNum int
	TLI              uint32
}

// Timeline is one hosted timeline.
type Timeline struct {
	id  ID
	dir string
	log *zap.Logger

	mu          sync.Mutex
	ctl         walstore.Control
	w           *walstore.Writer
	lastPersist time.Time
	changed     chan struct{}
	hist        []wal.HistoryEntry // parsed history of histTLI
	histTLI     uint32

	flush atomic.Uint64 // durable end of WAL; what may be served and acknowledged
	tli   atomic.Uint32 // current PostgreSQL timeline

	consumers consumerRegistry
	upstream  upstreamState
	slots     slotSet
}

// Open loads (or creates) the timeline stored in dir. For a timeline that
// has WAL, the true end of valid WAL is recovered before Open returns.
func Open(dir string, id ID, log *zap.Logger) (*Timeline, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	t := &Timeline{id: id, dir: dir, log: log, changed: make(chan struct{})}
	t.consumers.init()
	t.slots.init(SlotLimits{})
	if err := t.loadSlots(); err != nil {
		return nil, fmt.Errorf("timeline %s: replication slots: %w", id, err)
	}
	ctl, err := walstore.ReadControl(t.controlPath())
	switch {
	case errors.Is(err, walstore.ErrNoControl):
		ctl = walstore.Control{TenantID: id.TenantID, TimelineID: id.TimelineID}
		if err := walstore.WriteControl(t.controlPath(), ctl); err != nil {
			return nil, err
		}
		// Make the new tenant and timeline directories durable.
		if err := walstore.SyncDir(filepath.Dir(dir)); err != nil {
			return nil, err
		}
		if err := walstore.SyncDir(filepath.Dir(filepath.Dir(dir))); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("timeline %s: %w", id, err)
	}
	if ctl.TenantID != id.TenantID || ctl.TimelineID != id.TimelineID {
		return nil, fmt.Errorf("timeline directory %q holds %s/%s, not %s", dir, ctl.TenantID, ctl.TimelineID, id)
	}
	t.ctl = ctl
	t.tli.Store(ctl.TLI)
	if ctl.Initialized() {
		res, err := walstore.Recover(dir, ctl)
		if err != nil {
			return nil, fmt.Errorf("recover timeline %s: %w", id, err)
		}
		log.Info("recovered end of WAL",
			zap.Stringer("end_lsn", res.End), zap.Stringer("control_flush_lsn", res.ControlEnd),
			zap.String("scanned", res.Scanned), zap.Stringer("scan_end", res.ScanEnd),
			zap.Int64("truncated_bytes", res.Truncated), zap.Strings("removed", res.Removed))
		if moved, err := t.setAsideDivergedLocked(); err != nil {
			return nil, fmt.Errorf("timeline %s: setting aside diverged WAL: %w", id, err)
		} else if len(moved) > 0 {
			log.Info("completed an interrupted timeline switch", zap.Strings("set_aside", moved))
		}
		w, err := walstore.OpenWriter(dir, ctl.TLI, ctl.WalSegSize, res.End)
		if err != nil {
			return nil, err
		}
		t.w = w
		t.flush.Store(uint64(res.End))
		t.ctl.FlushLSN = res.End
		if err := walstore.WriteControl(t.controlPath(), t.ctl); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t *Timeline) controlPath() string { return filepath.Join(t.dir, walstore.ControlFileName) }

// ID returns the timeline's id.
func (t *Timeline) ID() ID { return t.id }

// Dir returns the directory holding the timeline's files.
func (t *Timeline) Dir() string { return t.dir }

// Control returns a snapshot of the control data.
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
	ctl.FlushLSN = start
	w, err := walstore.OpenWriter(t.dir, ctl.TLI, ctl.WalSegSize, start)
	if err != nil {
		return err
	}
	if err := walstore.WriteControl(t.controlPath(), ctl); err != nil {
		w.Close()
		return err
	}
	t.ctl = ctl
	t.w = w
	t.tli.Store(ctl.TLI)
	t.flush.Store(uint64(start))
	t.lastPersist = time.Now()
	return nil
}

// UpdateServerVersion records the upstream's version string when it changes
// (a minor upgrade of the primary).
func (t *Timeline) UpdateServerVersion(version string, num int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctl.ServerVersion == version && t.ctl.ServerVersionNum == num {
		return
	}
	t.ctl.ServerVersion, t.ctl.ServerVersionNum = version, num
	t.ctl.FlushLSN = t.FlushLSN()
	if err := walstore.WriteControl(t.controlPath(), t.ctl); err != nil {
		t.log.Warn("persisting control file", zap.Error(err))
	}
}

// WrittenLSN returns the end of WAL written (received), durable or not.
func (t *Timeline) WrittenLSN() wal.LSN {
	t.mu.Lock()
	w := t.w
	t.mu.Unlock()
	if w == nil {
		return 0
	}
	return w.Written()
}

// Append writes received WAL starting at start. It is not durable until
// Flush returns a position past it.
func (t *Timeline) Append(start wal.LSN, data []byte) error {
	t.mu.Lock()
	w := t.w
	t.mu.Unlock()
	if w == nil {
		return errors.New("timeline not initialized")
	}
	return w.Write(start, data)
}

// Flush makes all appended WAL durable, publishes the new end to waiting
// senders and returns it.
func (t *Timeline) Flush() (wal.LSN, error) {
	t.mu.Lock()
	w := t.w
	t.mu.Unlock()
	if w == nil {
		return 0, errors.New("timeline not initialized")
	}
	d, err := w.Sync()
	if err != nil {
		return t.FlushLSN(), err
	}
	if uint64(d) > t.flush.Load() {
		t.flush.Store(uint64(d))
		t.mu.Lock()
		close(t.changed)
		t.changed = make(chan struct{})
		persist := time.Since(t.lastPersist) >= controlPersistInterval
		t.mu.Unlock()
		if persist {
			t.persist()
		}
	}
	return d, nil
}

func (t *Timeline) persist() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ctl.FlushLSN = t.FlushLSN()
	t.lastPersist = time.Now()
	if err := walstore.WriteControl(t.controlPath(), t.ctl); err != nil {
		t.log.Warn("persisting control file", zap.Error(err))
	}
}

// CurrentTLI returns the PostgreSQL timeline being written.
func (t *Timeline) CurrentTLI() uint32 { return t.tli.Load() }

// FlushLSN returns the durable end of WAL.
func (t *Timeline) FlushLSN() wal.LSN { return wal.LSN(t.flush.Load()) }

// Changed returns a channel that is closed the next time FlushLSN advances.
// Read FlushLSN after taking the channel to avoid missing a wake-up.
func (t *Timeline) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// SaveHistory stores a timeline history file received from the upstream.
func (t *Timeline) SaveHistory(tli uint32, content []byte) error {
	return walstore.WriteFileAtomic(filepath.Join(t.dir, wal.HistoryFileName(tli)), content, 0o600)
}

// History returns a stored timeline history file.
func (t *Timeline) History(tli uint32) ([]byte, error) {
	return os.ReadFile(filepath.Join(t.dir, wal.HistoryFileName(tli)))
}

// HasHistory reports whether the history file of tli is stored.
func (t *Timeline) HasHistory(tli uint32) bool {
	_, err := os.Stat(filepath.Join(t.dir, wal.HistoryFileName(tli)))
	return err == nil
}

// Close makes everything durable and records the final position in the
// control file.
func (t *Timeline) Close() error {
	t.mu.Lock()
	w := t.w
	t.mu.Unlock()
	if w == nil {
		return nil
	}
	if _, err := t.Flush(); err != nil {
		return err
	}
	t.persist()
	t.persistSlots()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.w = nil
	return w.Close()
}

// DivergedDir holds WAL set aside at a timeline switch: bytes of the old
// timeline past the switch point, which the new timeline does not contain.
// They are never served.
const DivergedDir = "diverged"

// SwitchTimeline moves the timeline to PostgreSQL timeline newTLI starting
// at switchpoint, the end of the current timeline in newTLI's history (whose
// history file must be stored). WAL of the old timeline up to the switch
// point stays; the segment holding the switch point is started on the new
// timeline with the old one's bytes before it (as PostgreSQL does), and
// old-timeline WAL from that segment on is moved to DivergedDir.
//
// Crash safety: the new timeline's first segment is written, then the
// control file naming the new timeline (the commit point), and only then
// are old files moved; Open completes an interrupted move.
func (t *Timeline) SwitchTimeline(newTLI uint32, switchpoint wal.LSN) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w == nil {
		return errors.New("timeline not initialized")
	}
	if newTLI <= t.ctl.TLI {
		return fmt.Errorf("cannot switch from timeline %d to %d", t.ctl.TLI, newTLI)
	}
	flush, err := t.w.Sync()
	if err != nil {
		return err
	}
	if switchpoint > flush {
		return fmt.Errorf("switch point %s is ahead of the end of WAL %s", switchpoint, flush)
	}
	if switchpoint < t.ctl.StartLSN {
		return fmt.Errorf("switch point %s is before the first WAL held (%s)", switchpoint, t.ctl.StartLSN)
	}
	oldTLI, segSize := t.ctl.TLI, t.ctl.WalSegSize
	segno := wal.SegmentNo(switchpoint, segSize)
	off := wal.SegmentOffset(switchpoint, segSize)

	// The new timeline's first segment starts with the old one's bytes.
	var head []byte
	if off > 0 {
		base := filepath.Join(t.dir, wal.SegmentFileName(oldTLI, segno, segSize))
		f, err := os.Open(base)
		if errors.Is(err, os.ErrNotExist) {
			f, err = os.Open(base + walstore.PartialSuffix)
		}
		if err != nil {
			return fmt.Errorf("read segment holding the switch point: %w", err)
		}
		head = make([]byte, off)
		_, err = f.ReadAt(head, 0)
		f.Close()
		if err != nil {
			return fmt.Errorf("read segment holding the switch point: %w", err)
		}
	}
	newName := filepath.Join(t.dir, wal.SegmentFileName(newTLI, segno, segSize)+walstore.PartialSuffix)
	if err := walstore.WriteFileAtomic(newName, head, 0o600); err != nil {
		return err
	}
	ctl := t.ctl
	ctl.TLI = newTLI
	ctl.FlushLSN = switchpoint
	if err := walstore.WriteControl(t.controlPath(), ctl); err != nil {
		return err
	}
	// Committed: from here on a failure leaves a state that Open completes,
	// so errors are ErrBroken, which makes the process restart.
	old := t.w
	t.w = nil
	old.Close()
	t.ctl = ctl
	t.hist = nil
	t.tli.Store(newTLI)
	t.flush.Store(uint64(switchpoint))
	close(t.changed)
	t.changed = make(chan struct{})
	moved, err := t.setAsideDivergedLocked()
	if err != nil {
		return fmt.Errorf("%w: setting aside diverged WAL: %w", walstore.ErrBroken, err)
	}
	w, err := walstore.OpenWriter(t.dir, newTLI, segSize, switchpoint)
	if err != nil {
		return fmt.Errorf("%w: %w", walstore.ErrBroken, err)
	}
	t.w = w
	t.log.Info("switched to new timeline",
		zap.Uint32("old_tli", oldTLI), zap.Uint32("new_tli", newTLI),
		zap.Stringer("switch_point", switchpoint), zap.Stringer("previous_end", flush),
		zap.Strings("set_aside", moved))
	return nil
}

// setAsideDivergedLocked moves segment files of earlier timelines that lie
// at or past their timeline's switch point segment (their WAL there is
// either in the newer timeline's file or not part of the history) into
// DivergedDir. It is idempotent. t.mu is held.
func (t *Timeline) setAsideDivergedLocked() ([]string, error) {
	segSize := t.ctl.WalSegSize
	hist := t.historyLocked()
	files, err := walstore.ListSegments(t.dir, segSize)
	if err != nil {
		return nil, err
	}
	var moved []string
	for _, f := range files {
		if f.TLI >= t.ctl.TLI {
			continue
		}
		sp, _, ok := wal.SwitchPoint(hist, f.TLI)
		if ok && f.SegNo < wal.SegmentNo(sp, segSize) {
			continue
		}
		if !ok {
			continue // not on our history: leave it for the operator
		}
		dd := filepath.Join(t.dir, DivergedDir)
		if err := os.MkdirAll(dd, 0o700); err != nil {
			return moved, err
		}
		if err := os.Rename(filepath.Join(t.dir, f.Name), filepath.Join(dd, f.Name)); err != nil {
			return moved, err
		}
		moved = append(moved, f.Name)
	}
	if len(moved) > 0 {
		if err := walstore.SyncDir(filepath.Join(t.dir, DivergedDir)); err != nil {
			return moved, err
		}
		if err := walstore.SyncDir(t.dir); err != nil {
			return moved, err
		}
	}
	return moved, nil
}
