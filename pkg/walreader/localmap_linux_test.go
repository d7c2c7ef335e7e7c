package walreader_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/internal/pagemap"
	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// Locate hands out the segment's mapping for WAL whose pages are in the
// page cache, and nothing for WAL that would have to be read from the disk
// (a sender may pass the mapping to a system call that must not wait) or
// when mapping is off. Either way the file and offset are those of the
// WAL. (1 MiB segments are never mapped with huge entries: MapSmallPages
// lifts that condition, which TestLocateMapsOnlyHugeRegions covers.)
func TestLocateMapsResidentWAL(t *testing.T) {
	tr := newTiers(t, 2, 0, 1, archive.None) // local: 1..2 complete, 3 partial
	ctx := context.Background()
	buf := make([]byte, 128<<10)
	locate := func(rd *walreader.Reader, lsn wal.LSN, n int) walreader.Extent {
		t.Helper()
		ext, err := rd.ReadOrLocate(ctx, buf[:n], tli, lsn)
		if err != nil {
			t.Fatal(err)
		}
		if ext.File == nil || ext.N != n || ext.Off != int64(wal.SegmentOffset(lsn, segSize)) {
			t.Fatalf("ReadOrLocate(%s, %d) = %+v, want the segment file at offset %d", lsn, n, ext, wal.SegmentOffset(lsn, segSize))
		}
		return ext
	}
	// WAL in the page cache, which Locate may still briefly find out of
	// it (see soon).
	locateCached := func(rd *walreader.Reader, lsn wal.LSN, n int) (ext walreader.Extent) {
		t.Helper()
		soon(func() bool { ext = locate(rd, lsn, n); return ext.Mapped != nil })
		return ext
	}

	// Segment 2 out of the page cache: its pages are clean (flushed) and
	// nobody has them mapped yet, so the kernel drops them.
	seg2 := filepath.Join(tr.tl.Dir().Path(), wal.SegmentFileName(tli, 2, segSize))
	evict(t, seg2)

	small := walreader.NewLocalTier(tr.tl.Dir(), segSize)
	small.MapSmallPages()
	rd := walreader.New(segSize, small)
	defer rd.Close()
	from := wal.LSN(segSize + 100)
	ext := locateCached(rd, from, len(buf))
	if !bytes.Equal(ext.Mapped, walBytes(from, len(buf))) {
		t.Fatalf("segment 1 in the page cache: mapped %d bytes, want the %d bytes of WAL", len(ext.Mapped), len(buf))
	}
	from = wal.LSN(2*segSize + 4096)
	if ext = locate(rd, from, len(buf)); ext.Mapped != nil {
		t.Fatal("segment 2, evicted: located with a mapping")
	}
	// Read once, it is cached again.
	if n, err := ext.File.ReadAt(buf, ext.Off); err != nil || n != len(buf) {
		t.Fatal(n, err)
	}
	if ext := locateCached(rd, from, len(buf)); !bytes.Equal(ext.Mapped, walBytes(from, len(buf))) {
		t.Fatal("segment 2, read back: not located with its mapping")
	}
	// The partial segment, up to the end of WAL.
	from = wal.LSN(3 * segSize)
	if ext := locateCached(rd, from, partial); !bytes.Equal(ext.Mapped, walBytes(from, partial)) {
		t.Fatal("partial segment: not located with its mapping")
	}

	lt := walreader.NewLocalTier(tr.tl.Dir(), segSize)
	lt.MapSmallPages()
	lt.NoMapping()
	rd2 := walreader.New(segSize, lt)
	defer rd2.Close()
	if ext := locate(rd2, wal.LSN(segSize), len(buf)); ext.Mapped != nil {
		t.Fatal("NoMapping: located with a mapping")
	}
}

// Without MapSmallPages, Locate hands out mapped bytes only from 2 MiB
// regions the kernel maps with one huge entry: a segment written in 64 KiB
// pieces (as walstore writes them) and then refolded (walstore.Refold, as
// the writer does with each segment it finishes) where the kernel caches
// files in 2 MiB folios, never one written in 64 KiB pieces and left so.
// Whether this kernel does is checked apart, by mapping a file written in
// 2 MiB pieces and reading /proc/self/smaps. The mapping stays whole
// while the reader is in the segment.
func TestLocateMapsOnlyHugeRegions(t *testing.T) {
	const seg = 32 << 20
	dir := walstore.Dir(t.TempDir())
	want := waltest.Pattern(wal.LSN(seg), seg)
	write := func(segno uint64, piece int) {
		t.Helper()
		f, err := os.Create(dir.File(wal.SegmentFileName(tli, segno, seg)))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for off := 0; off < seg; off += piece {
			if _, err := f.WriteAt(want[off:off+piece], int64(off)); err != nil {
				t.Fatal(err)
			}
		}
		// Durable, as a finished segment is: the page cache drops
		// (and Refold refolds) clean pages only.
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	write(1, 64<<10)
	write(2, 64<<10)
	write(3, 2<<20) // the probe of what this kernel can do
	probe := dir.File(wal.SegmentFileName(tli, 3, seg))
	f1, err := os.Open(dir.File(wal.SegmentFileName(tli, 1, seg)))
	if err != nil {
		t.Fatal(err)
	}
	err = walstore.Refold(f1, seg, nil)
	f1.Close()
	if err != nil && !errors.Is(err, walstore.ErrRefoldUseless) {
		t.Fatal(err)
	}
	lt := walreader.NewLocalTier(dir, seg)
	defer lt.Close()
	const n = 1 << 20
	mapsHuge := kernelMapsHuge(t, probe)
	sawHuge := false
	for _, c := range []struct {
		segno uint64
		huge  bool // refolded
	}{{1, true}, {2, false}} {
		path := dir.File(wal.SegmentFileName(tli, c.segno, seg))
		// After each Locate, the KiB mapped with huge entries: each
		// region mapped so far.
		wantKB := 0
		for _, off := range []int{0, 3 << 20, 17 << 20, 19 << 20, seg - n} {
			lsn := wal.LSN(c.segno*seg) + wal.LSN(off)
			var f *os.File
			var at int64
			var m []byte
			soon(func() bool {
				f, at, m, err = lt.Locate(tli, lsn, n)
				return err != nil || m != nil || !c.huge || !mapsHuge
			})
			if err != nil || f == nil || at != int64(off) {
				t.Fatalf("segment %d at %d: Locate = %v, %d, %v", c.segno, off, f, at, err)
			}
			if m == nil {
				if c.huge && mapsHuge {
					wantHugeGone(t, path, off, "segment 1, refolded")
				}
				continue
			}
			if !c.huge {
				t.Fatalf("segment %d at %d, written in 64 KiB pieces and not refolded: located with a mapping", c.segno, off)
			}
			sawHuge = true
			wantKB += 2048
			if pmd := pmdMappedKB(t, uintptr(unsafe.Pointer(&m[0]))); pmd != wantKB {
				t.Fatalf("segment %d at %d: mapped with %d KiB of huge entries, want %d", c.segno, off, pmd, wantKB)
			}
			if !bytes.Equal(m, want[off:off+n]) {
				t.Fatalf("segment %d at %d: mapped bytes differ from the file's", c.segno, off)
			}
		}
	}

	// A region first met out of the page cache is probed again once it
	// is back: here the segment is refolded after a consumer of a shared
	// mapping found it evicted (as a consumer may meet a segment the
	// writer is refolding).
	lt.Close()
	if !sawHuge {
		t.Log("no 2 MiB folios here: the probe after a refold is not checked")
		return
	}
	seg1 := dir.File(wal.SegmentFileName(tli, 1, seg))
	evict(t, seg1)
	maps := walreader.NewSegmentMaps(time.Hour, 8*seg, nil)
	defer maps.Close()
	shared := walreader.NewLocalTier(dir, seg)
	shared.ShareMaps(maps)
	defer shared.Close()
	if _, _, m, err := shared.Locate(tli, wal.LSN(seg), n); err != nil || m != nil {
		t.Fatalf("segment 1 evicted: Locate = %d mapped bytes, %v; want none", len(m), err)
	}
	if f1, err = os.Open(seg1); err != nil {
		t.Fatal(err)
	}
	err = walstore.Refold(f1, seg, nil)
	f1.Close()
	if err != nil {
		t.Fatal(err)
	}
	var m []byte
	soon(func() bool { _, _, m, err = shared.Locate(tli, wal.LSN(seg), n); return err != nil || m != nil })
	if m == nil && err == nil {
		wantHugeGone(t, seg1, 0, "segment 1, refolded after an evicted probe")
	} else if err != nil || !bytes.Equal(m, want[:n]) {
		t.Fatalf("segment 1 refolded after an evicted probe: Locate = %d mapped bytes, %v; want its first MiB", len(m), err)
	}

	// A region found in small folios is not kept mapped (its pages could
	// not be refolded) and is probed again a while later: here a
	// consumer of a shared mapping walks segment 2 before it is
	// refolded, as one a segment behind the writer may.
	lsn2 := wal.LSN(2 * seg)
	for off := 0; off < seg; off += n {
		if _, _, m, err := shared.Locate(tli, lsn2+wal.LSN(off), n); err != nil || m != nil {
			t.Fatalf("segment 2 before its refold, at %d: Locate = %d mapped bytes, %v; want none", off, len(m), err)
		}
	}
	seg2 := dir.File(wal.SegmentFileName(tli, 2, seg))
	f2, err := os.Open(seg2)
	if err != nil {
		t.Fatal(err)
	}
	err = walstore.Refold(f2, seg, nil)
	f2.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Its regions were found without huge entries a moment ago: each is
	// probed again after a second.
	for off := 0; off < seg; off += n {
		soon(func() bool { _, _, m, err = shared.Locate(tli, lsn2+wal.LSN(off), n); return err != nil || m != nil })
		if m == nil && err == nil {
			wantHugeGone(t, seg2, off, "segment 2, refolded")
		} else if err != nil || !bytes.Equal(m, want[off:off+n]) {
			t.Fatalf("segment 2 refolded, at %d: Locate = %d mapped bytes, %v; want the WAL", off, len(m), err)
		}
	}
}

// wantHugeGone is called when Locate answered without a mapping, for three
// seconds, in a refolded segment at off: it fails unless the page cache
// no longer holds off's 2 MiB region in one folio. The refold reads a
// region back in a 2 MiB folio only when the kernel finds the memory for
// one (else in smaller folios), so a region may rightly go unmapped;
// where the kernel maps it with a huge entry, the local tier must too.
func wantHugeGone(t *testing.T, path string, off int, what string) {
	t.Helper()
	_, b, done := mapWhole(t, path)
	defer done()
	region := off &^ (2<<20 - 1)
	if err := unix.Madvise(b[region:region+4096], unix.MADV_POPULATE_READ); err != nil {
		t.Fatal(err)
	}
	addr := uintptr(unsafe.Pointer(&b[region]))
	if addr%(2<<20) != 0 {
		t.Fatalf("%s, at %d: no mapping, and the kernel did not align a mapping of the file to 2 MiB to tell why", what, off)
	}
	if pagemap.HugeMapped(addr) {
		t.Fatalf("%s, at %d: no mapping, though the kernel maps its region with a huge entry", what, off)
	}
	t.Logf("%s, at %d: not mapped; the page cache holds its region in smaller folios (the refold found no 2 MiB folio)", what, off)
}

// kernelMapsHuge maps path, populates a page of its first 2 MiB, and
// reports whether the kernel mapped that region with a huge entry.
func kernelMapsHuge(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, 4<<20, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	base := uintptr(unsafe.Pointer(&m[0]))
	first := (2<<20 - base%(2<<20)) % (2 << 20) // the first 2 MiB boundary in the mapping
	// Populated, as the local tier does: here a read fault of a Go
	// load maps the page alone, with a small entry.
	if err := unix.Madvise(m[first:first+4096], unix.MADV_POPULATE_READ); err != nil {
		t.Fatal(err)
	}
	huge := pmdMappedKB(t, base) > 0
	t.Logf("this kernel maps a file written in 2 MiB pieces with huge entries: %v", huge)
	return huge
}

// pmdMappedKB returns FilePmdMapped of the mapping holding addr, from
// /proc/self/smaps.
func pmdMappedKB(t *testing.T, addr uintptr) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				in = uint64(addr) >= l && uint64(addr) < h
				continue
			}
		}
		if in && fields[0] == "FilePmdMapped:" && len(fields) >= 2 {
			kb, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatalf("no mapping at %#x in /proc/self/smaps", addr)
	return 0
}

// evict drops path's pages from the page cache and checks that they are
// gone.
func evict(t *testing.T, path string) {
	t.Helper()
	f, m, done := mapWhole(t, path)
	defer done()
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	cached := -1
	soon(func() bool {
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
			t.Fatal(errno)
		}
		cached = slices.IndexFunc(vec, func(v byte) bool { return v&1 != 0 })
		return cached < 0
	})
	if cached >= 0 {
		t.Fatalf("%s: page %d still in the page cache after FADV_DONTNEED", path, cached)
	}
}

// mapWhole opens path and maps all of it read-only and shared; done
// unmaps it and closes the file.
func mapWhole(t *testing.T, path string) (f *os.File, b []byte, done func()) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err == nil {
		b, err = unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	}
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	return f, b, func() { _ = unix.Munmap(b); f.Close() }
}

// soon calls cond until it holds, for at most three seconds. The kernel
// moving pages of the page cache (compaction, which makes room for huge
// pages such as the refold's) briefly shows a page to mincore(2) as not
// cached, where Locate then rightly answers without the mapping (and a
// region probed at that moment is copied for a second), and keeps
// FADV_DONTNEED from dropping it: the tests ask again rather than fail on
// that moment.
func soon(cond func() bool) {
	for end := time.Now().Add(3 * time.Second); !cond() && time.Now().Before(end); {
		runtime.Gosched()
	}
}
