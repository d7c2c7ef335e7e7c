package walstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// pwrite writes what WriteAt writes, and fails as it does.
func TestPwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seg")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := bytes.Repeat([]byte("0123456789"), 100_000)
	if n, err := pwrite(f, b, 4096); err != nil || n != len(b) {
		t.Fatalf("pwrite: %d, %v", n, err)
	}
	if n, err := pwrite(f, []byte("head"), 0); err != nil || n != 4 {
		t.Fatalf("pwrite at 0: %d, %v", n, err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte("head"), make([]byte, 4092)...), b...)
	if !bytes.Equal(got, want) {
		t.Fatal("the file does not hold what was written")
	}
	if err := fdatasync(f, true); err != nil {
		t.Fatal(err)
	}
	if rawHeld.Load() != 0 {
		t.Fatalf("%d raw slots still held", rawHeld.Load())
	}

	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	_, err = pwrite(ro, b[:10], 0)
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "write" || pe.Path != path || !errors.Is(err, syscall.EBADF) {
		t.Fatalf("pwrite to a read-only file: %v, want write %s: bad file descriptor", err, path)
	}
	if rawHeld.Load() != 0 {
		t.Fatalf("%d raw slots still held after an error", rawHeld.Load())
	}
}

// fdatasync reports the kernel's error, raw or not.
func TestFdatasyncError(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, small := range []bool{true, false} {
		if err := fdatasync(w, small); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("fdatasync of a pipe (small %v): %v, want EINVAL", small, err)
		}
	}
	if rawHeld.Load() != 0 {
		t.Fatalf("%d raw slots still held", rawHeld.Load())
	}
}

// At most GOMAXPROCS-1 raw calls hold a P; with one P, none.
func TestRawSlots(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	if !rawSlot() {
		t.Fatal("no raw slot with two Ps and none held")
	}
	if rawSlot() {
		t.Fatal("a second raw slot with two Ps")
	}
	// The writer falls back to ordinary calls meanwhile.
	f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := pwrite(f, []byte("wal"), 0); err != nil {
		t.Fatal(err)
	}
	if err := fdatasync(f, true); err != nil {
		t.Fatal(err)
	}
	if got := rawHeld.Load(); got != 1 {
		t.Fatalf("%d raw slots held, want the 1 reserved", got)
	}
	rawRelease()
	runtime.GOMAXPROCS(1)
	if rawSlot() {
		rawRelease()
		t.Fatal("a raw slot with one P")
	}
}
