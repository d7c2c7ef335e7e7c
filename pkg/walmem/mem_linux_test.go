package walmem

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
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
	fill(w, 1, from, from+size, 1<<20)
	r := w.r.Load()
	ms := selfMappings(t)
	for i := range r.chunks {
		c := &r.chunks[i]
		if c.buf == nil {
			continue
		}
		p := uintptr(unsafe.Pointer(unsafe.SliceData(c.buf)))
		if p%hugePage != 0 {
			t.Fatalf("chunk %d at %#x is not aligned to a huge page", i, p)
		}
		m, ok := mappingOf(ms, p)
		if !ok {
			t.Fatalf("chunk %d at %#x is in no mapping", i, p)
		}
		if !m.advisedH {
			t.Fatalf("chunk %d's mapping %#x-%#x is not marked MADV_HUGEPAGE", i, m.lo, m.hi)
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
