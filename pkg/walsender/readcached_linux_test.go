package walsender

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// readCached returns the file's bytes whether they are in the page cache
// (one raw preadv2) or must come from the disk (RWF_NOWAIT says EAGAIN and
// an ordinary read follows), and reports a file that ends early as ReadAt
// does.
func TestReadCached(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seg")
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i*31 + i>>9)
	}
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	var fs fileSender
	check := func(what string, off int64, n int) {
		t.Helper()
		got := make([]byte, n)
		k, err := fs.readCached(f, got, off)
		if err != nil || k != n || !bytes.Equal(got, want[off:off+int64(n)]) {
			t.Fatalf("%s: read %d of %d at %d, %v, equal %v", what, k, n, off, err, bytes.Equal(got[:k], want[off:off+int64(k)]))
		}
	}
	check("cached", 4096, 256<<10)
	// Dropped from the cache (clean pages go): RWF_NOWAIT refuses, the
	// fallback reads the disk. Then half cached, half not.
	// The kernel does not drop a page it is moving (compaction): asked
	// again for at most a second.
	probe := make([]byte, 4096)
	for end := time.Now().Add(time.Second); ; {
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		_, err := unix.Preadv2(int(f.Fd()), [][]byte{probe}, 300<<10, unix.RWF_NOWAIT)
		if err == unix.EAGAIN {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("RWF_NOWAIT read of dropped pages: %v, want EAGAIN (the fallback would go untested)", err)
		}
	}
	check("from disk", 300<<10, 256<<10)
	check("part cached", 400<<10, 256<<10)

	// Past the end: what there is, and io.EOF, as ReadAt.
	got := make([]byte, 8192)
	k, err := fs.readCached(f, got, int64(len(want))-100)
	if k != 100 || err != io.EOF || !bytes.Equal(got[:k], want[len(want)-100:]) {
		t.Fatalf("read across the end: %d, %v; want 100, EOF", k, err)
	}
	if k, err := fs.readCached(f, got, int64(len(want))); k != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v; want 0, EOF", k, err)
	}
}
