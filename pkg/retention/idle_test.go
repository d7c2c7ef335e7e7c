package retention_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/retention"
	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// An idle timeline costs retention nothing: between changes it sleeps
// with no timer (a fake hour passes with no evaluation), and a change of
// each input (the timeline's positions, a slot, a pageserver) wakes it
// and removes what the change allows. Time is synctest's: sleeping
// advances the fake clock once every goroutine is blocked.
func TestIdleRetainerSleeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, slots.Limits{})
		e.slot(t, "s", 3*segSize+10)
		r := e.retainer(retention.Config{Archived: true}) // backup_lsn at the local start
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()

		// settle lets a woken retainer finish (its passes are 100ms apart).
		settle := func() {
			time.Sleep(time.Second)
			synctest.Wait()
		}
		idleHour := func(when string) {
			t.Helper()
			n := retention.Passes(r)
			time.Sleep(time.Hour)
			synctest.Wait()
			if extra := retention.Passes(r) - n; extra != 0 {
				t.Fatalf("%s: %d evaluations in an idle hour; want none", when, extra)
			}
		}
		removed := func(want uint64, heldBy string) {
			t.Helper()
			if st := r.Status(); st.RemovedSegments != want || st.HeldBy != heldBy || st.LastError != "" {
				t.Fatalf("status %+v; want %d segments removed, held by %s", st, want, heldBy)
			}
		}
		settle()
		removed(0, "archive")
		idleHour("at start")

		// The timeline's positions: backup_lsn advances.
		if err := e.tl.SetBackupLSN(4*segSize, tli); err != nil {
			t.Fatal(err)
		}
		settle()
		removed(2, "slot:s")
		idleHour("after backup_lsn advanced")

		// A slot's saved position.
		e.slots.Advance("s", 5*segSize)
		settle()
		removed(3, "archive")
		if err := e.tl.SetBackupLSN(7*segSize, tli); err != nil {
			t.Fatal(err)
		}
		settle()
		removed(4, "slot:s")

		// A pageserver connects (holding less than the slot), then the
		// slot is dropped: the pageserver holds.
		ps := e.pageserver("ps", segSize, 6*segSize)
		settle()
		removed(4, "slot:s")
		if err := e.slots.Drop(context.Background(), "s", 0, false); err != nil {
			t.Fatal(err)
		}
		settle()
		removed(5, "pageserver:ps")
		idleHour("held by a pageserver")

		// Its remote_consistent_lsn advances, then it leaves.
		ps.RecordPageserver(feedback.Pageserver{RemoteConsistentLSN: 6*segSize + 1})
		settle()
		removed(5, "pageserver:ps")
		e.cons.Remove(ps)
		settle()
		removed(6, "current segment")
		idleHour("with nothing left to remove")

		// WAL arrives in the current segment: the first flush after the
		// idle hour is counted at once, the next one's count is put off
		// (passes come at every flush), then made when due, and the
		// retainer sleeps again.
		pos := wal.LSN(flushLSN)
		flush := func() {
			t.Helper()
			if err := e.tl.Append(pos, make([]byte, 500)); err != nil {
				t.Fatal(err)
			}
			pos += 500
			if _, err := e.tl.Flush(); err != nil {
				t.Fatal(err)
			}
			settle()
		}
		local := func(want int64, when string) {
			t.Helper()
			if got := r.Status().LocalBytes; got != want {
				t.Fatalf("%s: local bytes %d; want %d", when, got, want)
			}
		}
		flush()
		local(partial+500, "a flush after an idle hour")
		flush()
		local(partial+500, "a second flush a second later (count put off)")
		time.Sleep(10 * time.Second)
		synctest.Wait()
		local(partial+1000, "once the put-off count is due")
		idleHour("after the recount")
		if got := e.tl.LocalStartLSN(); got != wal.LSN(7*segSize) {
			t.Fatalf("local start %s", got)
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
