package walstore

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// A crash between recording the new local start and unlinking the files
// below it leaves files the control file no longer claims; Open removes
// them, and never anything at or above the local start.
func TestOpenCompletesInterruptedRemoval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tenant", "timeline")
	o, err := Open(path, "tenant", "timeline")
	if err != nil {
		t.Fatal(err)
	}
	if !o.Created || o.Writer != nil {
		t.Fatalf("new directory: created=%v writer=%v", o.Created, o.Writer)
	}
	start := wal.LSN(testSeg)
	data, _ := build(start, 3*testSeg+5000)
	w := writeAll(t, path, start, data)
	w.Close()
	ctl := testControl(start)
	ctl.TenantID, ctl.TimelineID = "tenant", "timeline"
	ctl.FlushLSN = start + wal.LSN(len(data))
	ctl.StartLSN = 3 * testSeg // removal recorded, files 1 and 2 still there
	d := Dir(path)
	if err := d.WriteControl(ctl); err != nil {
		t.Fatal(err)
	}
	// A temp file of an interrupted atomic write.
	if err := os.WriteFile(d.File(ControlFileName+".tmp"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o, err = Open(path, "tenant", "timeline")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Writer.Close()
	if len(o.RemovedOld) != 2 || len(o.RemovedTemp) != 1 {
		t.Fatalf("removed old %v, temp %v", o.RemovedOld, o.RemovedTemp)
	}
	files, _ := d.ListSegments(testSeg)
	if len(files) != 2 || files[0].SegNo != 3 || files[1].SegNo != 4 || !files[1].Partial {
		t.Fatalf("files after open: %+v", files)
	}
	if o.Control.FlushLSN != start+wal.LSN(len(data)) || o.Control.BackupLSN != 3*testSeg {
		t.Fatalf("control after open: flush %s backup %s", o.Control.FlushLSN, o.Control.BackupLSN)
	}
	sealed, _ := d.SealedSegments(testSeg)
	if len(sealed) != 1 || sealed[0].SegNo != 3 {
		t.Fatalf("sealed: %+v", sealed)
	}
}

func TestOpenSegmentFinalOrPartial(t *testing.T) {
	dir := t.TempDir()
	d := Dir(dir)
	start := wal.LSN(testSeg)
	data, _ := build(start, testSeg+5000)
	w := writeAll(t, dir, start, data)
	defer w.Close()
	for segno, partial := range map[uint64]bool{1: false, 2: true} {
		f, err := d.OpenSegment(1, segno, testSeg)
		if err != nil {
			t.Fatalf("segment %d: %v", segno, err)
		}
		fi, _ := f.Stat()
		f.Close()
		if got := filepath.Ext(fi.Name()) == PartialSuffix; got != partial {
			t.Fatalf("segment %d opened %s", segno, fi.Name())
		}
	}
	// (Segment 3 is the writer's preallocated next one.)
	if _, err := d.OpenSegment(1, 4, testSeg); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing segment: %v", err)
	}
	if _, err := d.OpenSegment(2, 1, testSeg); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("other timeline: %v", err)
	}
}

func TestHistories(t *testing.T) {
	d := Dir(t.TempDir())
	if err := d.SaveHistory(3, []byte("1\t0/3000000\tno recovery target specified\n2\t0/5000000\tx\n")); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveHistory(2, []byte("1\t0/3000000\tno recovery target specified\n")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(d.File("0000000X.history"), nil, 0o600)
	tlis, err := d.Histories()
	if err != nil || len(tlis) != 2 || tlis[0] != 2 || tlis[1] != 3 {
		t.Fatalf("Histories = %v, %v", tlis, err)
	}
	h := d.HistoryEntries(3)
	if len(h) != 3 || h[1].TLI != 2 || h[1].Begin != 0x3000000 || h[1].End != 0x5000000 {
		t.Fatalf("HistoryEntries(3) = %+v", h)
	}
	if h := d.HistoryEntries(7); len(h) != 1 || h[0].TLI != 7 {
		t.Fatalf("HistoryEntries without a file = %+v", h)
	}
}

// At a switch, only WAL past the switch point is diverged: the old
// timeline's file of the switch segment is removed when it holds nothing
// past the switch point (its bytes begin the new timeline's file), and set
// aside when it does; later old-timeline files are always set aside.
func TestSetAsideDivergedOnlyPastTheSwitchPoint(t *testing.T) {
	const seg = 1 << 20
	hist, err := wal.ParseHistory([]byte("1\t0/300100\tx\n"), 2)
	if err != nil {
		t.Fatal(err)
	}
	write := func(d Dir, name string, upTo int) {
		b := make([]byte, seg)
		for i := 0; i < upTo; i++ {
			b[i] = 0xAB
		}
		if err := os.WriteFile(d.File(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	// Nothing past the switch point (0x100 into segment 3).
	clean := Dir(t.TempDir())
	write(clean, "000000010000000000000002", seg)
	write(clean, "000000010000000000000003.partial", 0x100)
	moved, err := clean.SetAsideDiverged(2, hist, seg)
	if err != nil || len(moved) != 0 {
		t.Fatalf("nothing diverged: moved %v, %v", moved, err)
	}
	if exists(clean.File("000000010000000000000003.partial")) || exists(clean.File(DivergedDir)) {
		t.Fatal("the old switch segment holding nothing past the switch point was kept or set aside")
	}
	if !exists(clean.File("000000010000000000000002")) {
		t.Fatal("an old segment before the switch point was touched")
	}

	// WAL past the switch point, and a later old segment.
	div := Dir(t.TempDir())
	write(div, "000000010000000000000003", seg)
	write(div, "000000010000000000000004.partial", 10)
	moved, err = div.SetAsideDiverged(2, hist, seg)
	if err != nil || len(moved) != 2 {
		t.Fatalf("diverged: moved %v, %v", moved, err)
	}
	for _, n := range moved {
		if !exists(filepath.Join(div.File(DivergedDir), n)) {
			t.Fatalf("%s not in %s", n, DivergedDir)
		}
	}
}
