package walreader_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
)

// Locate hands out the segment's mapping for WAL whose pages are in the
// page cache, and nothing for WAL that would have to be read from the disk
// (a sender may pass the mapping to a system call that must not wait) or
// when mapping is off. Either way the file and offset are those of the
// WAL.
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

	// Segment 2 out of the page cache: its pages are clean (flushed) and
	// nobody has them mapped yet, so the kernel drops them.
	seg2 := filepath.Join(tr.tl.Dir().Path(), wal.SegmentFileName(tli, 2, segSize))
	evict(t, seg2)

	rd := walreader.New(segSize, walreader.NewLocalTier(tr.tl.Dir(), segSize))
	defer rd.Close()
	from := wal.LSN(segSize + 100)
	ext := locate(rd, from, len(buf))
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
	if ext := locate(rd, from, len(buf)); !bytes.Equal(ext.Mapped, walBytes(from, len(buf))) {
		t.Fatal("segment 2, read back: not located with its mapping")
	}
	// The partial segment, up to the end of WAL.
	from = wal.LSN(3 * segSize)
	if ext := locate(rd, from, partial); !bytes.Equal(ext.Mapped, walBytes(from, partial)) {
		t.Fatal("partial segment: not located with its mapping")
	}

	lt := walreader.NewLocalTier(tr.tl.Dir(), segSize)
	lt.NoMapping()
	rd2 := walreader.New(segSize, lt)
	defer rd2.Close()
	if ext := locate(rd2, wal.LSN(segSize), len(buf)); ext.Mapped != nil {
		t.Fatal("NoMapping: located with a mapping")
	}
}

// evict drops path's pages from the page cache and checks that they are
// gone.
func evict(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for i, v := range vec {
		if v&1 != 0 {
			t.Fatalf("%s: page %d still in the page cache after FADV_DONTNEED", path, i)
		}
	}
}
