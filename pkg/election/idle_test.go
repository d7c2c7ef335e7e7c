package election

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// idleMember is a Member with only what its local loops use (no etcd).
func idleMember(local *fakeLocal) *Member {
	cfg := Config{Name: "a", MaxLag: 64 << 20, StallTimeout: 30 * time.Second}.withDefaults()
	return &Member{cfg: cfg, local: local, log: zap.NewNop(), nodes: map[string]NodeInfo{}}
}

// quietHour checks that nothing reads Info during an hour in which
// nothing changes.
func quietHour(t *testing.T, l *fakeLocal, when string) {
	t.Helper()
	synctest.Wait()
	n := l.infoReads()
	time.Sleep(time.Hour)
	synctest.Wait()
	if extra := l.infoReads() - n; extra != 0 {
		t.Fatalf("%s: Info read %d times in an idle hour; want 0", when, extra)
	}
}

// A node waiting to become eligible does not poll: it wakes when Local
// signals a change, or when the shared position it reads changes, and
// waits out a hand-over cooldown with a timer.
func TestAwaitEligibleSleeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newFakeLocal(false)
		m := idleMember(l)
		ready := make(chan bool, 1)
		go func() { ready <- m.awaitEligible(t.Context()) }()
		quietHour(t, l, "not eligible")

		// The member's own view changes (a new shared backup position,
		// which eligibility reads): Info is read again.
		n := l.infoReads()
		m.show(&view{backup: BackupPos{TLI: 1, LSN: 0x4000000}, haveBackup: true}, false)
		synctest.Wait()
		if l.infoReads() == n {
			t.Fatal("a new shared position did not make the node look at Info again")
		}
		quietHour(t, l, "after the shared position changed")

		m.cooldownUntil = time.Now().Add(10 * time.Minute)
		l.setEligible(true)
		synctest.Wait()
		select {
		case <-ready:
			t.Fatal("campaigning during the cooldown")
		default:
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		select {
		case ok := <-ready:
			if !ok {
				t.Fatal("awaitEligible gave up")
			}
		default:
			t.Fatal("still waiting after the cooldown")
		}
	})
}

// A leader whose archive keeps up does not poll its lag; once the lag
// exceeds MaxLag and stops moving, it hands over after StallTimeout to an
// eligible peer.
func TestWatchStallSleepsWithinMaxLag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newFakeLocal(true) // lag: less than a segment
		m := idleMember(l)
		m.nodes["b"] = NodeInfo{Name: "b", Eligible: true}
		ctx, stop := context.WithCancelCause(t.Context())
		done := make(chan struct{})
		go func() { m.watchStall(ctx, stop); close(done) }()
		quietHour(t, l, "archive keeping up")

		// WAL arrives and the archive does not follow.
		l.update(func(i *NodeInfo) { i.FlushLSN = i.BackupLSN + wal.LSN(m.cfg.MaxLag) + segSize })
		time.Sleep(m.cfg.StallTimeout - 2*stallCheckInterval)
		synctest.Wait()
		if ctx.Err() != nil {
			t.Fatalf("handed over before the stall timeout: %v", context.Cause(ctx))
		}
		time.Sleep(3 * stallCheckInterval)
		synctest.Wait()
		if cause := context.Cause(ctx); !errors.Is(cause, errHandOver) {
			t.Fatalf("after the stall timeout: %v; want a hand-over", cause)
		}
		<-done
	})
}
