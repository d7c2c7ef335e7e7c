package walsender

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
)

// discardConn is a net.Conn that accepts and drops every write.
type discardConn struct {
	net.Conn
	n int64
}

func (d *discardConn) Write(b []byte) (int, error)      { d.n += int64(len(b)); return len(b), nil }
func (d *discardConn) SetWriteDeadline(time.Time) error { return nil }
func (d *discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// newTestTimeline makes a timeline holding size bytes of (arbitrary) WAL.
func newTestTimeline(tb testing.TB, segSize uint64, size int) *timeline.Timeline {
	tb.Helper()
	id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tl, err := timeline.Open(filepath.Join(tb.TempDir(), "tl"), id, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tl.Close() })
	start := wal.LSN(segSize)
	if err := tl.Initialize(timeline.UpstreamInfo{SystemID: 1, WalSegSize: segSize, TLI: 1, ServerVersion: "15.0", ServerVersionNum: 150000}, start); err != nil {
		tb.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for pos := 0; pos < size; pos += len(chunk) {
		if err := tl.Append(start+wal.LSN(pos), chunk); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := tl.Flush(); err != nil {
		tb.Fatal(err)
	}
	return tl
}

// BenchmarkSendXLogData measures one XLogData message (128 KiB of WAL read
// from a local segment, framed and written): it must not allocate.
func BenchmarkSendXLogData(b *testing.B) {
	const segSize = 16 << 20
	tl := newTestTimeline(b, segSize, segSize)
	dc := &discardConn{}
	s := &Server{m: metrics.New(nil), log: zap.NewNop()}
	c := &conn{s: s, nc: dc, log: zap.NewNop(), tm: metrics.Unexported(), frame: make([]byte, frameHeader+MaxSendSize)}
	consumer := consumers.NewRegistry().Add(consumers.Info{})
	rd := walreader.New(segSize, walreader.NewLocalTier(tl.Dir(), segSize))
	defer rd.Close()
	st := &stream{c: c, consumer: consumer}
	start := wal.LSN(segSize)
	end := tl.FlushLSN()
	snd := &sender{c: c, st: st, rd: rd, tli: 1, segSize: segSize, sent: start, hist: tl.HistoryEntries()}
	now := time.Now()
	b.SetBytes(MaxSendSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if snd.sent >= end {
			snd.sent = start
		}
		if err := snd.send(context.Background(), now, end); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSendAllocatesNothing(t *testing.T) {
	const segSize = 1 << 20
	tl := newTestTimeline(t, segSize, segSize)
	dc := &discardConn{}
	s := &Server{m: metrics.New(nil), log: zap.NewNop()}
	c := &conn{s: s, nc: dc, log: zap.NewNop(), tm: metrics.Unexported(), frame: make([]byte, frameHeader+MaxSendSize)}
	rd := walreader.New(segSize, walreader.NewLocalTier(tl.Dir(), segSize))
	defer rd.Close()
	st := &stream{c: c, consumer: consumers.NewRegistry().Add(consumers.Info{})}
	start := wal.LSN(segSize) + 100 // mid-page start
	end := tl.FlushLSN()
	snd := &sender{c: c, st: st, rd: rd, tli: 1, segSize: segSize, sent: start, hist: tl.HistoryEntries()}
	now := time.Now()
	// Warm up (opens the segment file once).
	if err := snd.send(context.Background(), now, end); err != nil {
		t.Fatal(err)
	}
	if snd.sent%wal.BlockSize != 0 {
		t.Fatalf("first message from a mid-page start ended at %s, not a page boundary", snd.sent)
	}
	allocs := testing.AllocsPerRun(5, func() {
		if err := snd.send(context.Background(), now, end); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("send allocates %.1f times per message", allocs)
	}
	if snd.sent > end {
		t.Fatalf("sent past the end: %s > %s", snd.sent, end)
	}
}
