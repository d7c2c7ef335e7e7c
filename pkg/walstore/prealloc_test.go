package walstore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
)

// A crash with the writer inside a preallocated segment: the current
// .partial is full-size with zeros past the written WAL, the next one is
// all zeros. Recover ends at the last record written (the size of the
// file proves nothing), cuts the zeros, and removes the next file, which
// holds no WAL: it never extends the end.
func TestRecoverPreallocated(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, recs := build(start, testSeg+testSeg/2)
	w, err := OpenWriter(dir, 1, testSeg, start)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(start, data); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.settle()
	// A crash: no Close.
	cur := filepath.Join(dir, wal.SegmentFileName(1, 2, testSeg)+PartialSuffix)
	next := filepath.Join(dir, wal.SegmentFileName(1, 3, testSeg)+PartialSuffix)
	for _, p := range []string{cur, next} {
		if fi, err := os.Stat(p); err != nil || fi.Size() != testSeg {
			t.Fatalf("%s: %v, %v; want a preallocated file of a whole segment", p, fi, err)
		}
	}
	end := start + wal.LSN(len(data))
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	if res.End != end {
		t.Fatalf("Recover end %s, want %s (last record at %s)", res.End, end, recs[len(recs)-1])
	}
	if fi, err := os.Stat(cur); err != nil || fi.Size() != int64(wal.SegmentOffset(end, testSeg)) {
		t.Fatalf("current segment after Recover: %v, %v", fi, err)
	}
	if _, err := os.Stat(next); !os.IsNotExist(err) {
		t.Fatalf("preallocated next segment still there: %v", err)
	}

	// At a segment boundary, the all-zero file of the next segment is
	// emptied, not taken for WAL.
	dir2 := t.TempDir()
	w2, err := OpenWriter(dir2, 1, testSeg, start)
	if err != nil {
		t.Fatal(err)
	}
	one := make([]byte, testSeg)
	copy(one, data[:testSeg])
	if err := w2.Write(start, one); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Sync(); err != nil {
		t.Fatal(err)
	}
	w2.settle()
	ctl := testControl(start)
	ctl.FlushLSN = start + testSeg
	res, err = Recover(dir2, ctl)
	if err != nil || res.End != start+testSeg {
		t.Fatalf("Recover at a boundary = %+v, %v", res, err)
	}
	if fi, err := os.Stat(filepath.Join(dir2, wal.SegmentFileName(1, 2, testSeg)+PartialSuffix)); err == nil && fi.Size() != 0 {
		t.Fatalf("preallocated segment at the end of WAL kept %d bytes", fi.Size())
	}
}

// Preallocation on a disk without room for it is skipped: the writer
// creates its segments itself, as before, and a full disk is still
// ErrNoSpace, never a broken writer.
func TestPreallocDiskFull(t *testing.T) {
	fs := testenv.SmallFS(t, 3*testSeg/2, 64)
	dir := filepath.Join(fs, "tl")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	start := wal.LSN(testSeg)
	data, _ := build(start, testSeg+testSeg/4)
	w, err := OpenWriter(dir, 1, testSeg, start)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	off := 0
	var werr error
	for off < len(data) {
		n := min(7919, len(data)-off)
		if werr = w.Write(start+wal.LSN(off), data[off:off+n]); werr != nil {
			break
		}
		off += n
		w.settle()
	}
	if off <= testSeg {
		t.Fatalf("wrote only %d bytes before %v: the preallocation took the WAL's space", off, werr)
	}
	if werr != nil && !IsNoSpace(werr) {
		t.Fatalf("write: %v", werr)
	}
	if d, err := w.Sync(); err != nil || d != start+wal.LSN(off) {
		t.Fatalf("Sync = %s, %v", d, err)
	}
	segs, _ := ListSegments(dir, testSeg)
	for _, s := range segs {
		if s.SegNo > wal.SegmentNo(start+wal.LSN(off), testSeg) {
			t.Fatalf("a preallocated segment %s is left on the full disk", s.Name)
		}
	}
}

// BenchmarkWriterAppend is the receive side of one XLogData message: an
// 8 KiB append (the fdatasync is the flusher's, not measured here). It
// must not allocate, including at segment switches with preallocation.
func BenchmarkWriterAppend(b *testing.B) {
	dir := b.TempDir()
	start := wal.LSN(testSeg)
	w, err := OpenWriter(dir, 1, testSeg, start)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	msg := make([]byte, 8<<10)
	pos := start
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := w.Write(pos, msg); err != nil {
			b.Fatal(err)
		}
		pos += wal.LSN(len(msg))
		if i%128 == 127 { // one segment of 1 MiB: seal it, as a flush does
			b.StopTimer()
			if _, err := w.Sync(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
}

// A crash inside the last page of a preallocated segment, in a record that
// carries on into the next segment: the page was written only in part,
// the rest still the zeros of the preallocation, and the scan cannot tell
// those from record data. Recover keeps the .partial only to the start of
// that record, never to the segment's end: the zeros must not become WAL.
func TestRecoverPreallocatedContinues(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	b := waltest.NewSegmentBuilder(start, testSeg, testSysID, 1)
	for b.Pos() < start+testSeg-3000 {
		b.AddRecord(10, 0, 500)
	}
	spanning := b.AddRecord(10, 0, 6000)
	b.FillPageHeaders()
	if b.Pos() <= start+testSeg {
		t.Fatalf("record at %s ends at %s, inside the segment", spanning, b.Pos())
	}
	seg := append([]byte(nil), b.Segment(0)...)
	clear(seg[testSeg-1000:])
	cur := filepath.Join(dir, wal.SegmentFileName(1, 1, testSeg)+PartialSuffix)
	next := filepath.Join(dir, wal.SegmentFileName(1, 2, testSeg)+PartialSuffix)
	if err := os.WriteFile(cur, seg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(next, make([]byte, testSeg), 0o600); err != nil {
		t.Fatal(err)
	}
	if scan, err := wal.ScanSegment(bytes.NewReader(seg), testSeg, start, wal.ScanOptions{SegSize: testSeg, SysID: testSysID}); err != nil || !scan.Continues {
		t.Fatalf("scan = %+v, %v: the test needs a segment the scan calls consistent to its end", scan, err)
	}
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	if res.End != spanning || res.Renamed != "" {
		t.Fatalf("Recover = %+v, want end %s (the unfinished record's start), nothing renamed", res, spanning)
	}
	if fi, err := os.Stat(cur); err != nil || fi.Size() != int64(wal.SegmentOffset(spanning, testSeg)) {
		t.Fatalf("segment after Recover: %v, %v", fi, err)
	}
	if _, err := os.Stat(next); !os.IsNotExist(err) {
		t.Fatalf("next segment still there: %v", err)
	}
}

// A writer that starts inside a segment that was not preallocated (after a
// restart) fills the rest of it with zeros behind its back while it keeps
// writing in small pieces: no zero lands on WAL, the file ends up full-size,
// and a crash then recovers exactly the WAL written.
func TestTailFill(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, recs := build(start, testSeg-testSeg/8)
	third := len(data) / 3
	w := writeAll(t, dir, start, data[:third])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, wal.SegmentFileName(1, 1, testSeg)+PartialSuffix)
	if fi, err := os.Stat(path); err != nil || fi.Size() != int64(third) {
		t.Fatalf("after Close: %v, %v; want the file cut to the written end", fi, err)
	}
	w, err := OpenWriter(dir, 1, testSeg, start+wal.LSN(third))
	if err != nil {
		t.Fatal(err)
	}
	// Small writes while the fill runs (the race detector watches the
	// writer's lock between them).
	for pos := third; pos < len(data); {
		n := min(512, len(data)-pos)
		if err := w.Write(start+wal.LSN(pos), data[pos:pos+n]); err != nil {
			t.Fatal(err)
		}
		pos += n
	}
	if _, err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.settle()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != testSeg || !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("segment after the fill: %d bytes, WAL intact %v", len(got), bytes.Equal(got[:min(len(got), len(data))], data))
	}
	if bytes.ContainsFunc(got[len(data):], func(r rune) bool { return r != 0 }) {
		t.Fatal("the filled tail holds something else than zeros")
	}
	// A crash (no Close): recovery ends at the last record written.
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	if want := start + wal.LSN(len(data)); res.End != want {
		t.Fatalf("Recover end %s, want %s (last record at %s)", res.End, want, recs[len(recs)-1])
	}
	w.stopTailFill()
}

// While catching up, segments are written once: the next segment is
// created ahead of the writer but empty, the current one grows with the
// WAL and gets no tail fill, and what is written is exactly the WAL. Once
// caught up, the current segment is zero-filled to its full size in the
// background, the empty segment created ahead is filled when the writer
// enters it, and later ones are zero-filled ahead again. A crash while
// catching up recovers to the last durable record.
func TestCatchingUpWritesOnce(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, recs := build(start, 3*testSeg+testSeg/2)
	w, err := OpenWriter(dir, 1, testSeg, start)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	seg := func(segno uint64) string { return filepath.Join(dir, wal.SegmentFileName(1, segno, testSeg)) }
	size := func(path string) int64 {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	write := func(from, to int) {
		t.Helper()
		for off := from; off < to; {
			n := min(7919, to-off)
			if err := w.Write(start+wal.LSN(off), data[off:off+n]); err != nil {
				t.Fatal(err)
			}
			off += n
		}
		if d, err := w.Sync(); err != nil || d != start+wal.LSN(to) {
			t.Fatalf("Sync = %s, %v; want %s", d, err, start+wal.LSN(to))
		}
		w.settle()
	}

	w.SetCatchingUp(true)
	half := 2*testSeg + testSeg/2 // segments 1 and 2 complete, 3 half
	write(0, half)
	for segno := uint64(1); segno <= 2; segno++ {
		got, err := os.ReadFile(seg(segno))
		if err != nil || !bytes.Equal(got, data[(segno-1)*testSeg:segno*testSeg]) {
			t.Fatalf("segment %d: %d bytes, %v; want its WAL", segno, len(got), err)
		}
	}
	if got := size(seg(3) + PartialSuffix); got != testSeg/2 {
		t.Fatalf("current segment while catching up: %d bytes, want the %d written (no zeros ahead)", got, testSeg/2)
	}
	if got := size(seg(4) + PartialSuffix); got != 0 {
		t.Fatalf("next segment while catching up: %d bytes, want created empty", got)
	}

	// A crash now (a copy of the directory as it is): Recover finds the
	// last record written.
	crash := t.TempDir()
	for _, name := range []string{wal.SegmentFileName(1, 1, testSeg), wal.SegmentFileName(1, 2, testSeg),
		wal.SegmentFileName(1, 3, testSeg) + PartialSuffix, wal.SegmentFileName(1, 4, testSeg) + PartialSuffix} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(crash, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctl := testControl(start)
	ctl.FlushLSN = start + wal.LSN(half)
	res, err := Recover(crash, ctl)
	if err != nil {
		t.Fatal(err)
	}
	var last wal.LSN
	for _, r := range recs {
		if r < start+wal.LSN(half) {
			last = r
		}
	}
	if res.End < last || res.End > start+wal.LSN(half) {
		t.Fatalf("Recover after a crash while catching up: end %s, want between the last record's start %s and the flush %s", res.End, last, start+wal.LSN(half))
	}

	// Caught up: the current segment is zero-filled past the WAL.
	w.SetCatchingUp(false)
	w.settle()
	if got := size(seg(3) + PartialSuffix); got != testSeg {
		t.Fatalf("current segment once caught up: %d bytes, want filled to %d", got, testSeg)
	}
	write(half, len(data)) // into segment 4, created empty while catching up
	if got := size(seg(4) + PartialSuffix); got != testSeg {
		t.Fatalf("segment created empty, entered after catching up: %d bytes, want filled to %d", got, testSeg)
	}
	if got := size(seg(5) + PartialSuffix); got != testSeg {
		t.Fatalf("next segment once caught up: %d bytes, want preallocated whole", got)
	}
	got, err := os.ReadFile(seg(3))
	if err != nil || !bytes.Equal(got, data[2*testSeg:3*testSeg]) {
		t.Fatalf("segment 3: %d bytes, %v; want its WAL", len(got), err)
	}
	got, err = os.ReadFile(seg(4) + PartialSuffix)
	tail := len(data) - 3*testSeg
	if err != nil || len(got) != testSeg || !bytes.Equal(got[:tail], data[3*testSeg:]) || !bytes.Equal(got[tail:], make([]byte, testSeg-tail)) {
		t.Fatalf("segment 4: %d bytes, %v; want its WAL, then zeros", len(got), err)
	}
}
