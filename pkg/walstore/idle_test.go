package walstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

func wantOpen(t *testing.T, dir string, n int, when string) {
	t.Helper()
	if got := testenv.OpenFilesIn(t, dir); len(got) != n {
		t.Fatalf("%s: files open in the timeline directory %v; want %d", when, got, n)
	}
}

// readWAL returns the bytes of segments first..last (final name or
// .partial), concatenated.
func readWAL(t *testing.T, dir string, first, last uint64) []byte {
	t.Helper()
	var got []byte
	for segno := first; segno <= last; segno++ {
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
	return got
}

// An idle writer holds no file: none after OpenWriter, and none after
// CloseIdle once what was written is durable. Writes reopen the file and
// carry on where they stopped, across segment boundaries.
func TestWriterHoldsNoFileWhenIdle(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, _ := build(start, 2*testSeg+testSeg/3)
	w, err := OpenWriter(dir, 1, testSeg, start)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wantOpen(t, dir, 0, "after OpenWriter")
	// The first segment's file is there (OpenWriter fails where it
	// cannot be made), empty.
	if fi, err := os.Stat(filepath.Join(dir, wal.SegmentFileName(1, 1, testSeg)+PartialSuffix)); err != nil || fi.Size() != 0 {
		t.Fatalf("first segment after OpenWriter: %v, %v; want an empty .partial", fi, err)
	}
	if err := w.CloseIdle(); err != nil {
		t.Fatalf("CloseIdle with nothing open: %v", err)
	}

	pos := 0
	write := func(n int) {
		t.Helper()
		if err := w.Write(start+wal.LSN(pos), data[pos:pos+n]); err != nil {
			t.Fatal(err)
		}
		pos += n
	}
	write(5000)
	w.settle()
	wantOpen(t, dir, 1, "after a write (the preallocation of the next segment holds no descriptor once done)")
	// Not durable yet: CloseIdle keeps the file for the Sync.
	if err := w.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	wantOpen(t, dir, 1, "CloseIdle before the Sync")
	if d, err := w.Sync(); err != nil || d != start+wal.LSN(pos) {
		t.Fatalf("Sync = %s, %v", d, err)
	}
	if err := w.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	wantOpen(t, dir, 0, "CloseIdle after the Sync")

	// Reopened mid-segment, then across the segment's end: the sealed
	// segment waits for a Sync, so CloseIdle holds on to everything.
	write(testSeg)
	w.settle()
	if err := w.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	wantOpen(t, dir, 2, "a sealed segment awaiting its Sync, and the next one")
	if d, err := w.Sync(); err != nil || d != start+wal.LSN(pos) {
		t.Fatalf("Sync = %s, %v", d, err)
	}
	if err := w.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	wantOpen(t, dir, 0, "CloseIdle after a segment was sealed")

	// Sync and Close with no file open.
	if d, err := w.Sync(); err != nil || d != start+wal.LSN(pos) {
		t.Fatalf("Sync with no file open = %s, %v", d, err)
	}
	write(len(data) - pos)
	if _, err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := w.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close with no file open: %v", err)
	}
	wantOpen(t, dir, 0, "after Close")
	if got := readWAL(t, dir, 1, 3); !bytes.Equal(got, data) {
		t.Fatal("WAL on disk differs from what was written")
	}
	if res, err := Recover(dir, testControl(start)); err != nil || res.End != start+wal.LSN(len(data)) {
		t.Fatalf("Recover = %s, %v; want %s", res.End, err, start+wal.LSN(len(data)))
	}
}

// A restart: OpenWriter at the recovered end of a .partial that holds
// bytes up to it keeps them, holds no file, and the first Write continues
// the file.
func TestWriterReopensPartialAtEnd(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, _ := build(start, testSeg/2)
	half := len(data) / 2
	w := writeAll(t, dir, start, data[:half])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	w, err = OpenWriter(dir, 1, testSeg, res.End)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wantOpen(t, dir, 0, "after OpenWriter")
	if got := readWAL(t, dir, 1, 1); !bytes.Equal(got, data[:res.End-start]) {
		t.Fatalf("OpenWriter changed the .partial: %d bytes, want %d", len(got), res.End-start)
	}
	if err := w.Write(res.End, data[res.End-start:]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	// The reopened segment was zero-filled to its full size behind the
	// writer (tailFill): the WAL, then zeros.
	w.settle()
	got := readWAL(t, dir, 1, 1)
	if len(got) != testSeg || !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("WAL on disk differs from what was written (%d bytes)", len(got))
	}
	if bytes.ContainsFunc(got[len(data):], func(r rune) bool { return r != 0 }) {
		t.Fatal("the filled tail holds something else than zeros")
	}
}

// A file that lost WAL while the writer had it closed is not silently
// extended with zeros: the write fails and the writer is broken, so that
// a restart recovers what is really there.
func TestWriterReopenRefusesShortFile(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, _ := build(start, 20000)
	w := writeAll(t, dir, start, data[:10000])
	defer w.Close()
	// The background zero-fill of the segment's tail has its own
	// descriptor: let it finish first, or it extends the cut file again
	// (the loss this test simulates happens while nothing writes).
	w.settle()
	if err := w.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, wal.SegmentFileName(1, 1, testSeg)+PartialSuffix), 8192); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(start+10000, data[10000:]); !errors.Is(err, ErrBroken) {
		t.Fatalf("write into a file that lost WAL: %v; want ErrBroken", err)
	}
}
