package wal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
)

const testSysID = 7300000000000000001

// stream is a Builder that remembers where each record starts and ends.
type stream struct {
	*waltest.Builder
	recs []recSpan
}

type recSpan struct{ start, end, rawEnd wal.LSN } // end is MAXALIGNed

func newStream(segStart wal.LSN, segSize uint64) *stream {
	return &stream{Builder: waltest.NewSegmentBuilder(segStart, segSize, testSysID, 1)}
}

func (s *stream) add(payload int) wal.LSN {
	start := s.AddRecord(waltest.RmHeap, 0x10, payload)
	s.track(start)
	return start
}

// track records the span of the record written last, starting at start.
func (s *stream) track(start wal.LSN) {
	s.trackLen(start, uint64(len(reassemble(nil, s.Builder, start))))
}

// trackLen is track for a record of tot bytes (whatever its xl_tot_len says).
func (s *stream) trackLen(start wal.LSN, tot uint64) {
	raw := streamLSN(s.Builder, start, tot-1) + 1
	s.recs = append(s.recs, recSpan{start, s.Pos(), raw})
}

func (s *stream) fillTo(t *testing.T, target wal.LSN) {
	t.Helper()
	n := 0
	for s.Pos() < target {
		p := uint64(s.Pos())
		if p%wal.BlockSize == 0 {
			p += hdrSize(p, s.SegSize())
		}
		end := pageEnd(p)
		switch {
		case uint64(target) <= end:
			s.add(int(uint64(target) - p - wal.RecordHeaderSize))
		case end-p >= wal.RecordHeaderSize:
			s.add(int(end - p - wal.RecordHeaderSize))
		default:
			s.add(int(end - p))
		}
		if n++; n > 1e6 {
			t.Fatal("fillTo loops")
		}
	}
	if s.Pos() != target {
		t.Fatalf("fillTo: at %v, want %v", s.Pos(), target)
	}
}

// expect returns End and LastRecord for segment segStart when the file
// ends at cut: the last record starting in the segment whose aligned end is
// at or before cut.
func (s *stream) expect(segStart, cut wal.LSN) (end, last wal.LSN) {
	return s.expectRaw(segStart, cut, false)
}

// expectRaw is expect, but with raw set the alignment padding need not be
// present (the file continues with other bytes, e.g. zeros).
func (s *stream) expectRaw(segStart, cut wal.LSN, raw bool) (end, last wal.LSN) {
	end = segStart
	for _, r := range s.recs {
		e := r.end
		if raw {
			e = r.rawEnd
		}
		if r.start >= segStart && e <= cut && r.start < segStart+wal.LSN(s.SegSize()) {
			end, last = r.end, r.start
		}
	}
	return end, last
}

func scan(t *testing.T, data []byte, size int, segStart wal.LSN, opts wal.ScanOptions) wal.ScanResult {
	t.Helper()
	res, err := wal.ScanSegment(bytes.NewReader(data), int64(size), segStart, opts)
	if err != nil {
		t.Fatalf("ScanSegment: %v", err)
	}
	if res.End < segStart || res.End > segStart+wal.LSN(opts.SegSize) {
		t.Fatalf("End %v outside segment %v", res.End, segStart)
	}
	if !res.Switch && uint64(res.End-segStart) > uint64(max(size, 0)) {
		t.Fatalf("End %v beyond size %d", res.End, size)
	}
	return res
}

func opts(segSize uint64) wal.ScanOptions {
	return wal.ScanOptions{SegSize: segSize, SysID: testSysID}
}

// mixed writes records of assorted sizes, some spanning pages, keeping
// within the first segment, and returns the stream.
func mixed(t *testing.T, segStart wal.LSN, segSize uint64, limit uint64) *stream {
	s := newStream(segStart, segSize)
	rng := rand.New(rand.NewPCG(uint64(segStart), segSize))
	sizes := []int{0, 1, 7, 8, 16, 100, 8100, 8200, 20000, 3, 50}
	for _, n := range sizes {
		s.add(n)
	}
	for uint64(s.Pos()-segStart) < limit {
		switch rng.IntN(10) {
		case 0:
			s.add(rng.IntN(40000))
		case 1, 2:
			s.add(rng.IntN(3000))
		default:
			s.add(rng.IntN(200))
		}
	}
	return s
}

func TestScanValid(t *testing.T) {
	for _, segSize := range []uint64{1 << 20, 16 << 20} {
		t.Run(wal.FormatSegmentSize(segSize), func(t *testing.T) {
			segStart := wal.LSN(3 * segSize)
			s := mixed(t, segStart, segSize, 200000)
			last := s.recs[len(s.recs)-1]
			want := wal.ScanResult{End: s.Pos(), LastRecord: last.start, Magic: wal.MagicPG15, TLI: 1}
			// Full zero-padded segment, partial file, partial file with
			// extra slack, and pre-initialised page headers.
			seg := s.Segment(0)
			for name, size := range map[string]int{"full": len(seg), "written": len(s.Bytes()), "slack": len(s.Bytes()) + 1000} {
				if got := scan(t, seg, size, segStart, opts(segSize)); got != want {
					t.Errorf("%s: got %+v\nwant %+v", name, got, want)
				}
			}
			s.FillPageHeaders()
			if got := scan(t, s.Segment(0), int(segSize), segStart, opts(segSize)); got != want {
				t.Errorf("with page headers: got %+v\nwant %+v", got, want)
			}
			// SysID 0 means "don't check"; size beyond the segment is ignored.
			o := opts(segSize)
			o.SysID = 0
			if got := scan(t, seg, len(seg)+100, segStart, o); got != want {
				t.Errorf("no sysid: got %+v", got)
			}
			// The record count sanity: there must be page-spanning records.
			if len(s.recs) < 20 {
				t.Errorf("only %d records", len(s.recs))
			}
		})
	}
}

func TestScanFullSegment(t *testing.T) {
	// A segment filled with records up to exactly its end.
	const segSize = 1 << 20
	s := newStream(segSize, segSize)
	for uint64(s.Pos()) < 2*segSize-20000 {
		s.add(700)
	}
	s.fillTo(t, 2*segSize)
	got := scan(t, s.Segment(0), segSize, segSize, opts(segSize))
	want := wal.ScanResult{End: 2 * segSize, LastRecord: s.recs[len(s.recs)-1].start, Magic: wal.MagicPG15, TLI: 1}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func truncationPoints(s *stream, segStart wal.LSN, limit uint64) []uint64 {
	var cuts []uint64
	add := func(c int64) {
		if c >= 0 && uint64(c) <= limit {
			cuts = append(cuts, uint64(c))
		}
	}
	for _, c := range []int64{0, 1, 8, 23, 24, 39, 40, 41, 48, 64} {
		add(c)
	}
	for _, r := range s.recs {
		st, en := int64(r.start-segStart), int64(r.end-segStart)
		for _, d := range []int64{-1, 0, 1, 3, 4, 5, 20, 23, 24, 25} {
			add(st + d)
		}
		for _, d := range []int64{-9, -8, -1, 0, 1} {
			add(en + d)
		}
	}
	for p := int64(0); p <= int64(limit); p += wal.BlockSize {
		for _, d := range []int64{-1, 0, 1, 23, 24, 25} {
			add(p + d)
		}
	}
	return cuts
}

func TestScanTruncated(t *testing.T) {
	for _, segSize := range []uint64{1 << 20, 16 << 20} {
		t.Run(wal.FormatSegmentSize(segSize), func(t *testing.T) {
			segStart := wal.LSN(7 * segSize)
			s := mixed(t, segStart, segSize, 60000)
			seg := s.Segment(0)
			written := uint64(len(s.Bytes()))
			for _, cut := range truncationPoints(s, segStart, written) {
				// Truncated file.
				end, last := s.expect(segStart, segStart+wal.LSN(cut))
				got := scan(t, seg[:cut], int(cut), segStart, opts(segSize))
				if got.End != end || got.LastRecord != last || got.Switch || got.Continues {
					t.Errorf("cut %d: got %+v, want End %v Last %v", cut, got, end, last)
				}
				// Full-size file with zeros from cut on.
				end, last = s.expectRaw(segStart, segStart+wal.LSN(cut), true)
				got, err := wal.ScanSegment(zeroTail(seg[:cut]), int64(segSize), segStart, opts(segSize))
				if err != nil {
					t.Fatal(err)
				}
				if got.End != end || got.LastRecord != last {
					t.Errorf("zeroed from %d: got %+v, want End %v Last %v", cut, got, end, last)
				}
			}
		})
	}
}

func TestScanRecycledPages(t *testing.T) {
	const segSize = 1 << 20
	segStart := wal.LSN(20 * segSize)
	s := mixed(t, segStart, segSize, 100000)
	// An older segment's content, as left in a recycled file.
	old := mixed(t, 5*segSize, segSize, segSize-50000)
	oldSeg := old.Segment(0)
	seg := s.Segment(0)
	for page := uint64(1); page*wal.BlockSize < uint64(len(s.Bytes()))+wal.BlockSize; page++ {
		b := append(append([]byte(nil), seg[:page*wal.BlockSize]...), oldSeg[page*wal.BlockSize:]...)
		end, last := s.expect(segStart, segStart+wal.LSN(page*wal.BlockSize))
		got := scan(t, b, segSize, segStart, opts(segSize))
		if got.End != end || got.LastRecord != last {
			t.Errorf("recycled from page %d: got %+v, want End %v Last %v", page, got, end, last)
		}
	}
	// A wholly recycled file: its first page address is wrong.
	got := scan(t, oldSeg, segSize, segStart, opts(segSize))
	if got.End != segStart || got.LastRecord != 0 || got.Magic != 0 {
		t.Errorf("recycled file: %+v", got)
	}
}

func TestScanCorruption(t *testing.T) {
	const segSize = 1 << 20
	segStart := wal.LSN(2 * segSize)
	s := mixed(t, segStart, segSize, 80000)
	seg := s.Segment(0)
	for i, r := range s.recs {
		end, last := segStart, wal.InvalidLSN
		if i > 0 {
			end, last = s.recs[i-1].end, s.recs[i-1].start
		}
		// Flip the last byte of the record, a payload or header byte (its
		// CRC fails), or the stored CRC itself.
		tot := uint64(len(reassemble(t, s.Builder, r.start)))
		for _, k := range []uint64{tot - 1, 20, 16, 4} {
			b := append([]byte(nil), seg...)
			b[recordByteOffset(s, r.start, k)] ^= 0x40
			got := scan(t, b, segSize, segStart, opts(segSize))
			if got.End != end || got.LastRecord != last {
				t.Errorf("record %d byte %d flipped: got %+v, want End %v", i, k, got, end)
			}
		}
	}
}

// recordByteOffset maps byte k of the record at lsn to an offset in the
// stream, skipping page headers.
func recordByteOffset(s *stream, lsn wal.LSN, k uint64) int {
	return int(streamLSN(s.Builder, lsn, k) - s.Start())
}

func TestScanInvalidRecordHeaders(t *testing.T) {
	const segSize = 1 << 20
	segStart := wal.LSN(segSize)
	cases := []struct {
		name string
		edit func(rec []byte)
		ok   bool
	}{
		{"valid", nil, true},
		{"rmid 22", func(r []byte) { r[17] = 22 }, false},
		{"rmid 127", func(r []byte) { r[17] = 127 }, false},
		{"rmid 21", func(r []byte) { r[17] = 21 }, true},
		{"custom rmid 128", func(r []byte) { r[17] = 128 }, true},
		{"custom rmid 255", func(r []byte) { r[17] = 255 }, true},
		{"tot_len 23", func(r []byte) { binary.LittleEndian.PutUint32(r, 23) }, false},
		{"tot_len 0", func(r []byte) { binary.LittleEndian.PutUint32(r, 0) }, false},
		{"tot_len too big", func(r []byte) { binary.LittleEndian.PutUint32(r, uint32(len(r)+8)) }, false},
		{"tot_len huge", func(r []byte) { binary.LittleEndian.PutUint32(r, 0xFFFFFFF0) }, false},
		{"xl_prev wrong", func(r []byte) { r[8] ^= 8 }, false},
		{"xl_prev zero", func(r []byte) { binary.LittleEndian.PutUint64(r[8:], 0) }, false},
	}
	for _, tc := range cases {
		for _, where := range []string{"same page", "split header", "after page header"} {
			t.Run(tc.name+"/"+where, func(t *testing.T) {
				s := newStream(segStart, segSize)
				s.add(100)
				s.add(9000)
				switch where {
				case "split header":
					s.fillTo(t, wal.LSN(pageEnd(uint64(s.Pos()))-8))
				case "after page header":
					s.fillTo(t, wal.LSN(pageEnd(uint64(s.Pos()))))
				}
				prevEnd, prevStart := s.Pos(), s.recs[len(s.recs)-1].start
				start := s.AddRecordFunc(waltest.RmHeap, 0, 300, tc.edit)
				s.trackLen(start, 300+wal.RecordHeaderSize)
				s.add(50)
				got := scan(t, s.Segment(0), segSize, segStart, opts(segSize))
				if tc.ok {
					if got.End != s.Pos() {
						t.Errorf("got %+v, want End %v", got, s.Pos())
					}
				} else if got.End != prevEnd || got.LastRecord != prevStart {
					t.Errorf("got %+v, want End %v Last %v", got, prevEnd, prevStart)
				}
			})
		}
	}
}

func TestScanFirstRecordPrev(t *testing.T) {
	const segSize = 1 << 20
	segStart := wal.LSN(4 * segSize)
	for _, tc := range []struct {
		prev wal.LSN
		ok   bool
	}{
		{0, true}, {segStart - 100, true}, {segStart + 39, true}, {segStart + 40, false}, {segStart + 1000, false},
	} {
		s := newStream(segStart, segSize)
		s.SetPrev(tc.prev)
		s.add(10)
		got := scan(t, s.Segment(0), segSize, segStart, opts(segSize))
		if (got.End != segStart) != tc.ok {
			t.Errorf("first xl_prev %v: got %+v", tc.prev, got)
		}
	}
}

func TestScanPageHeaderChecks(t *testing.T) {
	const segSize = 1 << 20
	segStart := wal.LSN(9 * segSize)
	s := mixed(t, segStart, segSize, 50000)
	seg := s.Segment(0)
	full := wal.ScanResult{End: s.Pos(), LastRecord: s.recs[len(s.recs)-1].start, Magic: wal.MagicPG15, TLI: 1}
	nothing := wal.ScanResult{End: segStart}

	type edit struct {
		name string
		page uint64
		fn   func(h []byte)
	}
	put16 := func(off int, v uint16) func([]byte) {
		return func(h []byte) { binary.LittleEndian.PutUint16(h[off:], v) }
	}
	for _, e := range []edit{
		{"magic unknown", 0, put16(0, 0xD000)},
		{"no long header", 0, put16(2, 0)},
		{"unknown info bit", 0, put16(2, 0x12)},
		{"sysid", 0, func(h []byte) { h[24] ^= 1 }},
		{"seg size", 0, func(h []byte) { binary.LittleEndian.PutUint32(h[32:], 2<<20) }},
		{"blcksz", 0, func(h []byte) { binary.LittleEndian.PutUint32(h[36:], 16384) }},
		{"pageaddr", 0, func(h []byte) { h[10] ^= 1 }},
		{"magic on page 3", 3, put16(0, wal.MagicPG17)},
		{"unknown info bit on page 3", 3, func(h []byte) { h[2] |= 0x10 }},
		{"pageaddr on page 3", 3, func(h []byte) { h[12] ^= 1 }},
		{"tli backwards on page 3", 3, func(h []byte) { binary.LittleEndian.PutUint32(h[4:], 0) }},
		{"long header with bad sysid on page 3", 3, func(h []byte) { h[2] |= wal.XLPLongHeader }},
	} {
		t.Run(e.name, func(t *testing.T) {
			b := append([]byte(nil), seg...)
			off := e.page * wal.BlockSize
			e.fn(b[off : off+wal.LongPageHeaderSize])
			got := scan(t, b, segSize, segStart, opts(segSize))
			want := nothing
			if e.page > 0 {
				want = full
				want.End, want.LastRecord = s.expect(segStart, segStart+wal.LSN(off))
			}
			if got != want {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
	// Magic taken from page 0 must be used by all pages.
	b0 := append([]byte(nil), seg...)
	binary.LittleEndian.PutUint16(b0, wal.MagicPG16)
	want := full
	want.End, want.LastRecord = s.expect(segStart, segStart+wal.BlockSize)
	want.Magic = wal.MagicPG16
	if got := scan(t, b0, segSize, segStart, opts(segSize)); got != want {
		t.Errorf("magic PG16 on page 0 only: got %+v\nwant %+v", got, want)
	}
	// A valid first page header that claims a continuation of length 0.
	b0 = append([]byte(nil), seg...)
	b0[2] |= wal.XLPFirstIsContRecord
	if got := scan(t, b0, segSize, segStart, opts(segSize)); got != (wal.ScanResult{End: segStart, Magic: wal.MagicPG15, TLI: 1}) {
		t.Errorf("contrecord with rem_len 0 on page 0: got %+v", got)
	}
	// Non-fatal flags: XLP_BKP_REMOVABLE, and a long header with the right
	// fields on a later page.
	b := append([]byte(nil), seg...)
	b[2*wal.BlockSize+2] |= wal.XLPBkpRemovable
	b[2] |= wal.XLPBkpRemovable
	if got := scan(t, b, segSize, segStart, opts(segSize)); got != full {
		t.Errorf("bkp removable: got %+v", got)
	}
	// Expected magic given by the caller.
	o := opts(segSize)
	o.Magic = wal.MagicPG15
	if got := scan(t, seg, segSize, segStart, o); got != full {
		t.Errorf("magic PG15 given: got %+v", got)
	}
	o.Magic = wal.MagicPG17
	if got := scan(t, seg, segSize, segStart, o); got != nothing {
		t.Errorf("magic PG17 given: got %+v", got)
	}
	o = opts(segSize)
	o.SysID = testSysID + 1
	if got := scan(t, seg, segSize, segStart, o); got != nothing {
		t.Errorf("other sysid: got %+v", got)
	}
	// A segment scanned as if it were of another size.
	o = opts(2 << 20)
	if got := scan(t, seg, segSize, 0, o); got != (wal.ScanResult{}) {
		t.Errorf("other segment size: got %+v", got)
	}
}

func TestScanOtherVersions(t *testing.T) {
	for _, m := range []uint16{wal.MagicPG16, wal.MagicPG17, wal.MagicPG18} {
		s := newStream(0, 16<<20)
		s.SetMagic(m)
		s.SetTLI(3)
		s.add(10)
		s.add(10000)
		got := scan(t, s.Segment(0), 16<<20, 0, opts(16<<20))
		want := wal.ScanResult{End: s.Pos(), LastRecord: s.recs[1].start, Magic: m, TLI: 3}
		if got != want {
			t.Errorf("magic %#x: got %+v", m, got)
		}
	}
}

func TestScanTimelineChange(t *testing.T) {
	const segSize = 1 << 20
	// Timeline going up at a page boundary is fine.
	s := newStream(0, segSize)
	s.add(100)
	s.fillTo(t, 2*wal.BlockSize)
	s.SetTLI(2)
	s.add(100)
	s.add(20000)
	if got := scan(t, s.Segment(0), segSize, 0, opts(segSize)); got.End != s.Pos() || got.TLI != 1 {
		t.Errorf("tli up: got %+v, want End %v", got, s.Pos())
	}
	// Going down is not: WAL ends at the page where it happens, and a
	// record crossing into it is invalid.
	s = newStream(0, segSize)
	s.SetTLI(5)
	s.add(100)
	s.add(9000) // crosses into page 1
	s.SetTLI(4) // page 2 on
	s.add(9000)
	want := s.recs[1]
	if got := scan(t, s.Segment(0), segSize, 0, opts(segSize)); got.End != want.end || got.LastRecord != want.start {
		t.Errorf("tli down: got %+v, want End %v", got, want.end)
	}
}

func TestScanContinuationFlags(t *testing.T) {
	const segSize = 1 << 20
	s := newStream(0, segSize)
	s.add(100)
	spanning := s.add(9000) // crosses into page 1
	s.add(10)
	seg := s.Segment(0)
	full := s.Pos()
	p1 := wal.BlockSize
	for _, tc := range []struct {
		name string
		fn   func(b []byte)
	}{
		{"no contrecord flag", func(b []byte) { b[p1+2] &^= wal.XLPFirstIsContRecord }},
		{"rem_len too big", func(b []byte) { b[p1+16]++ }},
		{"rem_len too small", func(b []byte) { b[p1+16]-- }},
		{"rem_len zero", func(b []byte) { binary.LittleEndian.PutUint32(b[p1+16:], 0) }},
	} {
		b := append([]byte(nil), seg...)
		tc.fn(b)
		got := scan(t, b, segSize, 0, opts(segSize))
		if got.End != s.recs[0].end || got.LastRecord != s.recs[0].start {
			t.Errorf("%s: got %+v, want End %v", tc.name, got, spanning)
		}
	}
	if got := scan(t, seg, segSize, 0, opts(segSize)); got.End != full {
		t.Errorf("unmodified: got %+v", got)
	}

	// A page that says it starts with a continuation where a new record
	// should start.
	s = newStream(0, segSize)
	s.add(100)
	s.fillTo(t, 3*wal.BlockSize)
	s.add(100)
	b := s.Segment(0)
	b[3*wal.BlockSize+2] |= wal.XLPFirstIsContRecord
	binary.LittleEndian.PutUint32(b[3*wal.BlockSize+16:], 100)
	if got := scan(t, b, segSize, 0, opts(segSize)); got.End != 3*wal.BlockSize {
		t.Errorf("unexpected contrecord: got %+v", got)
	}
}

func TestScanSwitch(t *testing.T) {
	for _, segSize := range []uint64{1 << 20, 16 << 20} {
		segStart := wal.LSN(11 * segSize)
		s := mixed(t, segStart, segSize, 30000)
		sw := s.AddSwitch()
		if s.Pos() != segStart+wal.LSN(segSize) {
			t.Fatalf("Pos after switch %v", s.Pos())
		}
		want := wal.ScanResult{End: segStart + wal.LSN(segSize), LastRecord: sw, Switch: true, Magic: wal.MagicPG15, TLI: 1}
		seg := s.Segment(0)
		swEnd := int(sw-segStart) + wal.RecordHeaderSize
		for _, size := range []int{int(segSize), swEnd, swEnd + 100} {
			if got := scan(t, seg, size, segStart, opts(segSize)); got != want {
				t.Errorf("%d size %d: got %+v\nwant %+v", segSize, size, got, want)
			}
		}
		// Garbage after the switch record does not matter.
		b := append([]byte(nil), seg...)
		for i := swEnd; i < len(b); i++ {
			b[i] = byte(i)
		}
		if got := scan(t, b, int(segSize), segStart, opts(segSize)); got != want {
			t.Errorf("garbage after switch: got %+v", got)
		}
		// Incomplete or corrupt switch record: WAL ends before it.
		end, last := s.expect(segStart, sw)
		if got := scan(t, seg, swEnd-1, segStart, opts(segSize)); got.End != end || got.LastRecord != last || got.Switch {
			t.Errorf("truncated switch: got %+v", got)
		}
		b = append([]byte(nil), seg...)
		b[swEnd-1] ^= 1
		if got := scan(t, b, int(segSize), segStart, opts(segSize)); got.End != end || got.Switch {
			t.Errorf("corrupt switch: got %+v", got)
		}
		// The next segment starts with a long header and no continuation.
		s.add(100)
		if got := scan(t, s.Segment(1), int(segSize), s.SegmentStart(1), opts(segSize)); got.End != s.Pos() || got.LastRecord != s.recs[len(s.recs)-1].start {
			t.Errorf("after switch: got %+v", got)
		}
	}
	// A switch record split across a page boundary.
	s := newStream(0, 1<<20)
	s.fillTo(t, wal.BlockSize-8)
	sw := s.AddSwitch()
	if got := scan(t, s.Segment(0), 1<<20, 0, opts(1<<20)); !got.Switch || got.LastRecord != sw || got.End != 1<<20 {
		t.Errorf("split switch: got %+v", got)
	}
}

func TestScanSpanningSegments(t *testing.T) {
	const segSize = 1 << 20
	base := wal.LSN(30 * segSize)
	for _, tc := range []struct {
		name    string
		gap     uint64 // distance of the spanning record's start from segment end
		payload int
	}{
		{"long record", 5000, 30000},
		{"header split", 8, 200},
		{"header split 16", 16, 200},
		{"only tot_len before segment end", 8, 0},
		{"ends at page end", 1000, 1000 - 24 + wal.BlockSize - wal.LongPageHeaderSize},
		{"record over whole segment", 3000, 2*segSize + 12345},
		{"record over whole segment to its end", 3000, 3000 - 24 + segSize - (segSize/wal.BlockSize)*wal.ShortPageHeaderSize - (wal.LongPageHeaderSize - wal.ShortPageHeaderSize)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(base, segSize)
			s.add(100)
			s.fillTo(t, base+segSize-wal.LSN(tc.gap))
			before := s.recs[len(s.recs)-1]
			sp := s.add(tc.payload)
			s.add(50)
			s.add(10000)
			nseg := int(wal.SegmentNo(s.Pos()-1, segSize) - wal.SegmentNo(base, segSize) + 1)
			t.Logf("spanning record %v, segments %d, next records %v %v", sp, nseg, s.recs[len(s.recs)-2].start, s.recs[len(s.recs)-1].start)

			// Segment 0 ends inside the spanning record.
			got := scan(t, s.Segment(0), segSize, base, opts(segSize))
			want := wal.ScanResult{End: sp, LastRecord: before.start, Continues: true, Magic: wal.MagicPG15, TLI: 1}
			if got != want {
				t.Errorf("segment 0: got %+v\nwant %+v", got, want)
			}
			// Not Continues when the file is not complete.
			got = scan(t, s.Segment(0), segSize-1, base, opts(segSize))
			if got.Continues || got.End != sp {
				t.Errorf("segment 0 short: got %+v", got)
			}
			// Segments wholly inside the record (the last of them may end
			// exactly where the record does).
			spanEnd := s.recs[len(s.recs)-3].end
			for i := 1; i < nseg-1; i++ {
				got := scan(t, s.Segment(i), segSize, s.SegmentStart(i), opts(segSize))
				want := wal.ScanResult{End: s.SegmentStart(i), Continues: true, Magic: wal.MagicPG15, TLI: 1}
				if spanEnd == s.SegmentStart(i+1) {
					want.End, want.Continues = spanEnd, false
				}
				if got != want {
					t.Errorf("segment %d: got %+v\nwant %+v", i, got, want)
				}
			}
			// The last segment: the continuation is skipped, records follow.
			li := nseg - 1
			ls := s.SegmentStart(li)
			seg := s.Segment(li)
			got = scan(t, seg, segSize, ls, opts(segSize))
			want = wal.ScanResult{End: s.Pos(), LastRecord: s.recs[len(s.recs)-1].start, Magic: wal.MagicPG15, TLI: 1}
			if got != want {
				t.Errorf("last segment: got %+v\nwant %+v", got, want)
			}
			// Truncated inside the continuation: nothing valid. Truncated
			// right after it: End is the continuation's aligned end.
			contLen := int(spanEnd - ls)
			for _, cut := range []int{0, 39, 40, 41, contLen - 8, contLen - 1} {
				if cut < 0 {
					continue
				}
				got := scan(t, seg[:cut], cut, ls, opts(segSize))
				if got.End != ls || got.LastRecord != 0 || got.Continues {
					t.Errorf("cut %d in continuation: got %+v", cut, got)
				}
			}
			got = scan(t, seg[:contLen], contLen, ls, opts(segSize))
			if got.End != spanEnd || got.LastRecord != 0 {
				t.Errorf("cut after continuation: got %+v, want End %v", got, spanEnd)
			}
			// A damaged continuation page header.
			if contLen > wal.BlockSize {
				b := append([]byte(nil), seg...)
				b[wal.BlockSize+16]++ // rem_len of page 1
				if got := scan(t, b, segSize, ls, opts(segSize)); got.End != ls {
					t.Errorf("bad rem_len in continuation: got %+v", got)
				}
				b = append([]byte(nil), seg...)
				b[wal.BlockSize+2] = 0 // no contrecord flag
				if got := scan(t, b, segSize, ls, opts(segSize)); got.End != ls {
					t.Errorf("no contrecord flag in continuation: got %+v", got)
				}
			}
		})
	}
}

func TestScanOverwriteContrecord(t *testing.T) {
	const segSize = 1 << 20
	for _, where := range []string{"mid segment", "first page continuation"} {
		t.Run(where, func(t *testing.T) {
			s := newStream(0, segSize)
			segStart := wal.LSN(0)
			if where == "first page continuation" {
				// The aborted record starts in segment 0 and would have
				// continued over two pages of segment 1.
				s.fillTo(t, segSize-wal.BlockSize+1000)
				s.add(wal.BlockSize - 1000 - 24 + 3*wal.BlockSize/2) // ends in segment 1, page 1
				segStart = segSize
			}
			s.add(100)
			prev := s.recs[len(s.recs)-1]
			aborted := s.AddAbortedRecord(waltest.RmHeap, 0, 20000)
			ow := s.AddRecord(waltest.RmXLog, wal.XLogOverwrite, 16)
			s.track(ow)
			s.add(300)
			if segStart != 0 && wal.SegmentStart(aborted, segSize) == segStart-segSize {
				t.Fatalf("aborted record %v not in segment 1", aborted)
			}
			seg := s.Segment(int(segStart / segSize))
			got := scan(t, seg, segSize, segStart, opts(segSize))
			if got.End != s.Pos() || got.LastRecord != s.recs[len(s.recs)-1].start {
				t.Errorf("got %+v, want End %v", got, s.Pos())
			}
			// Without the overwrite flag the aborted record ends the WAL.
			p := pageEnd(uint64(aborted)) - uint64(segStart)
			seg[p+2] &^= wal.XLPFirstIsOverwriteContRecord
			got = scan(t, seg, segSize, segStart, opts(segSize))
			if got.End != prev.end || got.LastRecord != prev.start {
				t.Errorf("no overwrite flag: got %+v, want End %v", got, prev.end)
			}
			// With both flags the page is inconsistent.
			seg[p+2] |= wal.XLPFirstIsOverwriteContRecord | wal.XLPFirstIsContRecord
			got = scan(t, seg, segSize, segStart, opts(segSize))
			if got.End != prev.end {
				t.Errorf("both flags: got %+v, want End %v", got, prev.end)
			}
		})
	}
}

func TestScanEmptyAndGarbage(t *testing.T) {
	const segSize = 1 << 20
	for name, data := range map[string][]byte{
		"empty":   nil,
		"zeros":   make([]byte, segSize),
		"short":   {0x10, 0xd1, 0x07},
		"garbage": bytes.Repeat([]byte{0xAB}, 100000),
	} {
		got := scan(t, data, len(data), segSize, opts(segSize))
		if got != (wal.ScanResult{End: segSize}) {
			t.Errorf("%s: got %+v", name, got)
		}
	}
	// Negative size means nothing present.
	s := newStream(0, segSize)
	s.add(10)
	if got := scan(t, s.Segment(0), -5, 0, opts(segSize)); got != (wal.ScanResult{}) {
		t.Errorf("negative size: got %+v", got)
	}
	// Only a page header.
	s = newStream(0, segSize)
	s.FillPageHeaders()
	if got := scan(t, s.Segment(0), segSize, 0, opts(segSize)); got != (wal.ScanResult{Magic: wal.MagicPG15, TLI: 1}) {
		t.Errorf("page headers only: got %+v", got)
	}
}

// zeroTail is a ReaderAt of its bytes followed by zeros without end.
type zeroTail []byte

func (z zeroTail) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	if off < int64(len(z)) {
		n = copy(p, z[off:])
	}
	clear(p[n:])
	return len(p), nil
}

type errReader struct {
	r     io.ReaderAt
	after int64
}

var errDisk = errors.New("disk on fire")

func (e errReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > e.after {
		return 0, errDisk
	}
	return e.r.ReadAt(p, off)
}

// countingReader records the largest read.
type countingReader struct {
	r       io.ReaderAt
	maxRead int
	total   int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.maxRead = max(c.maxRead, len(p))
	c.total += len(p)
	return c.r.ReadAt(p, off)
}

func TestScanErrors(t *testing.T) {
	const segSize = 16 << 20
	s := mixed(t, 0, segSize, 300000)
	seg := s.Segment(0)
	for _, bad := range []struct {
		segStart wal.LSN
		segSize  uint64
	}{{0, 0}, {0, 3 << 20}, {0, 2 << 30}, {1 << 20, segSize}, {^wal.LSN(0) - segSize + 1, segSize}} {
		if _, err := wal.ScanSegment(bytes.NewReader(seg), segSize, bad.segStart, wal.ScanOptions{SegSize: bad.segSize}); err == nil {
			t.Errorf("segStart %v segSize %d: no error", bad.segStart, bad.segSize)
		}
	}
	// The very last segment of the LSN space cannot be scanned, the one
	// before can.
	if _, err := wal.ScanSegment(bytes.NewReader(nil), 0, ^wal.LSN(0)-2*segSize+1, opts(segSize)); err != nil {
		t.Errorf("penultimate segment: %v", err)
	}
	// I/O errors are returned.
	_, err := wal.ScanSegment(errReader{bytes.NewReader(seg), 200000}, segSize, 0, opts(segSize))
	if !errors.Is(err, errDisk) {
		t.Errorf("read error: got %v", err)
	}
	// A reader holding fewer bytes than size.
	_, err = wal.ScanSegment(bytes.NewReader(seg[:100000]), segSize, 0, opts(segSize))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short reader: got %v", err)
	}
	// Reads are chunked and stop where the WAL ends.
	c := &countingReader{r: bytes.NewReader(seg)}
	got, err := wal.ScanSegment(c, segSize, 0, opts(segSize))
	if err != nil || got.End != s.Pos() {
		t.Fatalf("got %+v %v", got, err)
	}
	if c.maxRead > 64<<10 || c.total > int(s.Pos())+64<<10 {
		t.Errorf("max read %d, total %d, WAL end %v", c.maxRead, c.total, s.Pos())
	}
}

func TestScanWholeLargeSegment(t *testing.T) {
	// A 16 MiB segment full of records, then continuing: every page is
	// crossed by the scan.
	const segSize = 16 << 20
	s := newStream(0, segSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for uint64(s.Pos()) < segSize-100000 {
		s.add(rng.IntN(12000))
	}
	last := s.recs[len(s.recs)-1]
	s.add(200000)
	c := &countingReader{r: bytes.NewReader(s.Segment(0))}
	got, err := wal.ScanSegment(c, segSize, 0, opts(segSize))
	want := wal.ScanResult{End: last.end, LastRecord: last.start, Continues: true, Magic: wal.MagicPG15, TLI: 1}
	if err != nil || got != want {
		t.Fatalf("got %+v %v\nwant %+v", got, err, want)
	}
	if c.maxRead > 64<<10 {
		t.Errorf("max read %d", c.maxRead)
	}
}

func ExampleScanSegment() {
	const segSize = 16 << 20
	b := waltest.NewSegmentBuilder(0x3000000, segSize, 1, 1)
	b.AddRecord(waltest.RmHeap, 0, 100)
	b.AddRecord(waltest.RmHeap, 0, 10000)
	seg := b.Segment(0)
	res, err := wal.ScanSegment(bytes.NewReader(seg), int64(len(seg)), 0x3000000, wal.ScanOptions{SegSize: segSize})
	fmt.Println(res.End, res.LastRecord, res.Switch, err)
	// Output: 0/30027E8 0/30000A8 false <nil>
}
