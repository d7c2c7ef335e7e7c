package upstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// repeatReader returns the same message forever, with its XLogData start
// (bytes 6..14 of the CopyData) advanced by the payload size each time, so
// that a frontend reading it sees one contiguous stream of WAL.
type repeatReader struct {
	msg     []byte
	off     int
	payload int
	ahead   uint64 // how far the upstream's end of WAL is past each message's end
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := copy(p, r.msg[r.off:])
	r.off += n
	if r.off == len(r.msg) {
		r.off = 0
		start := binary.BigEndian.Uint64(r.msg[6:])
		binary.BigEndian.PutUint64(r.msg[6:], start+uint64(r.payload))
		binary.BigEndian.PutUint64(r.msg[14:], start+2*uint64(r.payload)+r.ahead)
	}
	return n, nil
}

// ingestRig is a receiver on a fresh timeline fed from a repeatReader.
type ingestRig struct {
	r    *Receiver
	rr   *repeatReader
	fe   *pgproto3.Frontend
	src  *source
	kick chan struct{}
	tl   *timeline.Timeline
}

func newIngestRig(tb testing.TB, dir string, segSize uint64, payload int) *ingestRig {
	tb.Helper()
	id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tl, err := timeline.Open(filepath.Join(dir, id.TenantID, id.TimelineID), id, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	tl.SetMemoryWindow(64 << 20)
	start := wal.LSN(segSize)
	if err := tl.Initialize(timeline.UpstreamInfo{SystemID: 7, WalSegSize: segSize, TLI: 1}, start); err != nil {
		tb.Fatal(err)
	}
	// CopyData('w' start end now payload), as a primary sends it.
	body := make([]byte, 25+payload)
	body[0] = 'w'
	binary.BigEndian.PutUint64(body[1:], uint64(start))
	binary.BigEndian.PutUint64(body[9:], uint64(start)+uint64(payload))
	for i := range body[25:] {
		body[25+i] = byte(i)
	}
	msg, err := (&pgproto3.CopyData{Data: body}).Encode(nil)
	if err != nil {
		tb.Fatal(err)
	}
	rr := &repeatReader{msg: msg, payload: payload}
	r := New(Config{}, Sources{}, tl, consumers.NewRegistry(), zap.NewNop(), metrics.New(prometheus.NewRegistry()).ForTimeline("t", "l"))
	src := r.primary()
	src.segSize = segSize
	return &ingestRig{r: r, rr: rr, fe: pgproto3.NewFrontend(rr, &bytes.Buffer{}), src: src, kick: make(chan struct{}, 1), tl: tl}
}

// one receives and ingests one message.
func (g *ingestRig) one(tb testing.TB) {
	msg, err := g.fe.Receive()
	if err != nil {
		tb.Fatal(err)
	}
	cd, ok := msg.(*pgproto3.CopyData)
	if !ok {
		tb.Fatalf("got %T", msg)
	}
	if _, err := g.r.xlogData(cd.Data, g.src, g.kick); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-g.kick:
	default:
	}
}

// BenchmarkIngestXLogData is the receive path of one XLogData message of 8
// KiB as Receiver.stream runs it: the CopyData decoded by the connection's
// pgproto3 frontend (Receive, as the stream loop reads), the WAL appended
// to the memory window and to the segment file, the flusher kicked. The
// fdatasync that makes it durable is the flusher's, once per group, and
// is not in this loop. It must not allocate. Every 16 MiB the timeline is
// flushed and its complete segments removed, off the clock, to bound the
// space used.
func BenchmarkIngestXLogData(b *testing.B) {
	const segSize, payload = 16 << 20, 8 << 10
	dir := b.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		// The page cache of a real disk would make this a disk benchmark.
		if d, err := os.MkdirTemp("/dev/shm", "ingest-"); err == nil {
			dir = d
			b.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	g := newIngestRig(b, dir, segSize, payload)
	b.SetBytes(payload)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i > 0 && i%(segSize/payload) == 0 {
			b.StopTimer()
			if _, err := g.tl.Flush(); err != nil {
				b.Fatal(err)
			}
			files, err := g.tl.Dir().SealedSegments(segSize)
			if err != nil {
				b.Fatal(err)
			}
			for _, f := range files {
				os.Remove(filepath.Join(g.tl.Dir().Path(), f.Name))
			}
			b.StartTimer()
		}
		g.one(b)
	}
	b.StopTimer()
	g.tl.Close()
}

func TestIngestAllocatesNothing(t *testing.T) {
	g := newIngestRig(t, t.TempDir(), 1<<20, 8<<10)
	defer g.tl.Close()
	g.one(t) // warm up: opens the segment file, starts the preallocation
	// The segment file is zero-filled to its full size in the background
	// (walstore's tail fill), once: measure again, boundedly, while that
	// one-time work (which allocates on its own goroutine) finishes.
	var allocs float64
	runs := 0
	for deadline := time.Now().Add(10 * time.Second); ; {
		allocs = testing.AllocsPerRun(20, func() { g.one(t) })
		runs += 21
		if allocs == 0 || time.Now().After(deadline) {
			break
		}
	}
	if allocs != 0 {
		t.Fatalf("ingesting one XLogData message allocates %.1f times", allocs)
	}
	if got, want := g.tl.WrittenLSN(), wal.LSN(1<<20+(1+runs)*(8<<10)); got != want {
		t.Fatalf("written %s, want %s", got, want)
	}
}

// The writer is told it is catching up once the upstream's end of WAL (in
// each XLogData) is more than two segments past what was received, and
// that it caught up once within one segment; in between it stays as it
// was. Ingesting stays allocation-free either way.
func TestCatchUpFollowsTheUpstreamEnd(t *testing.T) {
	const segSize, payload = 1 << 20, 8 << 10
	g := newIngestRig(t, t.TempDir(), segSize, payload)
	defer g.tl.Close()
	g.r.setState(StateStreaming, nil)
	for _, step := range []struct {
		ahead uint64
		want  bool
	}{
		{0, false},
		{2 * segSize, false}, // not more than two segments
		{2*segSize + 1, true},
		{segSize + 1, true}, // between the thresholds: unchanged
		{segSize, false},
		{2 * segSize, false},
		{3 * segSize, true},
	} {
		g.rr.ahead = step.ahead
		// The frontend may hold the next message already: the new end
		// shows in the message after it.
		for range 3 {
			g.one(t)
		}
		if got := g.tl.CatchingUp(); got != step.want || g.src.catchingUp != step.want || g.r.Status().CatchingUp != step.want {
			t.Fatalf("upstream %d bytes ahead: writer catching up %v (session %v, status %v), want %v",
				step.ahead, got, g.src.catchingUp, g.r.Status().CatchingUp, step.want)
		}
	}
	// A tail fill started when the writer caught up may still be zeroing
	// its segment on its own goroutine, allocating there: measure again,
	// boundedly, until it is done (as TestIngestAllocatesNothing does).
	var allocs float64
	for deadline := time.Now().Add(10 * time.Second); ; {
		allocs = testing.AllocsPerRun(20, func() { g.one(t) })
		if allocs == 0 || time.Now().After(deadline) {
			break
		}
	}
	if allocs != 0 {
		t.Fatalf("ingesting while catching up allocates %.1f times per message", allocs)
	}
	if !g.tl.CatchingUp() {
		t.Fatal("no longer catching up")
	}
	// Not streaming (the session ended): the status does not say so.
	g.r.setState(StateWaiting, errors.New("gone"))
	if g.r.Status().CatchingUp {
		t.Fatal("status says catching up while not streaming")
	}
}
