package walmem

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// mapping is one line of /proc/self/smaps with its AnonHugePages.
type mapping struct {
	lo, hi   uintptr
	hugeKiB  int  // AnonHugePages
	advisedH bool // VmFlags has "hg" (MADV_HUGEPAGE)
}

func selfMappings(t *testing.T) []mapping {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ms []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				ms = append(ms, mapping{lo: uintptr(l), hi: uintptr(h)})
				continue
			}
		}
		if len(ms) == 0 {
			continue
		}
		m := &ms[len(ms)-1]
		switch fields[0] {
		case "AnonHugePages:":
			m.hugeKiB, _ = strconv.Atoi(fields[1])
		case "VmFlags:":
			m.advisedH = bytes.Contains([]byte(line), []byte(" hg"))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ms
}

func mappingOf(ms []mapping, p uintptr) (mapping, bool) {
	for _, m := range ms {
		if m.lo <= p && p < m.hi {
			return m, true
		}
	}
	return mapping{}, false
}

// thpAvailable reports whether the kernel gives transparent huge pages to
// regions marked MADV_HUGEPAGE.
func thpAvailable() bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err == nil && (bytes.Contains(b, []byte("[always]")) || bytes.Contains(b, []byte("[madvise]")))
}

// TestChunksOnHugePages: chunks of a huge page or more live outside the
// Go heap, aligned and advised for huge pages, and the kernel backs them
// with huge pages where it offers them; Release unmaps the chunks no reader
// holds at once, and a chunk a reader held when it was released stays
// readable until the reader lets go, then is unmapped by the collector.
func TestChunksOnHugePages(t *testing.T) {
	const size = 64 << 20
	w := New(size)
	if w.ChunkSize() < hugePage {
		t.Fatalf("chunk size %d below a huge page", w.ChunkSize())
	}
	const from = 0x10000000
	// Chunk by chunk, each after the memory for it is prepared (the
	// writer does not wait for it; ingest is not this fast).
	cs := w.ChunkSize()
	for pos := uint64(from); pos < from+size; pos += cs {
		if pos > from {
			deadline := time.Now().Add(10 * time.Second)
			for w.spare.Load() == nil {
				if time.Now().After(deadline) {
					t.Fatalf("no chunk prepared 10 s after the writer reached %#x", pos)
				}
				time.Sleep(time.Millisecond)
			}
		}
		fill(w, 1, pos, pos+cs, 1<<20)
	}
	r := w.r.Load()
	ms := selfMappings(t)
	for i := range r.chunks {
		c := &r.chunks[i]
		if c.buf == nil {
			t.Fatalf("chunk %d has no memory after the window was filled", i)
		}
		p := uintptr(unsafe.Pointer(unsafe.SliceData(c.buf)))
		if p%hugePage != 0 {
			t.Fatalf("chunk %d at %#x is not aligned to a huge page", i, p)
		}
		m, ok := mappingOf(ms, p)
		if !ok {
			t.Fatalf("chunk %d at %#x is in no mapping", i, p)
		}
		// The first chunk is the writer's own, on small pages; the
		// others were prepared on huge ones.
		if first := uint64(i) == (from/cs)%w.nchunks; m.advisedH == first {
			t.Fatalf("chunk %d's mapping %#x-%#x: MADV_HUGEPAGE %v, want %v", i, m.lo, m.hi, m.advisedH, !first)
		}
	}
	// Adjacent chunk mappings may merge into one: count each mapping once.
	huge := 0
	seen := map[uintptr]bool{}
	for i := range r.chunks {
		if r.chunks[i].buf == nil {
			continue
		}
		m, _ := mappingOf(ms, uintptr(unsafe.Pointer(unsafe.SliceData(r.chunks[i].buf))))
		if !seen[m.lo] {
			seen[m.lo] = true
			huge += m.hugeKiB << 10
		}
	}
	t.Logf("window of %d MiB: %d MiB on huge pages", size>>20, huge>>20)
	if thpAvailable() && huge < size/2 {
		t.Fatalf("only %d of %d bytes of the window are on huge pages although the kernel offers them", huge, size)
	}

	// A reader holds the chunk of the last MiB across a Release.
	last := uint64(from + size - 1<<20)
	held, pin, ok := w.Borrow(1, wal.LSN(last), 1<<20)
	if !ok {
		t.Fatal("borrow of the last MiB missed")
	}
	heldAt := uintptr(unsafe.Pointer(unsafe.SliceData(held)))
	var freedAt []uintptr
	for i := range r.chunks {
		if p := uintptr(unsafe.Pointer(unsafe.SliceData(r.chunks[i].buf))); p != 0 && (p > heldAt || heldAt >= p+uintptr(w.ChunkSize())) {
			freedAt = append(freedAt, p)
		}
	}
	w.Release()
	ms = selfMappings(t)
	for _, p := range freedAt {
		if _, ok := mappingOf(ms, p); ok {
			t.Fatalf("chunk at %#x is still mapped after Release", p)
		}
	}
	if !bytes.Equal(held, pattern(1, last, 1<<20)) {
		t.Fatal("the chunk held across Release changed")
	}
	pin.Release()
	held, pin, r = nil, Pin{}, nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if _, ok := mappingOf(selfMappings(t), heldAt); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the chunk held across Release at %#x is still mapped 10 s after its reader let go", heldAt)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMappedChunksUnderRelease: readers copying and borrowing from a
// window of mapped chunks while the writer wraps it and releases it every
// few MiB get the right bytes or a miss, never a fault.
func TestMappedChunksUnderRelease(t *testing.T) {
	w := New(32 << 20) // 16 chunks of 2 MiB, mapped
	if !hugeChunks(w.ChunkSize()) {
		t.Fatalf("chunk size %d is not mapped", w.ChunkSize())
	}
	const start = 0x20000000
	total := uint64(96 << 20)
	if testing.Short() {
		total = 32 << 20
	}
	src := pattern(1, start, int(total)+MaxSend)
	at := func(pos uint64, n int) []byte { return src[pos-start : pos-start+uint64(n)] }
	var durable atomic.Uint64
	durable.Store(start)
	done := make(chan struct{})
	var hits, lent atomic.Int64
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			p := make([]byte, MaxSend)
			for {
				select {
				case <-done:
					return
				default:
				}
				d := durable.Load()
				n := 1 + rng.IntN(MaxSend)
				back := uint64(n) + rng.Uint64N(w.Capacity())
				if d < start+back {
					runtime.Gosched()
					continue
				}
				pos := d - back
				if i%2 == 0 {
					if w.ReadAt(p[:n], 1, wal.LSN(pos)) {
						hits.Add(1)
						if !bytes.Equal(p[:n], at(pos, n)) {
							t.Errorf("ReadAt: wrong bytes at %#x (+%d)", pos, n)
							return
						}
					}
					continue
				}
				b, pin, ok := w.Borrow(1, wal.LSN(pos), n)
				if !ok {
					continue
				}
				runtime.Gosched() // hold the pin while the writer goes on
				lent.Add(1)
				good := bytes.Equal(b, at(pos, len(b)))
				pin.Release()
				if !good {
					t.Errorf("Borrow: wrong bytes at %#x (+%d)", pos, len(b))
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(3, 4))
	releases := 0
	for pos := uint64(start); pos < start+total; {
		n := uint64(1 + rng.IntN(MaxSend))
		w.Write(1, wal.LSN(pos), at(pos, int(n)))
		pos += n
		w.Publish(wal.LSN(pos))
		durable.Store(pos)
		if (pos-start)/(8<<20) != (pos-n-start)/(8<<20) {
			w.Release()
			releases++
			runtime.GC() // runs the cleanups of chunks held across a Release
		}
		runtime.Gosched()
	}
	close(done)
	wg.Wait()
	t.Logf("%d releases, %d reads hit, %d borrows", releases, hits.Load(), lent.Load())
	if hits.Load() == 0 || lent.Load() == 0 {
		t.Fatalf("readers never hit the window (%d reads, %d borrows)", hits.Load(), lent.Load())
	}
}
