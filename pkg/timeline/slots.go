package timeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// SlotsFileName holds a timeline's persistent replication slots.
const SlotsFileName = "replication_slots"

const (
	slotsMagic   uint32 = 0x534B534C // "SKSL"
	slotsVersion uint32 = 1
)

// slotPersistInterval bounds how often advanced slot positions are written;
// PostgreSQL writes them at checkpoints. A restart may see a slot slightly
// behind, never ahead, which only keeps more WAL.
const slotPersistInterval = time.Second

// SlotLimits configures slots.
type SlotLimits struct {
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
	activePID  uint32
	owner      uint64 // connection that created a temporary slot
}

type slotSet struct {
	mu          sync.Mutex
	m           map[string]*Slot
	limits      SlotLimits
	dirty       bool
	lastPersist time.Time
	released    chan struct{} // closed and replaced when any slot is released or dropped
}

func (s *slotSet) init(l SlotLimits) {
	s.m = make(map[string]*Slot)
	if l.MaxSlots <= 0 {
		l.MaxSlots = 10
	}
	s.limits = l
	s.released = make(chan struct{})
}

func (t *Timeline) slotsPath() string { return filepath.Join(t.dir, SlotsFileName) }

// SetSlotLimits configures slot limits.
func (t *Timeline) SetSlotLimits(l SlotLimits) {
	t.slots.mu.Lock()
	defer t.slots.mu.Unlock()
	if l.MaxSlots <= 0 {
		l.MaxSlots = 10
	}
	t.slots.limits = l
}

func (t *Timeline) loadSlots() error {
	b, err := os.ReadFile(t.slotsPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var list []Slot
	if err := walstore.DecodeChecked(b, slotsMagic, slotsVersion, &list); err != nil {
		return err
	}
	for i := range list {
		s := list[i]
		t.slots.m[s.Name] = &s
	}
	return nil
}

// persistSlotsLocked writes the permanent slots; t.slots.mu is held.
func (t *Timeline) persistSlotsLocked() error {
	list := make([]Slot, 0, len(t.slots.m))
	for _, s := range t.slots.m {
		if !s.Temporary {
			list = append(list, *s)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	b, err := walstore.EncodeChecked(slotsMagic, slotsVersion, list)
	if err != nil {
		return err
	}
	if err := walstore.WriteFileAtomic(t.slotsPath(), b, 0o600); err != nil {
		return err
	}
	t.slots.dirty = false
	t.slots.lastPersist = time.Now()
	return nil
}

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

// CreateSlot creates a physical slot. With reserveWAL its restart position
// is the current end of durable WAL. Temporary slots belong to the
// connection owner and are dropped by DropOwnedSlots.
func (t *Timeline) CreateSlot(name string, temporary, reserveWAL bool, owner uint64) error {
	if err := ValidateSlotName(name); err != nil {
		return err
	}
	t.slots.mu.Lock()
	defer t.slots.mu.Unlock()
	if _, ok := t.slots.m[name]; ok {
		return pgerr.New(pgerr.DuplicateObject, "replication slot \"%s\" already exists", name)
	}
	if len(t.slots.m) >= t.slots.limits.MaxSlots {
		return pgerr.New(pgerr.ConfigurationLimitExceeded, "all replication slots are in use").
			WithHint("Free one or increase max_replication_slots.")
	}
	s := &Slot{Name: name, Temporary: temporary}
	if temporary {
		s.owner = owner
	}
	if reserveWAL {
		s.RestartLSN = t.FlushLSN()
	}
	t.slots.m[name] = s
	if !temporary {
		if err := t.persistSlotsLocked(); err != nil {
			delete(t.slots.m, name)
			return pgerr.New(pgerr.InternalError, "could not write replication slot state: %v", err)
		}
	}
	t.log.Info("created replication slot", zap.String("slot", name), zap.Bool("temporary", temporary), zap.Stringer("restart_lsn", s.RestartLSN))
	return nil
}

// DropSlot drops a slot. An active slot is an error unless wait, in which
// case DropSlot waits (until ctx ends) for it to be released.
func (t *Timeline) DropSlot(ctx context.Context, name string, wait bool) error {
	for {
		t.slots.mu.Lock()
		s, ok := t.slots.m[name]
		if !ok {
			t.slots.mu.Unlock()
			return slotMissing(name)
		}
		if s.activePID != 0 {
			ch := t.slots.released
			pid := s.activePID
			t.slots.mu.Unlock()
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
		delete(t.slots.m, name)
		var err error
		if !s.Temporary {
			err = t.persistSlotsLocked()
		}
		t.slotReleasedLocked()
		t.slots.mu.Unlock()
		if err != nil {
			return pgerr.New(pgerr.InternalError, "could not write replication slot state: %v", err)
		}
		t.log.Info("dropped replication slot", zap.String("slot", name))
		return nil
	}
}

func (t *Timeline) slotReleasedLocked() {
	close(t.slots.released)
	t.slots.released = make(chan struct{})
}

// ReadSlot returns a copy of a slot.
func (t *Timeline) ReadSlot(name string) (Slot, bool) {
	t.slots.mu.Lock()
	defer t.slots.mu.Unlock()
	s, ok := t.slots.m[name]
	if !ok {
		return Slot{}, false
	}
	return *s, true
}

// AcquireSlot marks a slot active for pid; call the returned release when
// streaming ends.
func (t *Timeline) AcquireSlot(name string, pid uint32) (release func(), err error) {
	t.slots.mu.Lock()
	defer t.slots.mu.Unlock()
	s, ok := t.slots.m[name]
	if !ok {
		return nil, slotMissing(name)
	}
	if s.activePID != 0 {
		return nil, pgerr.New(pgerr.ObjectInUse, "replication slot \"%s\" is active for PID %d", name, s.activePID)
	}
	s.activePID = pid
	return func() {
		t.slots.mu.Lock()
		defer t.slots.mu.Unlock()
		if cur, ok := t.slots.m[name]; ok && cur == s {
			s.activePID = 0
			if !s.Temporary && t.slots.dirty {
				if err := t.persistSlotsLocked(); err != nil {
					t.log.Warn("persisting replication slots", zap.Error(err))
				}
			}
		}
		t.slotReleasedLocked()
	}, nil
}

// AdvanceSlot moves a slot's restart position to the consumer's reported
// flush position, as PostgreSQL does for physical slots.
func (t *Timeline) AdvanceSlot(name string, flush wal.LSN) {
	if flush == 0 {
		return
	}
	t.slots.mu.Lock()
	defer t.slots.mu.Unlock()
	s, ok := t.slots.m[name]
	if !ok || s.RestartLSN == flush {
		return
	}
	s.RestartLSN = flush
	if s.Temporary {
		return
	}
	t.slots.dirty = true
	if time.Since(t.slots.lastPersist) >= slotPersistInterval {
		if err := t.persistSlotsLocked(); err != nil {
			t.log.Warn("persisting replication slots", zap.Error(err))
		}
	}
}

// DropOwnedSlots drops the temporary slots created by a connection.
func (t *Timeline) DropOwnedSlots(owner uint64) {
	t.slots.mu.Lock()
	defer t.slots.mu.Unlock()
	for name, s := range t.slots.m {
		if s.Temporary && s.owner == owner {
			delete(t.slots.m, name)
			t.log.Info("dropped temporary replication slot", zap.String("slot", name))
		}
	}
	t.slotReleasedLocked()
}

// SlotStatus describes a slot for the status API and metrics.
type SlotStatus struct {
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

// Slots returns the slots, sorted by name.
func (t *Timeline) Slots() []SlotStatus {
	flush := t.FlushLSN()
	t.slots.mu.Lock()
	defer t.slots.mu.Unlock()
	out := make([]SlotStatus, 0, len(t.slots.m))
	for _, s := range t.slots.m {
		st := SlotStatus{Name: s.Name, Temporary: s.Temporary, Active: s.activePID != 0, ActivePID: s.activePID}
		if s.RestartLSN != 0 {
			st.RestartLSN = s.RestartLSN.String()
			if flush > s.RestartLSN {
				st.BehindBytes = uint64(flush - s.RestartLSN)
			}
			st.WALStatus = "reserved"
			if max := t.slots.limits.MaxKeepBytes; max > 0 && st.BehindBytes > max {
				st.WALStatus = "lost"
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SlotHorizon returns the oldest restart position among slots that are not
// lost: WAL removal must not go past it. ok is false when no slot reserves WAL.
func (t *Timeline) SlotHorizon() (wal.LSN, bool) {
	flush := t.FlushLSN()
	t.slots.mu.Lock()
	defer t.slots.mu.Unlock()
	var min wal.LSN
	found := false
	for _, s := range t.slots.m {
		if s.RestartLSN == 0 {
			continue
		}
		if max := t.slots.limits.MaxKeepBytes; max > 0 && flush > s.RestartLSN && uint64(flush-s.RestartLSN) > max {
			continue
		}
		if !found || s.RestartLSN < min {
			min, found = s.RestartLSN, true
		}
	}
	return min, found
}

// persistSlots writes slots whose positions advanced since the last write.
func (t *Timeline) persistSlots() {
	t.slots.mu.Lock()
	defer t.slots.mu.Unlock()
	if t.slots.dirty {
		if err := t.persistSlotsLocked(); err != nil {
			t.log.Warn("persisting replication slots", zap.Error(err))
		}
	}
}
