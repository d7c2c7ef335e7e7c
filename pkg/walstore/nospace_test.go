package walstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// fill writes a file in dir until the file system refuses more, so that
// not even one more page is free.
func fill(t *testing.T, dir, name string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		if IsNoSpace(err) {
			return
		}
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !IsNoSpace(err) {
				t.Fatalf("filling %s: %v", name, err)
			}
			return
		}
	}
}

// fillInodes creates empty files in dir until no more can be created.
func fillInodes(t *testing.T, dir string) {
	t.Helper()
	for i := 0; ; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("inode%d", i)))
		if err != nil {
			if !IsNoSpace(err) {
				t.Fatal(err)
			}
			return
		}
		f.Close()
	}
}

func noTemps(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
}

// A full disk is not a broken writer: the written end stays put, the
// failed bytes are given back, what was written still syncs, and writing
// the same bytes again succeeds once space is freed. Open on the full disk
// starts (without recording the end in the control file) and leaves no
// temp file.
func TestWriterDiskFull(t *testing.T) {
	fs := testenv.SmallFS(t, 4<<20, 64)
	dir := filepath.Join(fs, "tl")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Dir(dir).WriteControl(testControl(testSeg)); err != nil {
		t.Fatal(err)
	}
	fill(t, fs, "ballast")
	if err := os.Truncate(filepath.Join(fs, "ballast"), 2<<20); err != nil { // leave 2 MiB
		t.Fatal(err)
	}
	start := wal.LSN(testSeg)
	data, _ := build(start, 3*testSeg)
	w, err := OpenWriter(dir, 1, testSeg, start)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close() }()
	off := 0
	var werr error
	for off < len(data) {
		n := min(7919, len(data)-off)
		if werr = w.Write(start+wal.LSN(off), data[off:off+n]); werr != nil {
			break
		}
		off += n
	}
	if !errors.Is(werr, ErrNoSpace) || errors.Is(werr, ErrBroken) {
		t.Fatalf("write on a full disk: %v; want ErrNoSpace, not ErrBroken", werr)
	}
	if got := w.Written(); got != start+wal.LSN(off) {
		t.Fatalf("Written = %s after the failed write; want %s", got, start+wal.LSN(off))
	}
	if d, err := w.Sync(); err != nil || d != start+wal.LSN(off) {
		t.Fatalf("Sync = %s, %v; want %s", d, err, start+wal.LSN(off))
	}
	if err := w.Write(start+wal.LSN(off), data[off:]); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write while still full: %v", err)
	}
	// The failed bytes were truncated away: the current file ends at the
	// written end.
	segs, err := ListSegments(dir, testSeg)
	if err != nil {
		t.Fatal(err)
	}
	last := segs[len(segs)-1]
	if want := int64(wal.SegmentOffset(start+wal.LSN(off), testSeg)); !last.Partial || last.Size != want {
		t.Fatalf("last file %+v; want a .partial of %d bytes", last, want)
	}

	// Space frees: the same writer carries on where it stopped.
	if err := os.Remove(filepath.Join(fs, "ballast")); err != nil {
		t.Fatal(err)
	}
	half := off + (len(data)-off)/2
	if err := w.Write(start+wal.LSN(off), data[off:half]); err != nil {
		t.Fatalf("write after space freed: %v", err)
	}

	// Restart on a full disk where not even a control file can be
	// created: Open recovers the end (the last whole record) and opens.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fill(t, fs, "ballast")
	fillInodes(t, fs)
	o, err := Open(dir, "t", "l")
	if err != nil {
		t.Fatalf("Open on a full disk: %v", err)
	}
	w = o.Writer
	end := o.Recovery.End
	if end > start+wal.LSN(half) || end < start+wal.LSN(half)-8192 || !IsNoSpace(o.ControlNotSaved) {
		t.Fatalf("Open: end %s, control not saved %v; want about %s and a no-space error", end, o.ControlNotSaved, start+wal.LSN(half))
	}
	noTemps(t, dir)
	if err := os.Remove(filepath.Join(fs, "ballast")); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(end, data[end-start:]); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	if d, err := w.Sync(); err != nil || d != start+wal.LSN(len(data)) {
		t.Fatalf("Sync = %s, %v; want %s", d, err, start+wal.LSN(len(data)))
	}
	res, err := Recover(dir, testControl(start))
	if err != nil || res.End != start+wal.LSN(len(data)) {
		t.Fatalf("Recover = %s, %v; want %s", res.End, err, start+wal.LSN(len(data)))
	}
	var got []byte
	for segno := uint64(1); segno <= 4; segno++ {
		name := wal.SegmentFileName(1, segno, testSeg)
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			b, err = os.ReadFile(filepath.Join(dir, name+PartialSuffix))
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got[:len(data)], data) {
		i := 0
		for i < len(data) && got[i] == data[i] {
			i++
		}
		t.Fatalf("WAL on disk differs from what was written at %s (len %d, got %d)", start+wal.LSN(i), len(data), len(got))
	}
}

// A segment file that cannot be created (no inode left) is created by a
// later Write instead: the writer opens, reports ErrNoSpace, and carries
// on when a file can be created again.
func TestWriterCreatesSegmentLazily(t *testing.T) {
	fs := testenv.SmallFS(t, 8<<20, 3)
	dir := filepath.Join(fs, "tl") // inode 1
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fs, "a"), nil, 0o600); err != nil { // inode 2
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fs, "b"), nil, 0o600); err != nil { // inode 3: the last
		t.Fatal(err)
	}
	start := wal.LSN(testSeg)
	w, err := OpenWriter(dir, 1, testSeg, start)
	if err != nil {
		t.Fatalf("OpenWriter with no inode left: %v", err)
	}
	defer w.Close()
	data, _ := build(start, 4096)
	if err := w.Write(start, data); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write with no inode left: %v; want ErrNoSpace", err)
	}
	if err := os.Remove(filepath.Join(fs, "a")); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(start, data); err != nil {
		t.Fatalf("write once a file can be created: %v", err)
	}
	if d, err := w.Sync(); err != nil || d != start+wal.LSN(len(data)) {
		t.Fatalf("Sync = %s, %v", d, err)
	}
}

// The reserve gives its space back when released, so that control files
// can still be written on a full disk, and is put back before ingest
// resumes.
func TestReserve(t *testing.T) {
	fs := testenv.SmallFS(t, 4<<20, 0)
	r := NewReserve(fs, 256<<10)
	if err := r.Ensure(); err != nil {
		t.Fatal(err)
	}
	fill(t, fs, "ballast")
	ctl := filepath.Join(fs, "x.control")
	if err := WriteControl(ctl, testControl(0)); !IsNoSpace(err) {
		t.Fatalf("control write on a full disk: %v; want no space", err)
	}
	noTemps(t, fs)
	if !r.Release() {
		t.Fatal("Release found no reserve")
	}
	if err := WriteControl(ctl, testControl(0)); err != nil {
		t.Fatalf("control write after the reserve was released: %v", err)
	}
	if _, ok, err := r.Resume(1 << 20); ok || err != nil {
		t.Fatalf("Resume on a full disk = %v, %v; want false", ok, err)
	}
	if err := os.Remove(filepath.Join(fs, "ballast")); err != nil {
		t.Fatal(err)
	}
	free, ok, err := r.Resume(1 << 20)
	if !ok || err != nil {
		t.Fatalf("Resume with %d bytes free = %v, %v; want true", free, ok, err)
	}
	if fi, err := os.Stat(filepath.Join(fs, ReserveFileName)); err != nil || fi.Size() != 256<<10 {
		t.Fatalf("reserve not put back: %v %v", fi, err)
	}
}
