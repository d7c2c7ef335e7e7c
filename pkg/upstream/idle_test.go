package upstream

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// While connected, the flusher closes the current segment file once a
// whole status interval went by without WAL, and WAL arriving later
// reopens it. Time is synctest's: the intervals pass at once.
func TestFlusherClosesIdleSegment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const seg = 1 << 20
		tl := newTestTimeline(t, seg)
		defer tl.Close()
		dir := tl.Dir().Path()
		hs := consumers.NewRegistry()
		r := New(Config{StatusInterval: 10 * time.Second}, Sources{}, tl, hs, zap.NewNop(), metrics.New(prometheus.NewRegistry()).ForTimeline("t", "l"))

		ours, primary := net.Pipe()
		defer ours.Close()
		go io.Copy(io.Discard, primary) // the primary reads our status updates
		kick := make(chan struct{}, 1)
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan error, 1)
		st := &statusSender{conn: ours, tl: tl, hs: hs}
		inline := new(atomic.Bool)
		go func() { done <- r.flusher(ctx, st, hs, kick, inline) }()

		pos := wal.LSN(seg)
		receive := func() {
			t.Helper()
			if err := tl.Append(pos, make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			pos += 1000
			kick <- struct{}{}
			synctest.Wait()
			if tl.FlushLSN() != pos {
				t.Fatalf("flush %s after the kick; want %s", tl.FlushLSN(), pos)
			}
		}
		open := func(want int, when string) {
			t.Helper()
			if got := testenv.OpenFilesIn(t, dir); len(got) != want {
				t.Fatalf("%s: files open %v; want %d", when, got, want)
			}
		}

		receive()
		open(1, "WAL just received")
		time.Sleep(10 * time.Second) // a tick: WAL came during the interval
		synctest.Wait()
		open(1, "after an interval with WAL")
		time.Sleep(10 * time.Second) // a tick after an interval without WAL
		synctest.Wait()
		open(0, "after an interval without WAL")
		receive()
		open(1, "WAL after the idle period")
		if got := tl.FlushLSN(); got != seg+2000 {
			t.Fatalf("flush %s; want %s", got, wal.LSN(seg+2000))
		}
		// WAL the receive loop flushes itself (nothing more arriving)
		// counts as WAL for the interval as well.
		time.Sleep(10 * time.Second) // the interval of the WAL above ends
		synctest.Wait()
		if err := tl.Append(pos, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		pos += 1000
		if err := r.flushAck(st); err != nil {
			t.Fatal(err)
		}
		inline.Store(true)
		time.Sleep(10 * time.Second) // a tick: WAL came, flushed inline
		synctest.Wait()
		open(1, "after an interval with WAL flushed by the receive loop")
		time.Sleep(10 * time.Second)
		synctest.Wait()
		open(0, "after the next interval, without WAL")

		// WAL that neither a pause nor a kick synced (a stream that
		// never paused nor grew to flushGroupBytes) is synced at the
		// next tick, and the file stays open for that interval.
		if err := tl.Append(pos, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		pos += 1000
		synctest.Wait()
		if tl.FlushLSN() == pos {
			t.Fatal("synced with no kick and no tick")
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := tl.FlushLSN(); got != pos {
			t.Fatalf("flush %s after a tick; want %s", got, pos)
		}
		open(1, "after a tick that synced WAL")

		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		primary.Close()
	})
}

// A receiver waiting to reconnect holds no segment file: what was
// received is flushed and the file closed when the session ends.
func TestReceiverRestsBetweenSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const seg = 1 << 20
		tl := newTestTimeline(t, seg)
		defer tl.Close()
		// Received before the connection broke, not flushed yet.
		if err := tl.Append(seg, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the preallocation of the next segment is done
		if got := testenv.OpenFilesIn(t, tl.Dir().Path()); len(got) != 1 {
			t.Fatalf("files open while receiving: %v", got)
		}
		// An upstream that cannot be reached (no such socket directory).
		cfg := Config{ConnString: "host=" + filepath.Join(t.TempDir(), "none") + " user=x sslmode=disable", MinBackoff: time.Minute}
		r := New(cfg, Sources{}, tl, consumers.NewRegistry(), zap.NewNop(), metrics.New(prometheus.NewRegistry()).ForTimeline("t", "l"))
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		synctest.Wait() // Run waits out its backoff
		if st := r.Status().State; st != StateWaiting {
			t.Fatalf("state %q; want %q", st, StateWaiting)
		}
		if got := testenv.OpenFilesIn(t, tl.Dir().Path()); len(got) != 0 {
			t.Fatalf("files open while waiting to reconnect: %v", got)
		}
		if got := tl.FlushLSN(); got != seg+1000 {
			t.Fatalf("flush %s; want what was received, %s", got, wal.LSN(seg+1000))
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
