package walstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
)

const (
	testSeg   = 1 << 20
	testSysID = 7710588842466534209
)

func testControl(start wal.LSN) Control {
	return Control{TenantID: "t", TimelineID: "l", SystemID: testSysID, WalSegSize: testSeg, TLI: 1, StartLSN: start, FlushLSN: start}
}

// build returns valid WAL from start covering about n bytes, and the record starts.
func build(start wal.LSN, n int) ([]byte, []wal.LSN) {
	b := waltest.NewSegmentBuilder(start, testSeg, testSysID, 1)
	var recs []wal.LSN
	for i := 0; b.Offset(b.Pos()) < n; i++ {
		recs = append(recs, b.AddRecord(10, 0, 100+(i*37)%3000))
	}
	// Only the bytes up to the end of the last record: the builder may have
	// laid out empty pages beyond it.
	end := b.Offset(b.Pos())
	end = (end + 7) &^ 7
	return b.Bytes()[:end], recs
}

func writeAll(t *testing.T, dir string, start wal.LSN, data []byte) *Writer {
	t.Helper()
	w, err := OpenWriter(dir, 1, testSeg, start)
	if err != nil {
		t.Fatal(err)
	}
	// Close waits for a preallocation or tail fill still under way, which
	// would otherwise create files while TempDir removes the directory
	// (the cleanups run in reverse order: this one before TempDir's).
	// Closing twice is harmless.
	t.Cleanup(func() { w.Close() })
	// Several writes of odd sizes, as messages arrive.
	for off := 0; off < len(data); {
		n := 7919
		if off+n > len(data) {
			n = len(data) - off
		}
		if err := w.Write(start+wal.LSN(off), data[off:off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if d, err := w.Sync(); err != nil || d != start+wal.LSN(len(data)) {
		t.Fatalf("Sync = %s, %v; want %s", d, err, start+wal.LSN(len(data)))
	}
	return w
}

func TestWriterSegmentsAndRename(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, _ := build(start, 2*testSeg+5000)
	w := writeAll(t, dir, start, data)
	defer w.Close()
	w.settle()
	files, err := ListSegments(dir, testSeg)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 || files[0].Partial || files[1].Partial || !files[2].Partial || !files[3].Partial || files[3].Size != testSeg {
		t.Fatalf("files %+v: want two complete segments, one .partial and the next one preallocated", files)
	}
	got, _ := os.ReadFile(filepath.Join(dir, files[0].Name))
	if string(got) != string(data[:testSeg]) {
		t.Fatal("first segment content differs")
	}
	// Overlapping rewrite is skipped; a gap is refused.
	if err := w.Write(start, data[:100]); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(start+wal.LSN(len(data))+8, []byte{1}); !errors.Is(err, ErrNotContiguous) {
		t.Fatalf("gap: got %v", err)
	}
}

func TestRecoverTruncatesGarbage(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, recs := build(start, testSeg+300000)
	w := writeAll(t, dir, start, data)
	w.Close()
	validEnd := start + wal.LSN(len(data))
	// A torn write: garbage after the last record.
	f, _ := os.OpenFile(filepath.Join(dir, wal.SegmentFileName(1, 2, testSeg)+PartialSuffix), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("this is not WAL, this is not WAL"))
	f.Close()
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	if res.End != validEnd {
		t.Fatalf("End = %s, want %s (last record %s)", res.End, validEnd, recs[len(recs)-1])
	}
	fi, _ := os.Stat(filepath.Join(dir, wal.SegmentFileName(1, 2, testSeg)+PartialSuffix))
	if fi.Size() != int64(validEnd-2*testSeg) {
		t.Fatalf("partial not truncated: %d bytes", fi.Size())
	}
}

func TestRecoverCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, recs := build(start, 200000)
	// Corrupt a byte inside the 10th-from-last record.
	bad := recs[len(recs)-10]
	data[int(bad-start)+30] ^= 0xFF
	w := writeAll(t, dir, start, data)
	w.Close()
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	if res.End != bad {
		t.Fatalf("End = %s, want the corrupt record's start %s", res.End, bad)
	}
}

func TestRecoverKeepsDurableMidRecord(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, _ := build(start, 100000)
	// The upstream flushes at page boundaries, possibly inside a record:
	// everything up to the control file's flush LSN was acknowledged.
	cut := 12 * wal.BlockSize
	w := writeAll(t, dir, start, data[:cut])
	w.Close()
	ctl := testControl(start)
	ctl.FlushLSN = start + wal.LSN(cut)
	res, err := Recover(dir, ctl)
	if err != nil {
		t.Fatal(err)
	}
	if res.End != ctl.FlushLSN {
		t.Fatalf("End = %s, want the acknowledged %s", res.End, ctl.FlushLSN)
	}
}

func TestRecoverRenamesCompletePartial(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	b := waltest.NewSegmentBuilder(start, testSeg, testSysID, 1)
	b.AddRecord(10, 0, 500)
	b.AddSwitch()
	b.FillPageHeaders()
	seg := make([]byte, testSeg)
	copy(seg, b.Bytes())
	name := wal.SegmentFileName(1, 1, testSeg)
	os.WriteFile(filepath.Join(dir, name+PartialSuffix), seg, 0o600)
	os.WriteFile(filepath.Join(dir, wal.SegmentFileName(1, 2, testSeg)+PartialSuffix), nil, 0o600)
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	if res.End != start+testSeg || res.Renamed != name {
		t.Fatalf("got %+v, want end %s and %s renamed", res, start+testSeg, name)
	}
	if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func TestControlRoundTripAndCorruption(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, ControlFileName)
	if _, err := ReadControl(p); !errors.Is(err, ErrNoControl) {
		t.Fatalf("missing: %v", err)
	}
	c := testControl(0x1000000)
	c.ServerVersion = "15.18"
	if err := WriteControl(p, c); err != nil {
		t.Fatal(err)
	}
	got, err := ReadControl(p)
	if err != nil || got != c {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	b, _ := os.ReadFile(p)
	for i := range b {
		bad := append([]byte(nil), b...)
		bad[i] ^= 0x40
		if _, err := DecodeControl(bad); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
}

func TestLockExcludesSecondProcess(t *testing.T) {
	dir := t.TempDir()
	l, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	l.Unlock()
	l2, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	l2.Unlock()
}

// FuzzDecodeControl: arbitrary bytes from disk never panic the decoder.
func FuzzDecodeControl(f *testing.F) {
	b, _ := EncodeControl(testControl(0x1000000))
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeControl(b)
		if err == nil {
			if _, err := EncodeControl(c); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A failed write breaks the writer for good: nothing after it may be
// written at a shifted offset, synced or acknowledged.
func TestWriterBreaksOnWriteError(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, _ := build(start, 20000)
	w := writeAll(t, dir, start, data[:8192])
	w.cur.Close() // the next write fails
	if err := w.Write(start+8192, data[8192:]); !errors.Is(err, ErrBroken) {
		t.Fatalf("write after failure: %v, want ErrBroken", err)
	}
	if err := w.Write(start+8192, data[8192:]); !errors.Is(err, ErrBroken) {
		t.Fatalf("retry: %v, want ErrBroken", err)
	}
	if d, err := w.Sync(); !errors.Is(err, ErrBroken) || d != start+8192 {
		t.Fatalf("Sync after failure: %s %v, want %s and ErrBroken", d, err, start+8192)
	}
}

// A crash after a segment filled up but before the flush that fsyncs and
// renames it leaves it as ".partial" with the next one begun. Nothing past
// it was acknowledged (Sync renames a sealed segment before it makes a
// later byte durable), and its size proves nothing (it may have been
// preallocated): recovery keeps it to the end of its last complete record
// and removes the next one; the upstream sends the rest again.
func TestRecoverFilledPartialNotTrusted(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, _ := build(start, testSeg+200000)
	seg1 := filepath.Join(dir, wal.SegmentFileName(1, 1, testSeg))
	seg2 := filepath.Join(dir, wal.SegmentFileName(1, 2, testSeg))
	if err := os.WriteFile(seg1+PartialSuffix, data[:testSeg], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg2+PartialSuffix, data[testSeg:], 0o600); err != nil {
		t.Fatal(err)
	}
	scan, err := wal.ScanSegment(bytes.NewReader(data[:testSeg]), testSeg, start, wal.ScanOptions{SegSize: testSeg, SysID: testSysID})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	want := scan.End
	if scan.Continues && want >= start+testSeg {
		t.Fatalf("scan end %s: the test needs a record across the boundary", want)
	}
	if res.End != want || res.Renamed != "" {
		t.Fatalf("Recover = %+v, want end %s and nothing renamed", res, want)
	}
	if fi, err := os.Stat(seg1 + PartialSuffix); err != nil || fi.Size() != int64(want-start) {
		t.Fatalf("segment after Recover: %v, %v", fi, err)
	}
	if _, err := os.Stat(seg2 + PartialSuffix); !os.IsNotExist(err) {
		t.Fatalf("the next segment is still there: %v", err)
	}

	// The same with the flush recorded in the control file past the first
	// segment: acknowledged, so kept, renamed, and recovery goes on.
	dir2 := t.TempDir()
	os.WriteFile(filepath.Join(dir2, filepath.Base(seg1)+PartialSuffix), data[:testSeg], 0o600)
	os.WriteFile(filepath.Join(dir2, filepath.Base(seg2)+PartialSuffix), data[testSeg:], 0o600)
	ctl := testControl(start)
	ctl.FlushLSN = start + testSeg + 100
	res, err = Recover(dir2, ctl)
	if err != nil || res.End != start+wal.LSN(len(data)) {
		t.Fatalf("Recover with the flush recorded = %+v, %v; want end %s", res, err, start+wal.LSN(len(data)))
	}
}

// After a power loss the pages of a later segment may have reached the
// disk while the end of an earlier, unsynced one did not. Valid WAL ends
// in the earlier one, whatever the later one holds: it is removed.
func TestRecoverNeverTrustsALaterSegmentAlone(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	data, _ := build(start, testSeg+200000)
	first := append([]byte(nil), data[:testSeg]...)
	clear(first[testSeg/2:]) // the second half never reached the disk
	seg2 := filepath.Join(dir, wal.SegmentFileName(1, 2, testSeg))
	if err := os.WriteFile(filepath.Join(dir, wal.SegmentFileName(1, 1, testSeg))+PartialSuffix, first, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seg2+PartialSuffix, data[testSeg:], 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	if res.End >= start+testSeg/2 || res.End <= start {
		t.Fatalf("End = %s, want inside the first half of segment 1", res.End)
	}
	if _, err := os.Stat(seg2 + PartialSuffix); !os.IsNotExist(err) {
		t.Fatalf("the later segment is still there: %v", err)
	}
}

// A crash after an XLOG_SWITCH record but before the rest of its segment
// (which the upstream sends too) was on disk: the end of WAL is the end of
// the bytes present, not the next segment's start, so that the writer
// completes the segment and readers can read through it.
func TestRecoverShortSegmentAfterSwitch(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(testSeg)
	b := waltest.NewSegmentBuilder(start, testSeg, testSysID, 1)
	for i := 0; i < 20; i++ {
		b.AddRecord(10, 0, 1000)
	}
	b.AddSwitch()
	seg := b.Segment(0)
	have := 300000 // past the switch record (about 21 kB in), short of the segment's end
	if err := os.WriteFile(filepath.Join(dir, wal.SegmentFileName(1, 1, testSeg)+PartialSuffix), seg[:have], 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Recover(dir, testControl(start))
	if err != nil {
		t.Fatal(err)
	}
	if res.End != start+wal.LSN(have) {
		t.Fatalf("End = %s, want %s (the bytes present)", res.End, start+wal.LSN(have))
	}
	w, err := OpenWriter(dir, 1, testSeg, res.End)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Write(res.End, seg[have:]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, wal.SegmentFileName(1, 1, testSeg)))
	if err != nil || !bytes.Equal(got, seg) {
		t.Fatalf("completed segment: %v, equal %v", err, bytes.Equal(got, seg))
	}
}
