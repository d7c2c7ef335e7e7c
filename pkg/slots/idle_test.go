package slots_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A position reported within the persist interval of the last write
// reaches the disk, and wakes Changed, once the interval is over, with no
// one calling Checkpoint: retention does not poll for it.
func TestAdvanceIsPersistedWithoutPolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, path := newSet(t, slots.Limits{}, newPositions(10*seg, seg))
		create(t, s, "s", 2*seg) // written just now
		ch := s.Changed()
		s.Advance("s", 3*seg)
		if lsn, _, _ := s.Horizon(); lsn != 2*seg || isClosed(ch) {
			t.Fatalf("right after Advance: horizon %s, changed %v; want the saved 0/2000000, no wake-up", lsn, isClosed(ch))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if lsn, _, _ := s.Horizon(); lsn != 3*seg || !isClosed(ch) {
			t.Fatalf("a second later: horizon %s, changed %v; want 0/3000000 and a wake-up", lsn, isClosed(ch))
		}
		if got, ok := open(t, path, slots.Limits{}, newPositions(10*seg, seg)).Read("s"); !ok || got.RestartLSN != 3*seg {
			t.Fatalf("on disk: %+v", got)
		}
		// Nothing moves: nothing is pending, nothing wakes.
		ch = s.Changed()
		time.Sleep(time.Hour)
		synctest.Wait()
		if isClosed(ch) {
			t.Fatal("Changed fired with no change")
		}
		// A change that needs no write wakes at once.
		if err := s.Create("t", true, true, 1); err != nil {
			t.Fatal(err)
		}
		if !isClosed(ch) {
			t.Fatal("creating a slot did not wake Changed")
		}
		ch = s.Changed()
		s.Advance("t", 9*seg)
		if !isClosed(ch) {
			t.Fatal("a temporary slot's advance did not wake Changed")
		}
		ch = s.Changed()
		s.DropOwned(1)
		if !isClosed(ch) {
			t.Fatal("dropping a slot did not wake Changed")
		}
		// Close writes what is pending and leaves no timer behind.
		s.Advance("s", 4*seg) // due: written at once
		s.Advance("s", 5*seg) // pending for a second
		s.Close()
		if got, _ := open(t, path, slots.Limits{}, newPositions(10*seg, seg)).Read("s"); got.RestartLSN != wal.LSN(5*seg) {
			t.Fatalf("after Close on disk: %+v", got)
		}
	})
}
