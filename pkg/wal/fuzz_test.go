package wal_test

import (
	"bytes"
	"math"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
)

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "0/9000F8", "16/B374D848", "ffffffff/FFFFFFFF", "", "1/", "/1", "G/0", "123456789/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := wal.ParseLSN(s)
		if err != nil {
			return
		}
		str := l.String()
		if l2, err := wal.ParseLSN(str); err != nil || l2 != l {
			t.Fatalf("%q -> %v -> %v, %v", s, str, l2, err)
		}
		if got := string(l.AppendText(nil)); got != str {
			t.Fatalf("AppendText %q != String %q", got, str)
		}
		if len(s) < len(str) {
			t.Fatalf("canonical %q longer than input %q", str, s)
		}
	})
}

// fuzzSeeds returns generated WAL prefixes (1 MiB segments) and their
// segment numbers.
func fuzzSeeds() (seeds [][]byte, segnos []uint32) {
	const segSize = 1 << 20
	add := func(b *waltest.Builder, seg int) {
		data := b.Segment(seg)
		n := min(len(b.Bytes())-seg*segSize, 3*wal.BlockSize)
		seeds = append(seeds, data[:n])
		segnos = append(segnos, uint32(wal.SegmentNo(b.SegmentStart(seg), segSize)))
	}
	// Small records, one spanning a page.
	b := waltest.NewSegmentBuilder(3*segSize, segSize, 99, 1)
	for _, n := range []int{0, 10, 100, 8000, 30} {
		b.AddRecord(waltest.RmHeap, 0, n)
	}
	add(b, 0)
	// A switch.
	b = waltest.NewSegmentBuilder(4*segSize, segSize, 99, 2)
	b.AddRecord(waltest.RmHeap, 0, 50)
	b.AddSwitch()
	add(b, 0)
	// A continuation from the previous segment.
	b = waltest.NewSegmentBuilder(5*segSize, segSize, 99, 1)
	for b.Pos() < 6*segSize-5000 {
		b.AddRecord(waltest.RmHeap, 0, 3000)
	}
	b.AddRecord(waltest.RmHeap, 0, 12000)
	b.AddRecord(waltest.RmHeap, 0, 10)
	add(b, 1)
	// An overwritten contrecord.
	b = waltest.NewSegmentBuilder(7*segSize, segSize, 99, 1)
	b.AddRecord(waltest.RmHeap, 0, 10)
	b.AddAbortedRecord(waltest.RmHeap, 0, 9000)
	b.AddRecord(waltest.RmXLog, wal.XLogOverwrite, 16)
	b.AddRecord(waltest.RmHeap, 0, 10)
	add(b, 0)
	return seeds, segnos
}

func FuzzScanSegment(f *testing.F) {
	seeds, segnos := fuzzSeeds()
	for i, s := range seeds {
		f.Add(s, segnos[i], uint16(0), uint64(0))
	}
	f.Add([]byte{}, uint32(0), uint16(0), uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, segno uint32, magic uint16, sysID uint64) {
		const segSize = 1 << 20
		segStart := wal.LSN(uint64(segno) * segSize)
		opts := wal.ScanOptions{SegSize: segSize, SysID: sysID, Magic: magic}
		res, err := wal.ScanSegment(bytes.NewReader(data), int64(len(data)), segStart, opts)
		if err != nil {
			t.Fatalf("error: %v", err)
		}
		segEnd := segStart + segSize
		if res.End < segStart || res.End > segEnd || res.End%8 != 0 {
			t.Fatalf("End %v outside [%v, %v] or unaligned", res.End, segStart, segEnd)
		}
		if !res.Switch && uint64(res.End-segStart) > uint64(len(data)) {
			t.Fatalf("End %v beyond %d bytes", res.End, len(data))
		}
		if res.Switch && res.End != segEnd {
			t.Fatalf("Switch with End %v", res.End)
		}
		if res.LastRecord != wal.InvalidLSN && (res.LastRecord < segStart || res.LastRecord >= res.End) {
			t.Fatalf("LastRecord %v, End %v", res.LastRecord, res.End)
		}
		if res.Continues && len(data) < segSize {
			t.Fatal("Continues on a partial segment")
		}
		// Bytes beyond size do not matter.
		more := append(append([]byte(nil), data...), 0x10, 0xd1, 1, 2, 3, 4, 5, 6, 7, 8)
		res2, err := wal.ScanSegment(bytes.NewReader(more), int64(len(data)), segStart, opts)
		if err != nil || res2 != res {
			t.Fatalf("with trailing bytes: %+v %v, want %+v", res2, err, res)
		}
		// Cutting the file at End keeps the result.
		if !res.Switch && !res.Continues && res.End > segStart {
			n := int64(res.End - segStart)
			res3, err := wal.ScanSegment(bytes.NewReader(data[:n]), n, segStart, opts)
			if err != nil || res3 != res {
				t.Fatalf("cut at End: %+v %v, want %+v", res3, err, res)
			}
		}
	})
}

func FuzzParseHistory(f *testing.F) {
	for _, s := range []string{"", history2, history3, history4, "# c\n\n1\t0/1\tx\n", "1\t0/9000F8", "2\t0/1\n1\t0/2\n"} {
		f.Add([]byte(s), uint32(5))
	}
	f.Add([]byte(history4), uint32(4))
	f.Fuzz(func(t *testing.T, content []byte, tli uint32) {
		hist, err := wal.ParseHistory(content, tli)
		if err != nil {
			return
		}
		if len(hist) == 0 {
			t.Fatal("empty history")
		}
		last := hist[len(hist)-1]
		if last.TLI != tli || last.End != math.MaxUint64 || hist[0].Begin != 0 {
			t.Fatalf("bad ends: %v", hist)
		}
		for i, e := range hist {
			if e.Begin > e.End {
				t.Fatalf("entry %d: %v", i, e)
			}
			if i > 0 && (e.TLI <= hist[i-1].TLI || e.Begin != hist[i-1].End) {
				t.Fatalf("entries %d, %d: %v", i-1, i, hist)
			}
			if e.Begin < e.End {
				if got, ok := wal.TLIOfPoint(hist, e.Begin); !ok || got != e.TLI {
					t.Fatalf("TLIOfPoint(%v) = %d, %v in %v", e.Begin, got, ok, hist)
				}
			}
			end, next, ok := wal.SwitchPoint(hist, e.TLI)
			if !ok || end != e.End || (i+1 < len(hist)) != (next != 0) {
				t.Fatalf("SwitchPoint(%d) = %v %d %v in %v", e.TLI, end, next, ok, hist)
			}
		}
	})
}
