package walreader_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
)

// tierLog records which tier served each read (a walreader.Observer).
type tierLog struct {
	bytes map[string]int
	last  string
}

func (l *tierLog) WALRead(tier string, n int) { l.bytes[tier] += n; l.last = tier }

// memTimeline is a timeline with a memory window of size bytes, with WAL
// appended and flushed from 1 MiB up to to.
func memTimeline(t *testing.T, size uint64) *timeline.Timeline {
	t.Helper()
	id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tl, err := timeline.Open(filepath.Join(t.TempDir(), id.TenantID, id.TimelineID), id, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	tl.SetMemoryWindow(size)
	if err := tl.Initialize(timeline.UpstreamInfo{SystemID: systemID, WalSegSize: segSize, TLI: tli}, segSize); err != nil {
		t.Fatal(err)
	}
	return tl
}

func appendFlush(t *testing.T, tl *timeline.Timeline, to wal.LSN) {
	t.Helper()
	for pos := tl.FlushLSN(); pos < to; {
		n := min(40_000, int(to-pos))
		if err := tl.Append(pos, walBytes(pos, n)); err != nil {
			t.Fatal(err)
		}
		pos += wal.LSN(n)
	}
	if d, err := tl.Flush(); err != nil || d != to {
		t.Fatalf("Flush = %s, %v; want %s", d, err, to)
	}
}

// A consumer inside the window reads from memory; one the window moved
// past reads the local files without a gap and returns to memory once it
// has caught up.
func TestMemoryTierFallOutAndReturn(t *testing.T) {
	tl := memTimeline(t, 1<<20) // 16 chunks of 64 KiB; about 900 KiB readable
	log := &tierLog{bytes: map[string]int{}}
	rd := walreader.New(segSize, walreader.NewMemoryTier(tl.Memory()), walreader.NewLocalTier(tl.Dir(), segSize))
	defer rd.Close()
	rd.Observe(log)
	ctx := context.Background()
	buf := make([]byte, 128<<10)
	pos := wal.LSN(segSize)
	read := func(to wal.LSN) {
		t.Helper()
		for pos < to {
			n, err := rd.ReadAt(ctx, buf[:min(len(buf), int(to-pos))], tli, pos)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], walBytes(pos, n)) {
				t.Fatalf("wrong bytes at %s from %s", pos, log.last)
			}
			pos += wal.LSN(n)
		}
	}
	if rd.LastTier() != "" {
		t.Fatalf("tier %q before the first read", rd.LastTier())
	}
	appendFlush(t, tl, segSize+300_000)
	read(segSize + 300_000)
	if log.bytes["local"] != 0 || rd.LastTier() != "memory" {
		t.Fatalf("a consumer inside the window read %v, last from %q", log.bytes, rd.LastTier())
	}
	// The writer moves 3 MiB on (across segment boundaries): the consumer
	// is out of the window and continues from the files...
	appendFlush(t, tl, 4*segSize+500_000)
	read(2 * segSize)
	if rd.LastTier() != "local" || log.bytes["local"] == 0 {
		t.Fatalf("a consumer out of the window read %v, last from %q", log.bytes, rd.LastTier())
	}
	// ...and is back in memory once it has caught up.
	read(4*segSize + 500_000)
	if rd.LastTier() != "memory" {
		t.Fatalf("a caught-up consumer reads from %q", rd.LastTier())
	}
	fromMem := log.bytes["memory"]
	appendFlush(t, tl, 4*segSize+700_000)
	read(4*segSize + 700_000)
	if log.bytes["memory"] != fromMem+200_000 {
		t.Fatalf("the live tail came from %v", log.bytes)
	}
}

// Only durable WAL is read from memory; what is appended and not yet
// flushed is not readable at all (the caller never asks, and the window
// must not serve it if it did).
func TestMemoryTierOnlyDurable(t *testing.T) {
	tl := memTimeline(t, 1<<20)
	appendFlush(t, tl, segSize+10_000)
	if err := tl.Append(segSize+10_000, walBytes(segSize+10_000, 5000)); err != nil {
		t.Fatal(err)
	}
	m := walreader.NewMemoryTier(tl.Memory())
	p := make([]byte, 5000)
	if _, err := m.ReadAt(context.Background(), p, tli, segSize+10_000); err != walreader.ErrNotInTier {
		t.Fatalf("read of appended, not durable WAL: %v", err)
	}
	if n, err := m.ReadAt(context.Background(), p, tli, segSize+5000); err != nil || n != 5000 || !bytes.Equal(p, walBytes(segSize+5000, 5000)) {
		t.Fatalf("read of durable WAL: %d, %v", n, err)
	}
}

// Reading a message from memory allocates nothing, the reader and its
// observers included.
func TestMemoryTierReadAllocs(t *testing.T) {
	tl := memTimeline(t, 1<<20)
	appendFlush(t, tl, segSize+500_000)
	rd := walreader.New(segSize, walreader.NewMemoryTier(tl.Memory()), walreader.NewLocalTier(tl.Dir(), segSize))
	defer rd.Close()
	log := &tierLog{bytes: map[string]int{"memory": 0}}
	rd.Observe(log)
	buf := make([]byte, 128<<10)
	ctx := context.Background()
	if a := testing.AllocsPerRun(200, func() {
		if _, err := rd.ReadAt(ctx, buf, tli, segSize+100_000); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("%v allocations per read from memory", a)
	}
	if rd.LastTier() != "memory" {
		t.Fatalf("served by %q", rd.LastTier())
	}
}

// BenchmarkRead compares one 128 KiB walsender read from the memory tier
// with the same read from the local segment file (page cache).
func BenchmarkRead(b *testing.B) {
	for _, tier := range []string{"memory", "local"} {
		b.Run(tier, func(b *testing.B) {
			id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
			tl, err := timeline.Open(filepath.Join(b.TempDir(), id.TenantID, id.TimelineID), id, zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			defer tl.Close()
			tl.SetMemoryWindow(64 << 20)
			if err := tl.Initialize(timeline.UpstreamInfo{SystemID: systemID, WalSegSize: segSize, TLI: tli}, segSize); err != nil {
				b.Fatal(err)
			}
			const end = 9 * segSize
			data := walBytes(segSize, end-segSize)
			if err := tl.Append(segSize, data); err != nil {
				b.Fatal(err)
			}
			if _, err := tl.Flush(); err != nil {
				b.Fatal(err)
			}
			tiers := []walreader.Tier{walreader.NewLocalTier(tl.Dir(), segSize)}
			if tier == "memory" {
				tiers = append([]walreader.Tier{walreader.NewMemoryTier(tl.Memory())}, tiers...)
			}
			rd := walreader.New(segSize, tiers...)
			defer rd.Close()
			buf := make([]byte, 128<<10)
			ctx := context.Background()
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			pos := wal.LSN(segSize)
			for b.Loop() {
				n, err := rd.ReadAt(ctx, buf, tli, pos)
				if err != nil {
					b.Fatal(err)
				}
				if pos += wal.LSN(n); pos >= end {
					pos = segSize
				}
			}
			if rd.LastTier() != tier {
				b.Fatalf("served by %q", rd.LastTier())
			}
		})
	}
}

// ReadOrLocate answers with the memory window for WAL it holds, with the
// segment file for WAL it moved past, and copies into the buffer for a
// memory tier that lends nothing.
func TestReadOrLocateMemory(t *testing.T) {
	tl := memTimeline(t, 1<<20)
	ctx := context.Background()
	appendFlush(t, tl, segSize+4<<20)
	rd := walreader.New(segSize, walreader.NewMemoryTier(tl.Memory()), walreader.NewLocalTier(tl.Dir(), segSize))
	defer rd.Close()
	log := &tierLog{bytes: map[string]int{}}
	rd.Observe(log)
	buf := make([]byte, 128<<10)

	rd.Lent(100) // before any lend: nothing to count
	recent := wal.LSN(segSize + 4<<20 - 200<<10)
	ext, err := rd.ReadOrLocate(ctx, buf, tli, recent)
	if err != nil || ext.Mem == nil || ext.File != nil || ext.N != len(buf) {
		t.Fatalf("recent WAL: %+v, %v; want the window lending %d bytes", ext, err, len(buf))
	}
	// A lend is counted as it is sent, not when it is made.
	if len(log.bytes) != 0 {
		t.Fatalf("counted %v before anything was sent, want nothing", log.bytes)
	}
	rd.Lent(0)
	rd.Lent(1000)
	rd.Lent(500)
	if len(log.bytes) != 1 || log.bytes["memory"] != 1500 {
		t.Fatalf("counted %v after 1500 bytes sent from the window, want memory: 1500", log.bytes)
	}
	got := make([]byte, 0, len(buf))
	for pos := recent; len(got) < ext.N; {
		b, p, ok := ext.Mem.Borrow(tli, pos, ext.N-len(got))
		if !ok {
			t.Fatalf("borrow at %s missed", pos)
		}
		got = append(got, b...)
		p.Release()
		pos += wal.LSN(len(b))
	}
	if !bytes.Equal(got, walBytes(recent, len(buf))) {
		t.Fatal("the window lent other bytes than the WAL")
	}
	if rd.LastTier() != "memory" {
		t.Fatalf("served by %q, want memory", rd.LastTier())
	}

	old := wal.LSN(segSize + 1<<20)
	ext, err = rd.ReadOrLocate(ctx, buf, tli, old)
	if err != nil || ext.Mem != nil || ext.File == nil || ext.N != len(buf) {
		t.Fatalf("WAL the window moved past: %+v, %v; want the segment file", ext, err)
	}
	// The file is counted when located; a Lent after a call that lent
	// nothing counts nothing for the window.
	rd.Lent(700)
	if log.bytes["memory"] != 1500 || log.bytes["local"] != len(buf) {
		t.Fatalf("counted %v, want memory: 1500, local: %d", log.bytes, len(buf))
	}

	// A memory tier over something that only copies fills the buffer.
	rd2 := walreader.New(segSize, walreader.NewMemoryTier(copyOnly{tl.Memory()}), walreader.NewLocalTier(tl.Dir(), segSize))
	defer rd2.Close()
	ext, err = rd2.ReadOrLocate(ctx, buf, tli, recent)
	if err != nil || ext.Mem != nil || ext.File != nil || ext.N != len(buf) || !bytes.Equal(buf, walBytes(recent, len(buf))) {
		t.Fatalf("copy-only memory: %+v, %v", ext, err)
	}
}

// copyOnly hides a window's Borrow.
type copyOnly struct{ m walreader.Memory }

func (c copyOnly) ReadAt(p []byte, tli uint32, lsn wal.LSN) bool { return c.m.ReadAt(p, tli, lsn) }
