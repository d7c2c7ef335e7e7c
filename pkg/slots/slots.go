package slots

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/internal/notify"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// FileName is the state file holding a timeline's permanent slots.
const FileName = "replication_slots"

const (
	slotsMagic   uint32 = 0x534B534C // "SKSL"
	slotsVersion uint32 = 1
)

// slotPersistInterval bounds how often advanced slot positions are written;
// PostgreSQL writes them at checkpoints. A restart may see a slot slightly
// behind, never ahead, which only keeps more WAL.
const slotPersistInterval = time.Second

// Limits configures slots.
type Limits struct {
	MaxSlots int // max_replication_slots; default 10
	// MaxKeepBytes is the most WAL a slot may hold back (max_slot_wal_keep_size);
	// 0 means unlimited. A slot further behind is reported lost.
	MaxKeepBytes uint64
}

// Slot is a physical replication slot held by the safekeeper.
type Slot struct {
	Name       string  `json:"name"`
	RestartLSN wal.LSN `json:"restart_lsn"` // 0 = not reserved (NULL)
	Temporary  bool    `json:"-"`
	// activePID is the process ID of the connection using the slot: a
	// stream's while it streams, and a temporary slot's creator's for the
	// creator's whole life, as PostgreSQL keeps a temporary slot acquired
	// by its session. 0: inactive.
	activePID uint32
	// saved is RestartLSN as last written to the slots file. Removal
	// honours it, not the newer position in memory: after a crash the
	// slot comes back at saved, and its WAL must still be there.
	saved wal.LSN
}

// Positions is what slots need to know about the timeline's WAL.
type Positions interface {
	// FlushLSN is the durable end of WAL: where RESERVE_WAL reserves from
	// and what "behind" is measured against.
	FlushLSN() wal.LSN
	// OldestLSN is the oldest position any tier still holds; a slot
	// whose restart position is older can never be served again.
	OldestLSN() wal.LSN
}

// Set holds the physical replication slots of one timeline. Permanent
// slots persist in a checksummed state file replaced atomically; temporary
// ones die with the connection that created them.
type Set struct {
	path string
	pos  Positions
	log  *zap.Logger

	mu          sync.Mutex
	m           map[string]*Slot
	limits      Limits
	dirty       bool
	lastPersist time.Time
	persistAt   *time.Timer // pending write of advanced positions (see checkpointLocked)
	closed      bool
	released    chan struct{} // closed and replaced when any slot is released or dropped

	changed notify.Broadcast // what Horizon returns may have changed
}

// Open loads the permanent slots stored at path (a missing file is an empty
// set).
func Open(path string, limits Limits, pos Positions, log *zap.Logger) (*Set, error) {
	if limits.MaxSlots <= 0 {
		limits.MaxSlots = 10
	}
	t := &Set{path: path, pos: pos, log: log, m: make(map[string]*Slot), limits: limits, released: make(chan struct{})}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, err
	}
	var list []Slot
	if err := walstore.DecodeChecked(b, slotsMagic, slotsVersion, &list); err != nil {
		return nil, fmt.Errorf("replication slots file %s: %w", path, err)
	}
	for i := range list {
		s := list[i]
		s.saved = s.RestartLSN
		t.m[s.Name] = &s
	}
	return t, nil
}

// persistLocked writes the permanent slots; t.mu is held.
func (t *Set) persistLocked() error {
	list := make([]Slot, 0, len(t.m))
	for _, s := range t.m {
		if !s.Temporary {
			list = append(list, *s)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	b, err := walstore.EncodeChecked(slotsMagic, slotsVersion, list)
	if err != nil {
		return err
	}
	if err := walstore.WriteFileAtomic(t.path, b, 0o600); err != nil {
		return err
	}
	for _, s := range t.m {
		if !s.Temporary {
			s.saved = s.RestartLSN
		}
	}
	t.dirty = false
	t.lastPersist = time.Now()
	t.changed.Notify()
	return nil
}

// Changed returns a channel closed when the horizon may have moved: a
// slot was created or dropped, or a restart position that removal
// honours changed (a temporary slot's in memory, a permanent slot's when
// written to disk). Take it before calling Horizon.
func (t *Set) Changed() <-chan struct{} { return t.changed.C() }

// ValidateSlotName applies PostgreSQL's rules: 1-63 characters from
// [a-z0-9_].
func ValidateSlotName(name string) error {
	if len(name) == 0 {
		return pgerr.New(pgerr.InvalidName, "replication slot name \"%s\" is too short", name)
	}
	if len(name) >= 64 {
		return pgerr.New(pgerr.NameTooLong, "replication slot name \"%s\" is too long", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return pgerr.New(pgerr.InvalidName, "replication slot name \"%s\" contains invalid character", name).
				WithHint("Replication slot names may only contain lower case letters, numbers, and the underscore character.")
		}
	}
	return nil
}

func slotMissing(name string) error {
	return pgerr.New(pgerr.UndefinedObject, "replication slot \"%s\" does not exist", name)
}

// Create creates a physical slot for the connection with process ID pid.
// With reserveWAL its restart position is the current end of durable WAL.
// A temporary slot stays active for pid, which alone may stream with it
// or drop it, until DropOwned(pid) drops it.
func (t *Set) Create(name string, temporary, reserveWAL bool, pid uint32) error {
	if err := ValidateSlotName(name); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[name]; ok {
		return pgerr.New(pgerr.DuplicateObject, "replication slot \"%s\" already exists", name)
	}
	if len(t.m) >= t.limits.MaxSlots {
		return pgerr.New(pgerr.ConfigurationLimitExceeded, "all replication slots are in use").
			WithHint("Free one or increase max_replication_slots.")
	}
	s := &Slot{Name: name, Temporary: temporary}
	if temporary {
		s.activePID = pid
	}
	if reserveWAL {
		s.RestartLSN = t.pos.FlushLSN()
	}
	t.m[name] = s
	if !temporary {
		if err := t.persistLocked(); err != nil {
			delete(t.m, name)
			return pgerr.New(pgerr.InternalError, "could not write replication slot state: %v", err)
		}
	}
	t.changed.Notify()
	t.log.Info("created replication slot", zap.String("slot", name), zap.Bool("temporary", temporary), zap.Stringer("restart_lsn", s.RestartLSN))
	return nil
}

// Drop drops a slot for the connection with process ID pid. A slot active
// for another connection is an error unless wait, in which case Drop
// waits (until ctx ends) for it to be released.
func (t *Set) Drop(ctx context.Context, name string, pid uint32, wait bool) error {
	for {
		t.mu.Lock()
		s, ok := t.m[name]
		if !ok {
			t.mu.Unlock()
			return slotMissing(name)
		}
		if s.activePID != 0 && s.activePID != pid {
			ch := t.released
			pid := s.activePID
			t.mu.Unlock()
			if !wait {
				return pgerr.New(pgerr.ObjectInUse, "replication slot \"%s\" is active for PID %d", name, pid)
			}
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		delete(t.m, name)
		var err error
		if !s.Temporary {
			err = t.persistLocked()
		}
		t.releasedLocked()
		t.changed.Notify()
		t.mu.Unlock()
		if err != nil {
			return pgerr.New(pgerr.InternalError, "could not write replication slot state: %v", err)
		}
		t.log.Info("dropped replication slot", zap.String("slot", name))
		return nil
	}
}

func (t *Set) releasedLocked() {
	close(t.released)
	t.released = make(chan struct{})
}

// Read returns a copy of a slot.
func (t *Set) Read(name string) (Slot, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[name]
	if !ok {
		return Slot{}, false
	}
	return *s, true
}

// Acquire marks a slot active for pid; call the returned release when
// streaming ends. A temporary slot is active for its creator already,
// and stays so after release.
func (t *Set) Acquire(name string, pid uint32) (release func(), err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[name]
	if !ok {
		return nil, slotMissing(name)
	}
	if s.activePID != 0 && !(s.Temporary && s.activePID == pid) {
		return nil, pgerr.New(pgerr.ObjectInUse, "replication slot \"%s\" is active for PID %d", name, s.activePID)
	}
	s.activePID = pid
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if cur, ok := t.m[name]; ok && cur == s && !s.Temporary {
			s.activePID = 0
			if t.dirty {
				if err := t.persistLocked(); err != nil {
					t.log.Warn("persisting replication slots", zap.Error(err))
				}
			}
		}
		t.releasedLocked()
	}, nil
}

// Advance moves a slot's restart position to the consumer's reported
// flush position, as PostgreSQL does for physical slots.
func (t *Set) Advance(name string, flush wal.LSN) {
	if flush == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[name]
	if !ok || s.RestartLSN == flush {
		return
	}
	s.RestartLSN = flush
	if s.Temporary {
		t.changed.Notify()
		return
	}
	t.dirty = true
	t.checkpointLocked()
}

// DropOwned drops the temporary slots created by the connection with
// process ID pid, when it ends.
func (t *Set) DropOwned(pid uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, s := range t.m {
		if s.Temporary && s.activePID == pid {
			delete(t.m, name)
			t.changed.Notify()
			t.log.Info("dropped temporary replication slot", zap.String("slot", name))
		}
	}
	t.releasedLocked()
}

// Status describes a slot for the status API and metrics.
type Status struct {
	Name       string `json:"slot_name"`
	Temporary  bool   `json:"temporary"`
	Active     bool   `json:"active"`
	ActivePID  uint32 `json:"active_pid,omitempty"`
	RestartLSN string `json:"restart_lsn,omitempty"`
	// WALStatus is "reserved" while the slot is within the keep limit,
	// "lost" once it is further behind than --max-slot-wal-keep-size
	// (its WAL may be removed), "" for a slot that reserves nothing.
	WALStatus   string `json:"wal_status"`
	BehindBytes uint64 `json:"behind_bytes"`
}

// List returns the slots, sorted by name.
func (t *Set) List() []Status {
	flush, oldest := t.pos.FlushLSN(), t.pos.OldestLSN()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Status, 0, len(t.m))
	for _, s := range t.m {
		st := Status{Name: s.Name, Temporary: s.Temporary, Active: s.activePID != 0, ActivePID: s.activePID}
		if s.RestartLSN != 0 {
			st.RestartLSN = s.RestartLSN.String()
			if flush > s.RestartLSN {
				st.BehindBytes = uint64(flush - s.RestartLSN)
			}
			st.WALStatus = "reserved"
			if t.lostLocked(s, flush, oldest) {
				st.WALStatus = "lost"
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// lostLocked reports whether a reserving slot is lost: further behind
// the end of WAL than --max-slot-wal-keep-size, or behind the oldest WAL any
// tier still holds (its consumer needs a new base backup). t.mu is held.
func (t *Set) lostLocked(s *Slot, flush, oldest wal.LSN) bool {
	if max := t.limits.MaxKeepBytes; max > 0 && flush > s.RestartLSN && uint64(flush-s.RestartLSN) > max {
		return true
	}
	return s.RestartLSN < oldest
}

// Horizon returns the oldest restart position among slots that are not
// lost, and the slot holding it: WAL removal must not go past it. For a
// permanent slot it is the position last written to disk (what the slot
// restarts from after a crash), as PostgreSQL saves slots before it
// removes WAL. ok is false when no slot reserves WAL.
func (t *Set) Horizon() (lsn wal.LSN, slot string, ok bool) {
	flush, oldest := t.pos.FlushLSN(), t.pos.OldestLSN()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.m {
		pos := s.RestartLSN
		if !s.Temporary {
			pos = s.saved
		}
		if pos == 0 || t.lostLocked(s, flush, oldest) {
			continue
		}
		if !ok || pos < lsn || pos == lsn && s.Name < slot {
			lsn, slot, ok = pos, s.Name, true
		}
	}
	return lsn, slot, ok
}

// Checkpoint writes advanced slot positions when the last write is older
// than the persist interval. Advance sees to that by itself (see
// checkpointLocked); retention calls it before computing the horizon.
func (t *Set) Checkpoint() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checkpointLocked()
}

// checkpointLocked writes advanced positions when the last write is at
// least slotPersistInterval old, and otherwise (or when the write fails)
// arms a one-shot timer for when it is due: a position reported once and
// then left alone still reaches the disk (and releases WAL) within a
// second or so, and slots that do not move cost no timer at all. t.mu is
// held.
func (t *Set) checkpointLocked() {
	if !t.dirty || t.closed {
		return
	}
	wait := slotPersistInterval - time.Since(t.lastPersist)
	if wait <= 0 {
		err := t.persistLocked()
		if err == nil {
			return
		}
		t.log.Warn("persisting replication slots; will retry", zap.Error(err))
		wait = slotPersistInterval
	}
	if t.persistAt == nil {
		t.persistAt = time.AfterFunc(wait, func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.persistAt = nil
			t.checkpointLocked()
		})
	}
}

// Persist writes slots whose positions advanced since the last write.
func (t *Set) Persist() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dirty {
		if err := t.persistLocked(); err != nil {
			t.log.Warn("persisting replication slots", zap.Error(err))
		}
	}
}

// Close writes positions that advanced since the last write, as Persist,
// and cancels the pending write: call it when the timeline closes.
func (t *Set) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.persistAt != nil {
		t.persistAt.Stop()
		t.persistAt = nil
	}
	if t.dirty {
		if err := t.persistLocked(); err != nil {
			t.log.Warn("persisting replication slots", zap.Error(err))
		}
	}
}
