package walstore_test

import (
	"os"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// A segment the writer finishes is refolded (Refold) in the background:
// once the writer is closed, the local tier hands out the finished
// segment's bytes through a mapping with huge entries, where the kernel
// maps a file written in 2 MiB pieces so; with SetRefold(false) it never
// does, the segment being written in smaller pieces.
func TestWriterRefoldsFinishedSegments(t *testing.T) {
	const seg = 8 << 20
	kernelHuge := false
	t.Cleanup(func() { walstore.SetRefold(true) })
	for _, refold := range []bool{false, true} {
		walstore.SetRefold(refold)
		dir := t.TempDir()
		start := wal.LSN(seg)
		w, err := walstore.OpenWriter(dir, 1, seg, start)
		if err != nil {
			t.Fatal(err)
		}
		data := waltest.Pattern(start, seg+seg/2)
		// The receiver's pieces: XLogData of 128 KiB.
		for off := 0; off < len(data); off += 128 << 10 {
			if err := w.Write(start+wal.LSN(off), data[off:min(off+128<<10, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		w.WaitRefolds() // Close would skip those not started
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !refold {
			// What this kernel can do, probed with a file written in
			// 2 MiB pieces in the same directory.
			probe := walstore.Dir(dir).File(wal.SegmentFileName(1, 5, seg))
			p := waltest.Pattern(5*seg, seg)
			f, err := os.Create(probe)
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off < seg; off += 2 << 20 {
				if _, err := f.WriteAt(p[off:off+2<<20], int64(off)); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			lt := walreader.NewLocalTier(walstore.Dir(dir), seg)
			_, _, m, err := lt.Locate(1, 5*seg+(2<<20), 1<<20)
			kernelHuge = err == nil && m != nil
			lt.Close()
			t.Logf("this kernel maps a file written in 2 MiB pieces with huge entries: %v", kernelHuge)
		}
		lt := walreader.NewLocalTier(walstore.Dir(dir), seg)
		for off := int64(0); off < seg; off += 2 << 20 {
			f, at, m, err := lt.Locate(1, start+wal.LSN(off), 1<<20)
			if err != nil || f == nil || at != off {
				t.Fatalf("Locate at %d: %v, %d, %v", off, f, at, err)
			}
			switch {
			case !refold && m != nil:
				t.Fatalf("refolding off: segment mapped with huge entries at %d, though written in 128 KiB pieces", off)
			case refold && kernelHuge && m == nil:
				t.Fatalf("finished segment not mapped with huge entries at %d after the writer closed", off)
			}
		}
		lt.Close()
	}
}
