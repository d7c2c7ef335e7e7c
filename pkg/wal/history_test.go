package wal_test

import (
	"math"
	"reflect"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// The observed files of protocol.md §5.2.
const (
	history2 = "1\t0/9000F8\tno recovery target specified\n"
	history3 = "1\t0/9000F8\tno recovery target specified\n\n2\t0/C00000\tno recovery target specified\n"
	history4 = history3 + "\n3\t0/C01078\tno recovery target specified\n"
)

const open = wal.LSN(math.MaxUint64)

func TestParseHistoryObserved(t *testing.T) {
	tests := []struct {
		content string
		tli     uint32
		want    []wal.HistoryEntry
	}{
		{"", 1, []wal.HistoryEntry{{1, 0, open}}},
		{history2, 2, []wal.HistoryEntry{{1, 0, 0x9000F8}, {2, 0x9000F8, open}}},
		{history3, 3, []wal.HistoryEntry{{1, 0, 0x9000F8}, {2, 0x9000F8, 0xC00000}, {3, 0xC00000, open}}},
		{history4, 4, []wal.HistoryEntry{{1, 0, 0x9000F8}, {2, 0x9000F8, 0xC00000}, {3, 0xC00000, 0xC01078}, {4, 0xC01078, open}}},
	}
	for _, tt := range tests {
		got, err := wal.ParseHistory([]byte(tt.content), tt.tli)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseHistory(%q, %d) = %v, %v\nwant %v", tt.content, tt.tli, got, err, tt.want)
		}
	}
}

func TestParseHistoryVariants(t *testing.T) {
	tests := []struct {
		name    string
		content string
		tli     uint32
		want    []wal.HistoryEntry
	}{
		{"comments and blanks", "# comment\n   \n\t# indented comment\n1\t0/9000F8\treason\n\n", 2,
			[]wal.HistoryEntry{{1, 0, 0x9000F8}, {2, 0x9000F8, open}}},
		{"no trailing newline, no reason", "1\t0/9000F8", 2,
			[]wal.HistoryEntry{{1, 0, 0x9000F8}, {2, 0x9000F8, open}}},
		{"CRLF", "1\t0/9000F8\tr\r\n2\t0/A000000\tr\r\n", 5,
			[]wal.HistoryEntry{{1, 0, 0x9000F8}, {2, 0x9000F8, 0xA000000}, {5, 0xA000000, open}}},
		{"spaces and lower case", "  1 \t 1/a0000000  before transaction 5\n", 3,
			[]wal.HistoryEntry{{1, 0, 0x1A0000000}, {3, 0x1A0000000, open}}},
		{"skipped timelines", "1\t0/9000F8\tx\n3\t0/C00000\tx\n", 7,
			[]wal.HistoryEntry{{1, 0, 0x9000F8}, {3, 0x9000F8, 0xC00000}, {7, 0xC00000, open}}},
		{"equal switch points", "1\t0/9000F8\tx\n2\t0/9000F8\tx\n", 3,
			[]wal.HistoryEntry{{1, 0, 0x9000F8}, {2, 0x9000F8, 0x9000F8}, {3, 0x9000F8, open}}},
		{"reason with tabs and quotes", "1\t0/9000F8\tat restore point \"a\tb\"\n", 2,
			[]wal.HistoryEntry{{1, 0, 0x9000F8}, {2, 0x9000F8, open}}},
		{"only comments", "# nothing\n", 1, []wal.HistoryEntry{{1, 0, open}}},
	}
	for _, tt := range tests {
		got, err := wal.ParseHistory([]byte(tt.content), tt.tli)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %v, %v\nwant %v", tt.name, got, err, tt.want)
		}
	}
}

func TestParseHistoryErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		tli     uint32
	}{
		{"timeline 0 file", "", 0},
		{"not a number", "x\t0/9000F8\tr\n", 2},
		{"negative", "-1\t0/9000F8\tr\n", 2},
		{"tli 0", "0\t0/9000F8\tr\n", 2},
		{"tli overflow", "4294967296\t0/9000F8\tr\n", 2},
		{"missing switchpoint", "1\n", 2},
		{"missing switchpoint with tab", "1\t\n", 2},
		{"bad switchpoint", "1\t9000F8\tr\n", 2},
		{"bad switchpoint hex", "1\t0/XYZ\tr\n", 2},
		{"no separator", "1/0/9000F8\n", 2},
		{"tli not increasing", history3 + "2\t0/D00000\tr\n", 5},
		{"tli decreasing", "2\t0/9000F8\tr\n1\t0/A00000\tr\n", 3},
		{"tli equal to file", "1\t0/9000F8\tr\n2\t0/C00000\tr\n", 2},
		{"tli above file", history4, 3},
		{"switchpoint decreasing", "1\t0/C00000\tr\n2\t0/9000F8\tr\n", 3},
	}
	for _, tt := range tests {
		if got, err := wal.ParseHistory([]byte(tt.content), tt.tli); err == nil {
			t.Errorf("%s: got %v, want error", tt.name, got)
		}
	}
}

func TestTLIOfPointAndSwitchPoint(t *testing.T) {
	hist, err := wal.ParseHistory([]byte(history4), 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		lsn wal.LSN
		tli uint32
	}{
		{0, 1}, {0x9000F7, 1}, {0x9000F8, 2}, {0xBFFFFF, 2}, {0xC00000, 3}, {0xC01077, 3},
		{0xC01078, 4}, {0x100000000, 4}, {open, 4},
	} {
		if got, ok := wal.TLIOfPoint(hist, tt.lsn); !ok || got != tt.tli {
			t.Errorf("TLIOfPoint(%v) = %d, %v; want %d", tt.lsn, got, ok, tt.tli)
		}
	}
	if _, ok := wal.TLIOfPoint(nil, 5); ok {
		t.Error("TLIOfPoint(nil) ok")
	}
	for _, tt := range []struct {
		tli  uint32
		end  wal.LSN
		next uint32
		ok   bool
	}{
		{1, 0x9000F8, 2, true}, {2, 0xC00000, 3, true}, {3, 0xC01078, 4, true},
		{4, open, 0, true}, {5, 0, 0, false}, {0, 0, 0, false},
	} {
		end, next, ok := wal.SwitchPoint(hist, tt.tli)
		if end != tt.end || next != tt.next || ok != tt.ok {
			t.Errorf("SwitchPoint(%d) = %v, %d, %v; want %v, %d, %v", tt.tli, end, next, ok, tt.end, tt.next, tt.ok)
		}
	}
	// A history with a gap: timeline 2 was abandoned.
	hist, err = wal.ParseHistory([]byte("1\t0/9000F8\tx\n3\t0/C00000\tx\n"), 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := wal.SwitchPoint(hist, 2); ok {
		t.Error("SwitchPoint(2) ok in history without 2")
	}
	if end, next, _ := wal.SwitchPoint(hist, 1); end != 0x9000F8 || next != 3 {
		t.Errorf("SwitchPoint(1) = %v, %d", end, next)
	}
	// Equal switch points: the empty timeline covers nothing.
	hist, _ = wal.ParseHistory([]byte("1\t0/9000F8\tx\n2\t0/9000F8\tx\n"), 3)
	if got, _ := wal.TLIOfPoint(hist, 0x9000F8); got != 3 {
		t.Errorf("TLIOfPoint at equal switch points = %d", got)
	}
}

func TestParseHistoryFileName(t *testing.T) {
	for name, want := range map[string]uint32{"00000002.history": 2, "0000000A.history": 10, "FFFFFFFF.history": 0xFFFFFFFF} {
		if got, ok := wal.ParseHistoryFileName(name); !ok || got != want {
			t.Errorf("%s: %d %v", name, got, ok)
		}
		if wal.HistoryFileName(want) != name {
			t.Errorf("round trip of %s", name)
		}
	}
	for _, name := range []string{"00000000.history", "0000000a.history", "00000002.histor", "000000002.history", "00000002.partial", ""} {
		if _, ok := wal.ParseHistoryFileName(name); ok {
			t.Errorf("%q accepted", name)
		}
	}
}

func TestFileTLI(t *testing.T) {
	const seg = 16 << 20
	hist, err := wal.ParseHistory([]byte("1\t0/3800000\tx\n2\t0/5000000\ty\n"), 3)
	if err != nil {
		t.Fatal(err)
	}
	for segno, want := range map[uint64]uint32{1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 9: 3} {
		if got := wal.FileTLI(hist, segno, seg); got != want {
			t.Errorf("segment %d: TLI %d, want %d", segno, got, want)
		}
	}
}
