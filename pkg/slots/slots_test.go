package slots_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

const seg = 1 << 20

// positions is a settable Positions.
type positions struct{ flush, oldest atomic.Uint64 }

func newPositions(flush, oldest wal.LSN) *positions {
	p := &positions{}
	p.flush.Store(uint64(flush))
	p.oldest.Store(uint64(oldest))
	return p
}

func (p *positions) FlushLSN() wal.LSN  { return wal.LSN(p.flush.Load()) }
func (p *positions) OldestLSN() wal.LSN { return wal.LSN(p.oldest.Load()) }

func open(t *testing.T, path string, limits slots.Limits, pos slots.Positions) *slots.Set {
	t.Helper()
	s, err := slots.Open(path, limits, pos, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newSet(t *testing.T, limits slots.Limits, pos slots.Positions) (*slots.Set, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), slots.FileName)
	return open(t, path, limits, pos), path
}

// create makes a permanent slot whose restart position is restart (0:
// no WAL reserved).
func create(t *testing.T, s *slots.Set, name string, restart wal.LSN) {
	t.Helper()
	if err := s.Create(name, false, restart != 0, 0); err != nil {
		t.Fatal(err)
	}
	s.Advance(name, restart)
	s.Persist()
}

// Removal honours the restart position a crash would come back with: an
// advance that is not written yet does not move the horizon.
func TestHorizonUsesSavedPosition(t *testing.T) {
	pos := newPositions(10*seg, 0)
	s, _ := newSet(t, slots.Limits{}, pos)
	create(t, s, "a", 3*seg)
	s.Advance("a", 6*seg) // not yet saved (at most once a second)
	if lsn, _, _ := s.Horizon(); lsn != 3*seg {
		t.Fatalf("Horizon = %s before the advance is saved, want 0/300000", lsn)
	}
	if sl, _ := s.Read("a"); sl.RestartLSN != 6*seg {
		t.Fatalf("the slot reads %s, want the advanced 0/600000", sl.RestartLSN)
	}
	s.Persist()
	if lsn, _, _ := s.Horizon(); lsn != 6*seg {
		t.Fatalf("Horizon = %s after the save, want 0/600000", lsn)
	}
}

func TestHorizonSkipsLostSlots(t *testing.T) {
	pos := newPositions(10*seg, 2*seg)
	s, _ := newSet(t, slots.Limits{MaxKeepBytes: 5 * seg}, pos)
	if _, _, ok := s.Horizon(); ok {
		t.Fatal("Horizon ok without slots")
	}
	create(t, s, "too_far", 4*seg)  // 6 MiB behind, limit 5: lost
	create(t, s, "way_back", 1*seg) // behind the limit and the oldest WAL: lost
	create(t, s, "at_limit", 5*seg) // exactly 5 MiB behind: reserved
	create(t, s, "ok_late", 9*seg)  // reserved
	create(t, s, "unreserved", 0)   // reserves nothing
	lsn, name, ok := s.Horizon()
	if !ok || lsn != 5*seg || name != "at_limit" {
		t.Fatalf("Horizon = %s %q %v, want 0/500000 at_limit", lsn, name, ok)
	}
	want := []slots.Status{
		{Name: "at_limit", RestartLSN: wal.LSN(5 * seg).String(), WALStatus: "reserved", BehindBytes: 5 * seg},
		{Name: "ok_late", RestartLSN: wal.LSN(9 * seg).String(), WALStatus: "reserved", BehindBytes: seg},
		{Name: "too_far", RestartLSN: wal.LSN(4 * seg).String(), WALStatus: "lost", BehindBytes: 6 * seg},
		{Name: "unreserved"},
		{Name: "way_back", RestartLSN: wal.LSN(1 * seg).String(), WALStatus: "lost", BehindBytes: 9 * seg},
	}
	if got := s.List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("List =\n%+v\nwant\n%+v", got, want)
	}

	// The end of WAL moves on: at_limit falls behind the limit too.
	pos.flush.Store(10*seg + 1)
	if lsn, name, ok := s.Horizon(); !ok || lsn != 9*seg || name != "ok_late" {
		t.Fatalf("Horizon = %s %q %v, want 0/900000 ok_late", lsn, name, ok)
	}
	// Without a limit only the oldest WAL held makes a slot lost.
	u, _ := newSet(t, slots.Limits{}, newPositions(100*seg, 2*seg))
	create(t, u, "old_but_held", 2*seg)
	create(t, u, "gone", 2*seg-1)
	if lsn, name, ok := u.Horizon(); !ok || lsn != 2*seg || name != "old_but_held" {
		t.Fatalf("unlimited: Horizon = %s %q %v, want 0/200000 old_but_held", lsn, name, ok)
	}
	if got := u.List(); len(got) != 2 || got[0].Name != "gone" || got[0].WALStatus != "lost" || got[1].WALStatus != "reserved" {
		t.Fatalf("unlimited: List = %+v; want gone lost, old_but_held reserved", got)
	}
	// Equal positions: the first name holds.
	create(t, u, "a_same", 2*seg)
	if _, name, _ := u.Horizon(); name != "a_same" {
		t.Fatalf("tie broken for %q, want a_same", name)
	}
}

func TestCreateReservesAtFlush(t *testing.T) {
	pos := newPositions(3*seg+77, 0)
	s, _ := newSet(t, slots.Limits{}, pos)
	if err := s.Create("r", false, true, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Create("n", true, false, 9); err != nil {
		t.Fatal(err)
	}
	if sl, ok := s.Read("r"); !ok || sl.RestartLSN != 3*seg+77 || sl.Temporary {
		t.Fatalf("Read(r) = %+v, %v", sl, ok)
	}
	if sl, ok := s.Read("n"); !ok || sl.RestartLSN != 0 || !sl.Temporary {
		t.Fatalf("Read(n) = %+v, %v", sl, ok)
	}
	if _, ok := s.Read("missing"); ok {
		t.Fatal("Read of a missing slot")
	}
	// Advance(0) is ignored (a standby that reports no flush position).
	s.Advance("r", 0)
	if sl, _ := s.Read("r"); sl.RestartLSN != 3*seg+77 {
		t.Fatalf("Advance(0) moved the slot to %s", sl.RestartLSN)
	}
}

func TestPersistenceRoundTrip(t *testing.T) {
	pos := newPositions(4*seg, 0)
	s, path := newSet(t, slots.Limits{}, pos)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file exists before any slot: %v", err)
	}
	create(t, s, "reserving", 4*seg)
	create(t, s, "plain", 0)
	if err := s.Create("temp", true, true, 42); err != nil {
		t.Fatal(err)
	}
	// Advanced positions are written by Persist (and on release).
	s.Advance("reserving", 4*seg+100)
	s.Persist()
	release, err := s.Acquire("plain", 77)
	if err != nil {
		t.Fatal(err)
	}
	s.Advance("plain", 2*seg)
	release()

	r := open(t, path, slots.Limits{}, pos)
	want := []slots.Status{
		{Name: "plain", RestartLSN: wal.LSN(2 * seg).String(), WALStatus: "reserved", BehindBytes: 2 * seg},
		{Name: "reserving", RestartLSN: wal.LSN(4*seg + 100).String(), WALStatus: "reserved"},
	}
	if got := r.List(); !reflect.DeepEqual(got, want) {
		t.Fatalf("reopened: %+v\nwant %+v", got, want)
	}
	if sl, ok := r.Read("reserving"); !ok || sl.Temporary || sl.RestartLSN != 4*seg+100 {
		t.Fatalf("reopened Read = %+v, %v", sl, ok)
	}
	// A reloaded slot is not active.
	rel, err := r.Acquire("reserving", 5)
	if err != nil {
		t.Fatalf("Acquire after reopen: %v", err)
	}
	rel()
	// Drop persists.
	if err := r.Drop(context.Background(), "plain", 0, false); err != nil {
		t.Fatal(err)
	}
	if got := open(t, path, slots.Limits{}, pos).List(); len(got) != 1 || got[0].Name != "reserving" {
		t.Fatalf("after Drop and reopen: %+v", got)
	}
	// A damaged file is refused, not read as empty.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := slots.Open(path, slots.Limits{}, pos, zap.NewNop()); err == nil {
		t.Fatal("Open accepted a damaged slots file")
	}
}

// wantPG checks err is a PostgreSQL error with code and message.
func wantPG(t *testing.T, err error, code, msg string) *pgerr.Error {
	t.Helper()
	pe := pgerr.As(err)
	if pe == nil {
		t.Fatalf("error %v is not a PostgreSQL error (want %s %q)", err, code, msg)
	}
	if pe.Code != code || pe.Message != msg || pe.Severity != "ERROR" {
		t.Fatalf("error %s %s %q, want ERROR %s %q", pe.Severity, pe.Code, pe.Message, code, msg)
	}
	return pe
}

func TestCreateErrors(t *testing.T) {
	s, _ := newSet(t, slots.Limits{MaxSlots: 3}, newPositions(seg, 0))
	long := strings.Repeat("a", 64)
	wantPG(t, s.Create("", false, false, 0), "42602", `replication slot name "" is too short`)
	wantPG(t, s.Create(long, false, false, 0), "42622", `replication slot name "`+long+`" is too long`)
	for _, bad := range []string{"Upper", "has-dash", "sp ace", "dot.ted", "ünï"} {
		pe := wantPG(t, s.Create(bad, false, false, 0), "42602", `replication slot name "`+bad+`" contains invalid character`)
		if pe.Hint != "Replication slot names may only contain lower case letters, numbers, and the underscore character." {
			t.Errorf("hint %q", pe.Hint)
		}
	}
	if err := slots.ValidateSlotName(long[:63]); err != nil {
		t.Fatalf("63 characters refused: %v", err)
	}
	if err := s.Create(long[:63], false, false, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Create("x_1", true, false, 1); err != nil {
		t.Fatal(err)
	}
	wantPG(t, s.Create("x_1", false, false, 0), "42710", `replication slot "x_1" already exists`)
	if err := s.Create("third", false, false, 0); err != nil {
		t.Fatal(err)
	}
	// Temporary slots count towards max_replication_slots.
	pe := wantPG(t, s.Create("fourth", false, false, 0), "53400", "all replication slots are in use")
	if pe.Hint != "Free one or increase max_replication_slots." {
		t.Errorf("hint %q", pe.Hint)
	}
	// Refused creations left nothing behind.
	if n := len(s.List()); n != 3 {
		t.Fatalf("%d slots, want 3", n)
	}
}

func TestDropAndAcquireErrors(t *testing.T) {
	ctx := context.Background()
	s, _ := newSet(t, slots.Limits{}, newPositions(seg, 0))
	wantPG(t, s.Drop(ctx, "nope", 0, false), "42704", `replication slot "nope" does not exist`)
	wantPG(t, s.Drop(ctx, "nope", 0, true), "42704", `replication slot "nope" does not exist`)
	_, err := s.Acquire("nope", 1)
	wantPG(t, err, "42704", `replication slot "nope" does not exist`)

	create(t, s, "busy", seg)
	release, err := s.Acquire("busy", 1234)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.List(); !st[0].Active || st[0].ActivePID != 1234 {
		t.Fatalf("acquired slot status %+v", st[0])
	}
	_, err = s.Acquire("busy", 99)
	wantPG(t, err, "55006", `replication slot "busy" is active for PID 1234`)
	wantPG(t, s.Drop(ctx, "busy", 0, false), "55006", `replication slot "busy" is active for PID 1234`)

	// DROP_REPLICATION_SLOT ... WAIT gives up when its context ends.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Drop(cctx, "busy", 0, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drop(wait) with a cancelled context: %v", err)
	}
	// ... and otherwise waits for the release.
	dropped := make(chan error, 1)
	go func() { dropped <- s.Drop(ctx, "busy", 0, true) }()
	if _, ok := s.Read("busy"); !ok {
		t.Fatal("active slot dropped")
	}
	release()
	select {
	case err := <-dropped:
		if err != nil {
			t.Fatalf("Drop(wait) = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drop(wait) did not return after the slot was released")
	}
	if _, ok := s.Read("busy"); ok {
		t.Fatal("slot still there after Drop(wait)")
	}
	// A release after the drop does not resurrect anything.
	release()
	if len(s.List()) != 0 {
		t.Fatalf("slots after drop: %+v", s.List())
	}
}

func TestDropOwned(t *testing.T) {
	s, path := newSet(t, slots.Limits{}, newPositions(seg, 0))
	for _, c := range []struct {
		name  string
		temp  bool
		owner uint32
	}{{"mine_1", true, 1}, {"mine_2", true, 1}, {"other", true, 2}, {"permanent", false, 1}} {
		if err := s.Create(c.name, c.temp, true, c.owner); err != nil {
			t.Fatal(err)
		}
	}
	s.DropOwned(1)
	var names []string
	for _, st := range s.List() {
		names = append(names, st.Name)
	}
	if !reflect.DeepEqual(names, []string{"other", "permanent"}) {
		t.Fatalf("slots after DropOwned(1): %v", names)
	}
	// Temporary slots are never persisted.
	if got := open(t, path, slots.Limits{}, newPositions(seg, 0)).List(); len(got) != 1 || got[0].Name != "permanent" {
		t.Fatalf("reopened: %+v", got)
	}
}

// TestTemporarySlotOwnedByCreator: as in PostgreSQL, a temporary slot
// stays active for the connection that created it, which alone may stream
// with it or drop it; another one waiting to drop it learns, once the
// creator has gone, that it no longer exists.
func TestTemporarySlotOwnedByCreator(t *testing.T) {
	ctx := context.Background()
	s, _ := newSet(t, slots.Limits{}, newPositions(seg, 0))
	if err := s.Create("tmp", true, true, 7); err != nil {
		t.Fatal(err)
	}
	if st := s.List(); len(st) != 1 || !st[0].Active || st[0].ActivePID != 7 {
		t.Fatalf("after create: %+v", st)
	}
	_, err := s.Acquire("tmp", 8)
	wantPG(t, err, "55006", `replication slot "tmp" is active for PID 7`)
	wantPG(t, s.Drop(ctx, "tmp", 8, false), "55006", `replication slot "tmp" is active for PID 7`)
	release, err := s.Acquire("tmp", 7)
	if err != nil {
		t.Fatalf("creator's Acquire: %v", err)
	}
	release()
	if st := s.List(); len(st) != 1 || st[0].ActivePID != 7 {
		t.Fatalf("after the creator's stream: %+v", st)
	}
	dropped := make(chan error, 1)
	go func() { dropped <- s.Drop(ctx, "tmp", 8, true) }()
	s.DropOwned(7)
	wantPG(t, <-dropped, "42704", `replication slot "tmp" does not exist`)

	if err := s.Create("tmp2", true, false, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Drop(ctx, "tmp2", 7, false); err != nil {
		t.Fatalf("creator's Drop: %v", err)
	}
	if st := s.List(); len(st) != 0 {
		t.Fatalf("after the creator's drop: %+v", st)
	}
}
