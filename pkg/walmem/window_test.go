package walmem

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// pattern returns the bytes the tests write at from on timeline tli: every
// position and timeline has its own byte, so a byte served from the wrong
// place or timeline shows.
func pattern(tli uint32, from uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		p := from + uint64(i)
		b[i] = byte(p*2654435761>>13) ^ byte(p>>8) ^ byte(tli*97)
	}
	return b
}

// fill writes [from, to) of tli in pieces of step bytes and publishes it.
func fill(w *Window, tli uint32, from, to uint64, step int) {
	for pos := from; pos < to; {
		n := min(uint64(step), to-pos)
		w.Write(tli, wal.LSN(pos), pattern(tli, pos, int(n)))
		pos += n
	}
	w.Publish(wal.LSN(to))
}

func mustRead(t *testing.T, w *Window, tli uint32, lsn uint64, n int) {
	t.Helper()
	p := make([]byte, n)
	if !w.ReadAt(p, tli, wal.LSN(lsn)) {
		t.Fatalf("read of %d bytes at %d on timeline %d missed; window %+v", n, lsn, tli, w.Stats())
	}
	if want := pattern(tli, lsn, n); !bytes.Equal(p, want) {
		t.Fatalf("read of %d bytes at %d on timeline %d returned wrong bytes", n, lsn, tli)
	}
}

func mustMiss(t *testing.T, w *Window, tli uint32, lsn uint64, n int) {
	t.Helper()
	if w.ReadAt(make([]byte, n), tli, wal.LSN(lsn)) {
		t.Fatalf("read of %d bytes at %d on timeline %d hit; window %+v", n, lsn, tli, w.Stats())
	}
}

func TestSizing(t *testing.T) {
	for _, c := range []struct{ size, chunk, capacity uint64 }{
		{0, 0, 0},
		{24576, 0, 0}, // not four pages
		{32768, 8192, 32768},
		{2 << 20, 128 << 10, 2 << 20},
		{2_000_000, 64 << 10, 30 * 64 << 10},
		{64 << 20, 4 << 20, 64 << 20},
	} {
		w := New(c.size)
		if w.ChunkSize() != c.chunk || w.Capacity() != c.capacity {
			t.Errorf("New(%d): chunk %d capacity %d, want %d %d", c.size, w.ChunkSize(), w.Capacity(), c.chunk, c.capacity)
		}
	}
	var w *Window // disabled: everything is a no-op, every read misses
	w.Write(1, 0, []byte{1})
	w.Publish(1)
	w.Switch(2, 0)
	w.Release()
	if w.ReadAt(make([]byte, 1), 1, 0) {
		t.Fatal("a disabled window served a read")
	}
}

func TestLazyAllocationAndRelease(t *testing.T) {
	w := New(1 << 20) // 16 chunks of 64 KiB
	if s := w.Stats(); s.Allocated != 0 {
		t.Fatalf("allocated %d bytes before any WAL", s.Allocated)
	}
	fill(w, 1, 0x1000000, 0x1000000+1000, 1000)
	if s := w.Stats(); s.Allocated != w.ChunkSize() {
		t.Fatalf("allocated %d bytes for 1000 bytes of WAL, want one chunk", s.Allocated)
	}
	fill(w, 1, 0x1000000+1000, 0x1000000+5<<20, 100_000)
	if s := w.Stats(); s.Allocated != w.Capacity() {
		t.Fatalf("allocated %d bytes after 5 MiB of WAL, want the capacity %d", s.Allocated, w.Capacity())
	}
	w.Release()
	if s := w.Stats(); s.Allocated != 0 {
		t.Fatalf("allocated %d bytes after Release", s.Allocated)
	}
	mustMiss(t, w, 1, 0x1000000+5<<20-100, 100)
	// The next WAL starts a new window.
	fill(w, 1, 0x1000000+5<<20, 0x1000000+5<<20+100, 100)
	mustRead(t, w, 1, 0x1000000+5<<20, 100)
	mustMiss(t, w, 1, 0x1000000+5<<20-100, 100)
}

func TestOnlyDurable(t *testing.T) {
	w := New(1 << 20)
	const start = 0x2000000
	w.Write(1, start, pattern(1, start, 10000))
	mustMiss(t, w, 1, start, 1) // written, not durable
	w.Publish(start + 6000)
	mustRead(t, w, 1, start, 6000)
	mustRead(t, w, 1, start+5999, 1)
	mustMiss(t, w, 1, start+5999, 2) // one byte past the durable end
	mustMiss(t, w, 1, start+6000, 1)
	// A durable end past what the window holds publishes what it holds.
	w.Publish(start + 20000)
	mustRead(t, w, 1, start, 10000)
	mustMiss(t, w, 1, start+9999, 2)
	// The durable end never moves back.
	w.Publish(start + 100)
	mustRead(t, w, 1, start, 10000)
}

func TestWraparoundAndBoundaries(t *testing.T) {
	w := New(1 << 20) // 16 chunks of 64 KiB
	cs := w.ChunkSize()
	const start = 0x3000000 + 12345 // not chunk aligned
	end := uint64(start + 5<<20 + 777)
	fill(w, 1, start, end, 8191) // odd pieces cross chunk boundaries
	s := w.Stats()
	if uint64(s.End) != end {
		t.Fatalf("window end %s, want %s", s.End, wal.LSN(end))
	}
	held := uint64(s.End - s.Start)
	if held < w.Capacity()-2*cs || held > w.Capacity()-cs {
		t.Fatalf("window holds %d bytes, want between %d and %d", held, w.Capacity()-2*cs, w.Capacity()-cs)
	}
	lo := uint64(s.Start)
	mustRead(t, w, 1, lo, 1)                // first byte held
	mustMiss(t, w, 1, lo-1, 1)              // last byte evicted
	mustMiss(t, w, 1, lo-1, 2)              // straddling the start
	mustRead(t, w, 1, end-1, 1)             // last byte
	mustRead(t, w, 1, lo, int(end-lo))      // the whole window, across every chunk
	b := (end - 3*cs) &^ (cs - 1)           // a chunk boundary inside the window
	mustRead(t, w, 1, b-1, 2)               // across it
	mustRead(t, w, 1, b-MaxSend/2, MaxSend) // a full message across it
	mustRead(t, w, 1, b, int(cs))           // exactly one chunk
	mustMiss(t, w, 1, start, 100)           // long gone
	mustMiss(t, w, 2, end-100, 100)         // another timeline
	mustMiss(t, w, 1, ^uint64(0)-10, 100)   // overflowing range
}

// MaxSend is the walsender's largest read (16 pages).
const MaxSend = 16 * wal.BlockSize

func TestOverlapGapAndTruncate(t *testing.T) {
	w := New(1 << 20)
	const start = 0x4000000
	fill(w, 1, start, start+10000, 10000)
	// A re-sent range (upstream reconnect) is skipped, what follows kept.
	w.Write(1, start+5000, pattern(1, start+5000, 8000))
	w.Publish(start + 13000)
	mustRead(t, w, 1, start, 13000)
	// A gap starts the window over.
	w.Write(1, start+20000, pattern(1, start+20000, 1000))
	w.Publish(start + 21000)
	mustMiss(t, w, 1, start, 100)
	mustMiss(t, w, 1, start+19000, 2000)
	mustRead(t, w, 1, start+20000, 1000)
	// A failed file write forgets the unpublished bytes: the retry (here
	// with different bytes, to show which ones are kept) rewrites them.
	junk := bytes.Repeat([]byte{0xAA}, 500)
	w.Write(1, start+21000, junk)
	w.Truncate(start + 21000)
	w.Write(1, start+21000, pattern(1, start+21000, 500))
	w.Publish(start + 21500)
	mustRead(t, w, 1, start+20000, 1500)
	// Truncating below the durable end changes nothing published.
	w.Truncate(start)
	mustRead(t, w, 1, start+20000, 1500)
}

func TestSwitch(t *testing.T) {
	w := New(1 << 20)
	cs := w.ChunkSize()
	const start = 0x5000000
	end := uint64(start + 800_000)
	fill(w, 1, start, end, 30000)
	sp := uint64(start + 500_000 + 1234)
	base := sp &^ (cs - 1)
	w.Switch(2, wal.LSN(sp))
	// Old-timeline bytes past the switch point are never served, as either
	// timeline; old-timeline reads miss from now on.
	mustMiss(t, w, 1, sp, 100)
	mustMiss(t, w, 2, sp, 100)
	mustMiss(t, w, 1, sp-100, 100)
	// The chunk holding the switch point keeps the shared history before it.
	p := make([]byte, sp-base)
	if !w.ReadAt(p, 2, wal.LSN(base)) || !bytes.Equal(p, pattern(1, base, len(p))) {
		t.Fatal("the shared history before the switch point is not served on the new timeline")
	}
	mustMiss(t, w, 2, base-1, 2) // older chunks are of the old epoch
	// The new timeline's WAL overwrites the old one's from the switch point.
	fill(w, 2, sp, sp+300_000, 4096)
	mustRead(t, w, 2, sp, 300_000)
	mustMiss(t, w, 1, sp, 100)
	if !w.ReadAt(p, 2, wal.LSN(base)) || !bytes.Equal(p, pattern(1, base, len(p))) {
		t.Fatal("the shared history changed")
	}

	// A switch point the window does not hold (behind it) starts it over.
	w2 := New(1 << 20)
	fill(w2, 1, start, start+3<<20, 65536)
	w2.Switch(2, start+1000)
	mustMiss(t, w2, 2, start+3<<20-100, 100)
	fill(w2, 2, start+1000, start+2000, 1000)
	mustRead(t, w2, 2, start+1000, 1000)
	mustMiss(t, w2, 2, start+999, 2)
}

// TestOverwriteDetection: a reader copying from a chunk when the writer
// wants it back makes the writer skip that chunk (it never waits), and a
// reader whose snapshot predates the writer taking a chunk over misses
// instead of returning overwritten bytes.
func TestOverwriteDetection(t *testing.T) {
	w := New(1 << 20)
	cs := w.ChunkSize()
	const start = 0x6000000
	fill(w, 1, start, start+w.Capacity(), 65536)
	r := w.r.Load()
	// A reader is copying from the oldest chunk (the next to be reused).
	oldest := w.chunkOf(r, start)
	oldest.refs.Add(1)
	fill(w, 1, start+w.Capacity(), start+w.Capacity()+cs/2, 4096)
	if w.conflicts.Load() != 1 {
		t.Fatalf("conflicts %d, want 1", w.conflicts.Load())
	}
	// The writer left the chunk alone: the reader's bytes are intact...
	if !bytes.Equal(oldest.buf, pattern(1, start, int(cs))) {
		t.Fatal("the writer overwrote a chunk a reader was copying from")
	}
	oldest.refs.Add(-1)
	// ...the skipped range is not served (files serve it)...
	mustMiss(t, w, 1, start+w.Capacity(), 100)
	mustMiss(t, w, 1, start, 100)
	// ...and the window starts over at the next chunk.
	fill(w, 1, start+w.Capacity()+cs/2, start+w.Capacity()+3*cs, 4096)
	mustRead(t, w, 1, start+w.Capacity()+cs, int(2*cs))
	mustMiss(t, w, 1, start+w.Capacity()+cs-1, 2)
	// The skipped chunk is taken back at the next turn.
	fill(w, 1, start+w.Capacity()+3*cs, start+3*w.Capacity(), 65536)
	mustRead(t, w, 1, start+3*w.Capacity()-(w.Capacity()-cs), int(w.Capacity()-cs))

	// A snapshot taken before the writer took a chunk over: the copy
	// misses although the snapshot's range covers the position.
	w2 := New(1 << 20)
	fill(w2, 1, start, start+w2.Capacity(), 65536)
	r2 := w2.r.Load()
	sn := snapshot{te: r2.tliEpoch.Load(), start: r2.start.Load(), end: r2.end.Load()}
	fill(w2, 1, start+w2.Capacity(), start+w2.Capacity()+cs, 65536)
	p := make([]byte, 100)
	if w2.copyOut(r2, sn, p, 1, start+10) {
		t.Fatal("a read of a chunk taken over after its snapshot hit")
	}
	if !w2.copyOut(r2, sn, p, 1, start+cs+10) || !bytes.Equal(p, pattern(1, start+cs+10, 100)) {
		t.Fatal("a read of a chunk still held missed")
	}
	// Likewise across a switch: a snapshot of the old timeline misses the
	// chunk the switch took over.
	sn = snapshot{te: r2.tliEpoch.Load(), start: r2.start.Load(), end: r2.end.Load()}
	sp := uint64(start + w2.Capacity() + cs/2)
	w2.Switch(2, wal.LSN(sp))
	fill(w2, 2, sp, sp+100, 100)
	if w2.copyOut(r2, sn, p, 1, sp-50) {
		t.Fatal("an old-timeline snapshot read the chunk taken over by the switch")
	}
}

// TestConcurrentWriterReaders runs one writer and readers at the end of
// WAL, in the middle and at the edge of the window (where the writer takes
// chunks from under them); under -race this also checks that the window's
// synchronization is visible to the race detector. Every read that hits
// must return the right bytes.
func TestConcurrentWriterReaders(t *testing.T) {
	w := New(512 << 10) // 16 chunks of 32 KiB: the writer wraps often
	const start = 0x7000000
	total := uint64(8 << 20)
	if testing.Short() {
		total = 2 << 20
	}
	src := pattern(1, start, int(total)+3*MaxSend) // precomputed: checks cost a compare
	at := func(pos uint64, n int) []byte { return src[pos-start : pos-start+uint64(n)] }
	var durable atomic.Uint64
	durable.Store(start)
	var attempts atomic.Int64 // reads tried; the writer paces itself on it
	done := make(chan struct{})
	var hits, misses [3]atomic.Int64
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			p := make([]byte, MaxSend)
			for {
				select {
				case <-done:
					return
				default:
				}
				d := durable.Load()
				n := 1 + rng.IntN(MaxSend)
				var back uint64
				switch i % 3 {
				case 0: // tailing
					back = uint64(n)
				case 1: // inside the window
					back = uint64(n) + rng.Uint64N(w.Capacity()/2)
				case 2: // at its edge
					back = w.Capacity() - 2*w.ChunkSize() + rng.Uint64N(2*w.ChunkSize())
				}
				if d < start+back {
					continue
				}
				pos := d - back
				attempts.Add(1)
				if !w.ReadAt(p[:n], 1, wal.LSN(pos)) {
					misses[i%3].Add(1)
					continue
				}
				hits[i%3].Add(1)
				if !bytes.Equal(p[:n], at(pos, n)) {
					t.Errorf("wrong bytes at %d (+%d)", pos, n)
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for pos := uint64(start); pos < start+total; {
		n := uint64(1 + rng.IntN(MaxSend/2))
		w.Write(1, wal.LSN(pos), at(pos, int(n)))
		pos += n
		if rng.IntN(3) == 0 {
			w.Publish(wal.LSN(pos))
			durable.Store(pos)
			// Let the readers read (the writer never waits for them in
			// the window; this is the test keeping both sides busy).
			for a := attempts.Load(); attempts.Load() < a+3; {
				runtime.Gosched()
			}
		}
	}
	close(done)
	wg.Wait()
	for i, k := range []string{"tailing", "inside", "edge"} {
		t.Logf("%s readers: %d hits, %d misses", k, hits[i].Load(), misses[i].Load())
		if hits[i].Load() == 0 {
			t.Errorf("no %s read hit the window", k)
		}
	}
	t.Logf("chunks skipped for a reader: %d", w.conflicts.Load())
}

func TestReadAllocs(t *testing.T) {
	w := New(1 << 20)
	fill(w, 1, 0x8000000, 0x8000000+1<<20, 65536)
	p := make([]byte, MaxSend)
	if a := testing.AllocsPerRun(1000, func() {
		if !w.ReadAt(p, 1, 0x8000000+1<<20-MaxSend-100) {
			t.Fatal("miss")
		}
	}); a != 0 {
		t.Fatalf("%v allocations per read from memory", a)
	}
	d := []byte("0123456789")
	pos := uint64(0x8000000 + 1<<20)
	if a := testing.AllocsPerRun(1000, func() {
		w.Write(1, wal.LSN(pos), d)
		pos += uint64(len(d))
		w.Publish(wal.LSN(pos))
	}); a != 0 {
		t.Fatalf("%v allocations per write into memory", a)
	}
}

// BenchmarkReadAt is one walsender message (128 KiB) read from memory.
func BenchmarkReadAt(b *testing.B) {
	w := New(64 << 20)
	fill(w, 1, 0x9000000, 0x9000000+32<<20, 1<<20)
	p := make([]byte, MaxSend)
	b.SetBytes(MaxSend)
	b.ReportAllocs()
	pos := uint64(0x9000000)
	for b.Loop() {
		if !w.ReadAt(p, 1, wal.LSN(pos)) {
			b.Fatal("miss")
		}
		pos += MaxSend
		if pos+MaxSend > 0x9000000+32<<20 {
			pos = 0x9000000
		}
	}
}

// BenchmarkWrite is the ingest side: one 8 KiB XLogData payload copied in
// and published.
func BenchmarkWrite(b *testing.B) {
	w := New(64 << 20)
	d := pattern(1, 0, 8192)
	b.SetBytes(int64(len(d)))
	b.ReportAllocs()
	pos := uint64(0xA000000)
	for b.Loop() {
		w.Write(1, wal.LSN(pos), d)
		pos += uint64(len(d))
		w.Publish(wal.LSN(pos))
	}
}

// Borrow hands out the window's own bytes up to the end of a chunk and the
// durable end, misses where ReadAt misses, pins the chunk against the
// writer until released, and allocates nothing.
func TestBorrow(t *testing.T) {
	w := New(1 << 20)
	cs := w.ChunkSize()
	const start = 0xA000000
	fill(w, 1, start, start+w.Capacity(), 65536)
	w.Write(1, wal.LSN(start+w.Capacity()), pattern(1, start+w.Capacity(), 100)) // not durable

	// Within one chunk: all n bytes.
	b, p, ok := w.Borrow(1, wal.LSN(start+3*cs+10), 1000)
	if !ok || !bytes.Equal(b, pattern(1, start+3*cs+10, 1000)) {
		t.Fatalf("borrow within a chunk: ok %v, %d bytes", ok, len(b))
	}
	p.Release()
	// Across a chunk boundary: up to the boundary, the rest with the next
	// call, together the same bytes as ReadAt.
	pos, n := uint64(start+4*cs-300), 1000
	var got []byte
	for n > 0 {
		b, p, ok := w.Borrow(1, wal.LSN(pos), n)
		if !ok {
			t.Fatalf("borrow at %d missed", pos)
		}
		if len(b) > n || pos&^(cs-1) != (pos+uint64(len(b))-1)&^(cs-1) {
			t.Fatalf("borrow at %d returned %d bytes across a chunk end", pos, len(b))
		}
		got = append(got, b...)
		p.Release()
		pos += uint64(len(b))
		n -= len(b)
	}
	if !bytes.Equal(got, pattern(1, start+4*cs-300, 1000)) {
		t.Fatal("bytes borrowed across a chunk boundary differ from the WAL")
	}
	// Not past the durable end; a miss at it, before the window and on
	// another timeline.
	end := uint64(start + w.Capacity())
	if b, p, ok := w.Borrow(1, wal.LSN(end-10), 100); !ok || len(b) != 10 {
		t.Fatalf("borrow before the durable end: ok %v, %d bytes, want 10", ok, len(b))
	} else {
		p.Release()
	}
	for _, c := range []struct {
		tli uint32
		pos uint64
	}{{1, end}, {1, start - 1}, {2, start + 3*cs}} {
		if _, _, ok := w.Borrow(c.tli, wal.LSN(c.pos), 100); ok {
			t.Fatalf("borrow at %d on timeline %d hit", c.pos, c.tli)
		}
	}

	// A pinned chunk is skipped by the writer, and its bytes stay intact
	// until the pin is released.
	oldest := w.Stats().Start
	b, p, ok = w.Borrow(1, oldest, 100)
	if !ok {
		t.Fatal("borrow of the oldest bytes missed")
	}
	want := append([]byte(nil), b...)
	fill(w, 1, end, end+3*cs, 4096) // takes over the chunks up to the pinned one
	if w.conflicts.Load() == 0 {
		t.Fatal("the writer did not see the pinned chunk")
	}
	if !bytes.Equal(b, want) {
		t.Fatal("the writer overwrote a pinned chunk")
	}
	p.Release()
	if _, _, ok := w.Borrow(1, oldest, 100); ok {
		t.Fatal("a chunk the window moved past is still lent")
	}

	fill(w, 1, end+3*cs, end+5*cs, 4096)
	if a := testing.AllocsPerRun(1000, func() {
		_, p, ok := w.Borrow(1, wal.LSN(end+5*cs-5000), 4096)
		if !ok {
			t.Fatal("miss")
		}
		p.Release()
	}); a != 0 {
		t.Fatalf("%v allocations per borrow", a)
	}
}

// TestCopyCached: the same bytes and count as copy, for lengths around
// the piece size and either side the shorter.
func TestCopyCached(t *testing.T) {
	src := make([]byte, 3*cachedCopyPiece+100)
	for i := range src {
		src[i] = byte(i*31 + i>>11)
	}
	for _, dl := range []int{0, 1, cachedCopyPiece - 1, cachedCopyPiece, cachedCopyPiece + 1, 1 << 20, len(src), len(src) + 5} {
		for _, sl := range []int{0, 7, cachedCopyPiece, 1<<20 + 3, len(src)} {
			got := make([]byte, dl)
			want := make([]byte, dl)
			n := CopyCached(got, src[:sl])
			if m := copy(want, src[:sl]); n != m || !bytes.Equal(got, want) {
				t.Fatalf("dst %d, src %d: copied %d bytes (want %d), equal %v", dl, sl, n, m, bytes.Equal(got, want))
			}
		}
	}
	if testing.AllocsPerRun(3, func() { CopyCached(src[:1<<20], src[1<<20:]) }) != 0 {
		t.Fatal("CopyCached allocates")
	}
}
