package walreader_test

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
)

// sharedTier returns a local tier over tr's directory that takes its
// mappings from maps and hands them out from any resident region (1 MiB
// segments are never mapped with huge entries).
func sharedTier(tr *tiers, maps *walreader.SegmentMaps) *walreader.LocalTier {
	lt := walreader.NewLocalTier(tr.tl.Dir(), segSize)
	lt.MapSmallPages()
	lt.ShareMaps(maps)
	return lt
}

// locateMapped locates n bytes at the start of segment segno and checks
// that they come mapped and are the WAL written there; it returns the
// mapping's address.
func locateMapped(t *testing.T, lt *walreader.LocalTier, segno uint64, n int) uintptr {
	t.Helper()
	m, err := locateResident(lt, wal.LSN(segno*segSize), n)
	if err != nil {
		t.Fatalf("segment %d: %v", segno, err)
	}
	return uintptr(unsafe.Pointer(&m[0]))
}

// locateResident locates n bytes at lsn and checks that they come mapped
// (asking again for a moment, see soon: a page gone for good, or a
// mapping lost, fails) and are the WAL written there.
func locateResident(lt *walreader.LocalTier, lsn wal.LSN, n int) ([]byte, error) {
	var m []byte
	var err error
	soon(func() bool { _, _, m, err = lt.Locate(tli, lsn, n); return err != nil || m != nil })
	switch {
	case err != nil:
		return nil, err
	case m == nil:
		return nil, fmt.Errorf("at %s: located without a mapping for three seconds", lsn)
	case !bytes.Equal(m, walBytes(lsn, n)):
		return nil, fmt.Errorf("at %s: %d mapped bytes differ from the WAL written", lsn, len(m))
	}
	return m, nil
}

// isMapped reports whether addr's page is mapped in this process.
func isMapped(t *testing.T, addr uintptr) bool {
	t.Helper()
	var v [1]byte
	page := uintptr(os.Getpagesize())
	_, _, errno := unix.RawSyscall(unix.SYS_MINCORE, addr&^(page-1), page, uintptr(unsafe.Pointer(&v[0])))
	switch errno {
	case 0:
		return true
	case unix.ENOMEM:
		return false
	}
	t.Fatalf("mincore(%#x): %v", addr, errno)
	return false
}

// Consumers of a timeline share one mapping per finished segment, which
// outlives them; a segment still being written is mapped per consumer and
// unmapped when it lets go; Close drops the unused mappings at once and
// the others when let go.
func TestSegmentMapsShared(t *testing.T) {
	tr := newTiers(t, 3, 0, 1, archive.None) // local: 1..3 complete, 4 partial
	maps := walreader.NewSegmentMaps(time.Hour, 8*segSize, nil)
	lt1, lt2 := sharedTier(tr, maps), sharedTier(tr, maps)
	a1 := locateMapped(t, lt1, 1, 64<<10)
	if a2 := locateMapped(t, lt2, 1, 64<<10); a2 != a1 {
		t.Fatalf("two consumers of segment 1: mappings at %#x and %#x, want one", a1, a2)
	}
	if got := maps.Mapped(); got != 1 {
		t.Fatalf("Mapped() = %d after two consumers of one segment, want 1", got)
	}
	a2 := locateMapped(t, lt1, 2, 64<<10)
	lt1.Close()
	lt2.Close()
	if got, size := maps.Mapped(), maps.MappedBytes(); got != 2 || size != 2*segSize {
		t.Fatalf("Mapped() = %d, MappedBytes() = %d after the consumers of segments 1 and 2 left, want 2 kept, %d bytes", got, size, 2*segSize)
	}
	if !isMapped(t, a1) || !isMapped(t, a2) {
		t.Fatal("a kept mapping was unmapped")
	}
	lt3 := sharedTier(tr, maps)
	if a := locateMapped(t, lt3, 1, 64<<10); a != a1 {
		t.Fatalf("a later consumer of segment 1 got a mapping at %#x, want the kept one at %#x", a, a1)
	}
	// The partial segment: mapped, but not shared.
	lsn := wal.LSN(4 * segSize)
	_, _, m, err := lt3.Locate(tli, lsn, partial)
	if err != nil || !bytes.Equal(m, walBytes(lsn, partial)) {
		t.Fatalf("partial segment: Locate = %d mapped bytes, %v; want its WAL", len(m), err)
	}
	ap := uintptr(unsafe.Pointer(&m[0]))
	if got := maps.Mapped(); got != 2 {
		t.Fatalf("Mapped() = %d with a consumer in the partial segment, want 2 (not shared)", got)
	}
	lt4 := sharedTier(tr, maps)
	if a := locateMapped(t, lt4, 2, 64<<10); a != a2 {
		t.Fatalf("segment 2: mapping at %#x, want the kept one at %#x", a, a2)
	}
	lt3.Close()
	if isMapped(t, ap) {
		t.Fatal("the partial segment's mapping outlived its consumer")
	}
	maps.Close()
	if maps.Mapped() != 0 || maps.MappedBytes() != 0 || isMapped(t, a1) {
		t.Fatal("Close kept an unused mapping")
	}
	if !isMapped(t, a2) {
		t.Fatal("Close unmapped segment 2 under its consumer")
	}
	locateMapped(t, lt4, 2, 128<<10)
	lt4.Close()
	if isMapped(t, a2) {
		t.Fatal("after Close, a mapping outlived its last consumer")
	}
}

// A kept mapping is dropped when unused for the idle time, when its
// segment is removed, or when the unused ones exceed their bytes or the
// budget (the least recently used first); never while a consumer holds
// it.
func TestSegmentMapsDropped(t *testing.T) {
	tr := newTiers(t, 3, 0, 1, archive.None)

	t.Run("max", func(t *testing.T) {
		maps := walreader.NewSegmentMaps(time.Hour, segSize, nil) // one segment's worth
		defer maps.Close()
		lt := sharedTier(tr, maps)
		locateMapped(t, lt, 1, 4096)
		a2 := locateMapped(t, lt, 2, 4096)
		a3 := locateMapped(t, lt, 3, 4096)
		lt.Close()
		// Segment 1 was dropped before segment 3 was mapped (which may
		// have its address); segment 2 after: nothing took its address.
		if got := maps.Mapped(); got != 1 || isMapped(t, a2) || !isMapped(t, a3) {
			t.Fatalf("one segment's worth: %d kept, segment 2 mapped %v, segment 3 mapped %v; want segment 3's alone, the most recently used", got, isMapped(t, a2), isMapped(t, a3))
		}
	})

	t.Run("budget", func(t *testing.T) {
		budget := walreader.NewMapBudget(1)
		m1 := walreader.NewSegmentMaps(time.Hour, 8*segSize, budget)
		m2 := walreader.NewSegmentMaps(time.Hour, 8*segSize, budget)
		defer m1.Close()
		defer m2.Close()
		lt1, lt2 := sharedTier(tr, m1), sharedTier(tr, m2)
		locateMapped(t, lt1, 1, 4096)
		locateMapped(t, lt2, 2, 4096)
		lt1.Close()
		if m1.Mapped() != 1 {
			t.Fatal("within the budget, an unused mapping was dropped")
		}
		lt2.Close() // over the budget: m2 drops its own
		if m1.Mapped() != 1 || m2.Mapped() != 0 {
			t.Fatalf("a budget of one unused mapping: %d and %d kept, want 1 and 0", m1.Mapped(), m2.Mapped())
		}
	})

	t.Run("removed", func(t *testing.T) {
		maps := walreader.NewSegmentMaps(time.Hour, 8*segSize, nil)
		defer maps.Close()
		lt1, lt2 := sharedTier(tr, maps), sharedTier(tr, maps)
		a1 := locateMapped(t, lt1, 1, 4096)
		locateMapped(t, lt1, 2, 4096)
		lt1.Close()
		a3 := locateMapped(t, lt2, 3, 4096)
		maps.DropBelow(3)
		if got := maps.Mapped(); got != 1 || isMapped(t, a1) {
			t.Fatalf("segments before 3 removed: %d kept, segment 1 mapped %v; want segment 3's alone", got, isMapped(t, a1))
		}
		lt2.Close()
		if !isMapped(t, a3) || maps.Mapped() != 1 {
			t.Fatal("a segment after the removed ones lost its mapping")
		}
		// A removed segment is no longer shared, even if a consumer
		// still finds its file (it holds it open).
		lt3 := sharedTier(tr, maps)
		defer lt3.Close()
		locateMapped(t, lt3, 2, 4096)
		if maps.Mapped() != 1 {
			t.Fatal("a removed segment was mapped to be kept")
		}
		// The local start moves back (a timeline forked before it):
		// segment 2 is shared again.
		maps.DropBelow(1)
		lt3.Close()
		locateMapped(t, lt3, 2, 4096)
		if maps.Mapped() != 2 {
			t.Fatalf("%d kept after the local start moved back before segment 2, want 2", maps.Mapped())
		}
	})

	t.Run("idle", func(t *testing.T) {
		maps := walreader.NewSegmentMaps(20*time.Millisecond, 8*segSize, nil)
		defer maps.Close()
		held, passing := sharedTier(tr, maps), sharedTier(tr, maps)
		defer held.Close()
		a1 := locateMapped(t, held, 1, 4096)
		a2 := locateMapped(t, passing, 2, 4096)
		passing.Close()
		waitFor(t, "the unused mapping of segment 2 to be dropped", func() bool { return maps.Mapped() == 1 })
		// The sweep that dropped it left the one in use.
		if isMapped(t, a2) || !isMapped(t, a1) {
			t.Fatalf("segment 2 mapped %v, segment 1 (in use) mapped %v", isMapped(t, a2), isMapped(t, a1))
		}
		locateMapped(t, held, 1, 128<<10)
	})
}

// Consumers moving through segments at once, each sharing and letting go
// while the others drop and make the mappings again (an idle time of a
// millisecond), always locate the WAL written there. For -race.
func TestSegmentMapsConcurrent(t *testing.T) {
	tr := newTiers(t, 3, 0, 1, archive.None)
	maps := walreader.NewSegmentMaps(time.Millisecond, 2*segSize, nil)
	defer maps.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				lt := walreader.NewLocalTier(tr.tl.Dir(), segSize)
				lt.MapSmallPages()
				lt.ShareMaps(maps)
				for segno := uint64(1); segno <= 3; segno++ {
					lsn := wal.LSN(segno*segSize) + wal.LSN((g*i*4096)%(segSize/2))
					if _, err := locateResident(lt, lsn, 4096); err != nil {
						errs <- fmt.Errorf("segment %d: %w", segno, err)
						lt.Close()
						return
					}
				}
				lt.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
