package wal_test

import (
	"math"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

func TestLSNFormatParse(t *testing.T) {
	tests := []struct {
		in   string
		want wal.LSN
		str  string // canonical form
	}{
		{"0/0", 0, "0/0"},
		{"0/9000F8", 0x9000F8, "0/9000F8"},
		{"16/B374D848", 0x16B374D848, "16/B374D848"},
		{"16/b374d848", 0x16B374D848, "16/B374D848"},
		{"1/A0000000", 0x1A0000000, "1/A0000000"},
		{"00000001/00000010", 0x100000010, "1/10"},
		{"FFFFFFFF/FFFFFFFF", math.MaxUint64, "FFFFFFFF/FFFFFFFF"},
		{"ffffffff/ffffffff", math.MaxUint64, "FFFFFFFF/FFFFFFFF"},
		{"0/C01078", 0xC01078, "0/C01078"},
		{"10/0", 0x1000000000, "10/0"},
	}
	for _, tt := range tests {
		got, err := wal.ParseLSN(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseLSN(%q) = %#x, %v; want %#x", tt.in, uint64(got), err, uint64(tt.want))
		}
		if s := tt.want.String(); s != tt.str {
			t.Errorf("LSN(%#x).String() = %q; want %q", uint64(tt.want), s, tt.str)
		}
		if s := string(tt.want.AppendText([]byte("x"))); s != "x"+tt.str {
			t.Errorf("AppendText = %q; want %q", s, "x"+tt.str)
		}
	}
}

func TestParseLSNErrors(t *testing.T) {
	for _, in := range []string{
		"", "1", "1/", "/1", "/", "G/0", "0/G", "123456789/0", "0/123456789",
		" 0/0", "0/0 ", "0x1/0", "+1/0", "-1/0", "1//0", "1/0/0", "0/9000F8\n",
	} {
		if got, err := wal.ParseLSN(in); err == nil {
			t.Errorf("ParseLSN(%q) = %v, want error", in, got)
		}
	}
}

func TestSegmentMath(t *testing.T) {
	const seg = 16 << 20
	lsn := wal.LSN(0x1A0123456)
	if n := wal.SegmentNo(lsn, seg); n != 0x1A0 {
		t.Errorf("SegmentNo = %#x", n)
	}
	if s := wal.SegmentStart(lsn, seg); s != 0x1A0000000 {
		t.Errorf("SegmentStart = %v", s)
	}
	if o := wal.SegmentOffset(lsn, seg); o != 0x123456 {
		t.Errorf("SegmentOffset = %#x", o)
	}
}

func TestValidSegmentSize(t *testing.T) {
	for n := uint64(1); n != 0; n <<= 1 {
		want := n >= 1<<20 && n <= 1<<30
		if got := wal.ValidSegmentSize(n); got != want {
			t.Errorf("ValidSegmentSize(%d) = %v", n, got)
		}
	}
	for _, n := range []uint64{0, 3 << 20, 1<<20 + 1, 1<<30 - 1, 1<<30 + 1<<20} {
		if wal.ValidSegmentSize(n) {
			t.Errorf("ValidSegmentSize(%d) = true", n)
		}
	}
}

// Rows of protocol.md §5.1's table.
func TestSegmentFileName(t *testing.T) {
	tests := []struct {
		segSize uint64
		lsn     wal.LSN
		name    string
	}{
		{16 << 20, 0x3000000, "000000010000000000000003"},
		{16 << 20, 0x1A0000000, "0000000100000001000000A0"},
		{1 << 20, 0x3000000, "000000010000000000000030"},
		{1 << 20, 0xA00000, "00000001000000000000000A"},
		{64 << 20, 0x100000000, "000000010000000100000000"},
		{1 << 30, 0xC0000000, "000000010000000000000003"},
	}
	for _, tt := range tests {
		segno := wal.SegmentNo(tt.lsn, tt.segSize)
		if got := wal.SegmentFileName(1, segno, tt.segSize); got != tt.name {
			t.Errorf("SegmentFileName(1, %#x, %d) = %q; want %q", segno, tt.segSize, got, tt.name)
		}
		tli, n, ok := wal.ParseSegmentFileName(tt.name, tt.segSize)
		if !ok || tli != 1 || n != segno {
			t.Errorf("ParseSegmentFileName(%q) = %d, %#x, %v", tt.name, tli, n, ok)
		}
	}
	if got := wal.SegmentFileName(0xABCDEF01, 0x123456789, 16<<20); got != "ABCDEF010123456700000089" {
		t.Errorf("got %q", got)
	}
}

func TestParseSegmentFileNameRoundTrip(t *testing.T) {
	for _, segSize := range []uint64{1 << 20, 16 << 20, 64 << 20, 1 << 30} {
		per := uint64(0x100000000) / segSize
		for _, tli := range []uint32{1, 2, 0x10, 0xFFFFFFFF} {
			for _, segno := range []uint64{0, 1, per - 1, per, per + 1, 0xFFFFFFFF*per + per - 1} {
				name := wal.SegmentFileName(tli, segno, segSize)
				gt, gs, ok := wal.ParseSegmentFileName(name, segSize)
				if !ok || gt != tli || gs != segno {
					t.Errorf("round trip %d/%#x/%d via %q: %d %#x %v", tli, segno, segSize, name, gt, gs, ok)
				}
			}
		}
	}
	bad := []struct {
		name    string
		segSize uint64
	}{
		{"", 16 << 20},
		{"00000001000000000000000", 16 << 20},
		{"0000000100000000000000030", 16 << 20},
		{"000000010000000000000003.partial", 16 << 20},
		{"0000000100000000000000a0", 16 << 20}, // lower case
		{"00000001000000000000010G", 16 << 20},
		{"000000010000000000000100", 16 << 20}, // low part 0x100 >= 256
		{"000000010000000000001000", 1 << 20},  // low part 0x1000 >= 4096
		{"000000010000000000000004", 1 << 30},  // low part 4 >= 4
		{"000000010000000000000003", 3 << 20},  // invalid segment size
		{"00000001.history", 16 << 20},
		{"+00000010000000000000003", 16 << 20},
	}
	for _, tt := range bad {
		if tli, n, ok := wal.ParseSegmentFileName(tt.name, tt.segSize); ok {
			t.Errorf("ParseSegmentFileName(%q, %d) = %d, %d, true", tt.name, tt.segSize, tli, n)
		}
	}
	if _, n, ok := wal.ParseSegmentFileName("0000000100000000000000FF", 16<<20); !ok || n != 0xFF {
		t.Errorf("FF: %d %v", n, ok)
	}
}

func TestHistoryFileName(t *testing.T) {
	for tli, want := range map[uint32]string{1: "00000001.history", 2: "00000002.history", 0xAB: "000000AB.history", 0xFFFFFFFF: "FFFFFFFF.history"} {
		if got := wal.HistoryFileName(tli); got != want {
			t.Errorf("HistoryFileName(%d) = %q", tli, got)
		}
	}
}

func TestFormatSegmentSize(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{1 << 20, "1MB"},
		{2 << 20, "2MB"},
		{16 << 20, "16MB"},
		{64 << 20, "64MB"},
		{512 << 20, "512MB"},
		{1 << 30, "1GB"},
		{2 << 30, "2GB"},
		{1536 << 20, "1536MB"},
		{1 << 40, "1TB"},
		{8192, "8kB"},
		{1000, "1000B"},
		{0, "0"},
	}
	for _, tt := range tests {
		if got := wal.FormatSegmentSize(tt.n); got != tt.want {
			t.Errorf("FormatSegmentSize(%d) = %q; want %q", tt.n, got, tt.want)
		}
	}
}

func TestAppendTextAllocs(t *testing.T) {
	buf := make([]byte, 0, 64)
	l := wal.LSN(0x16B374D848)
	if n := testing.AllocsPerRun(100, func() { buf = l.AppendText(buf[:0]) }); n != 0 {
		t.Errorf("AppendText allocs = %v", n)
	}
}

func BenchmarkLSNAppendText(b *testing.B) {
	buf := make([]byte, 0, 64)
	l := wal.LSN(0x16B374D848)
	b.ReportAllocs()
	for b.Loop() {
		buf = l.AppendText(buf[:0])
	}
}

func TestIsSegmentName(t *testing.T) {
	for name, want := range map[string]bool{
		"000000010000000000000003": true, "0000000A00000001000000FF": true,
		"000000010000000000000003.partial": false, "00000001000000000000000a": false,
		"00000001000000000000003": false, "00000002.history": false, "": false,
	} {
		if got := wal.IsSegmentName(name); got != want {
			t.Errorf("IsSegmentName(%q) = %v", name, got)
		}
	}
}
