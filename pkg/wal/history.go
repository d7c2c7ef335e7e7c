package wal

import (
	"fmt"
	"math"
	"strconv"
)

// HistoryEntry says that timeline TLI covered the WAL range [Begin, End).
// The newest entry of a history is open: End == math.MaxUint64 (and then the
// range includes math.MaxUint64 itself).
type HistoryEntry struct {
	TLI   uint32
	Begin LSN
	End   LSN
}

// ParseHistory parses the content of the history file of timeline fileTLI
// (protocol.md §5.2). Each line is "<parentTLI>\t<switchpoint %X/%X>\t<reason>";
// the reason (and anything after the switch point) is ignored. Blank lines
// and lines whose first non-blank character is '#' are skipped. Timeline IDs
// must be positive, strictly increasing and below fileTLI; switch points
// must not decrease.
//
// The result is ordered oldest first: the first entry begins at 0, each
// entry begins where the previous one ends, and the last entry is fileTLI
// itself, beginning at the last switch point and open-ended. Empty content
// gives the single entry {fileTLI, 0, math.MaxUint64}.
func ParseHistory(content []byte, fileTLI uint32) ([]HistoryEntry, error) {
	if fileTLI == 0 {
		return nil, fmt.Errorf("wal: invalid history timeline 0")
	}
	var hist []HistoryEntry
	begin := InvalidLSN
	for lineNo := 1; len(content) > 0; lineNo++ {
		var line []byte
		line, content = cutLine(content)
		i := skipSpace(line, 0)
		if i == len(line) || line[i] == '#' {
			continue
		}
		tli, sw, err := parseHistoryLine(line[i:])
		if err != nil {
			return nil, fmt.Errorf("wal: history file of timeline %d, line %d: %v", fileTLI, lineNo, err)
		}
		if len(hist) > 0 && tli <= hist[len(hist)-1].TLI {
			return nil, fmt.Errorf("wal: history file of timeline %d, line %d: timeline IDs must be in increasing sequence", fileTLI, lineNo)
		}
		if tli >= fileTLI {
			return nil, fmt.Errorf("wal: history file of timeline %d, line %d: timeline IDs must be less than child timeline's ID", fileTLI, lineNo)
		}
		if sw < begin {
			return nil, fmt.Errorf("wal: history file of timeline %d, line %d: switch point %s is before the previous one %s", fileTLI, lineNo, sw, begin)
		}
		hist = append(hist, HistoryEntry{TLI: tli, Begin: begin, End: sw})
		begin = sw
	}
	return append(hist, HistoryEntry{TLI: fileTLI, Begin: begin, End: math.MaxUint64}), nil
}

func cutLine(b []byte) (line, rest []byte) {
	for i, c := range b {
		if c == '\n' {
			return b[:i], b[i+1:]
		}
	}
	return b, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' || c == '\n'
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func skipToken(b []byte, i int) int {
	for i < len(b) && !isSpace(b[i]) {
		i++
	}
	return i
}

// parseHistoryLine parses "<tli><blanks><X/X>[<blank><anything>]" where the
// line starts with the TLI.
func parseHistoryLine(line []byte) (uint32, LSN, error) {
	i := skipToken(line, 0)
	tli, err := strconv.ParseUint(string(line[:i]), 10, 32)
	if err != nil || tli == 0 {
		return 0, 0, fmt.Errorf("expected a numeric timeline ID, got %q", line[:i])
	}
	j := skipSpace(line, i)
	k := skipToken(line, j)
	if j == i || j == k {
		return 0, 0, fmt.Errorf("expected a write-ahead log switchpoint location")
	}
	sw, err := ParseLSN(string(line[j:k]))
	if err != nil {
		return 0, 0, fmt.Errorf("expected a write-ahead log switchpoint location, got %q", line[j:k])
	}
	return uint32(tli), sw, nil
}

// TLIOfPoint returns the timeline that lsn belongs to in hist (as returned
// by ParseHistory): the entry with Begin <= lsn < End, the open last entry
// also covering math.MaxUint64. ok is false if no entry covers lsn.
func TLIOfPoint(hist []HistoryEntry, lsn LSN) (uint32, bool) {
	for i := len(hist) - 1; i >= 0; i-- {
		e := hist[i]
		if e.Begin <= lsn && (lsn < e.End || e.End == math.MaxUint64) {
			return e.TLI, true
		}
	}
	return 0, false
}

// SwitchPoint returns where timeline tli ends in hist and the timeline that
// follows it. For the last (current) timeline of hist it returns
// end = math.MaxUint64 and nextTLI = 0. ok is false if tli is not in hist.
func SwitchPoint(hist []HistoryEntry, tli uint32) (end LSN, nextTLI uint32, ok bool) {
	for i, e := range hist {
		if e.TLI != tli {
			continue
		}
		if i == len(hist)-1 {
			return math.MaxUint64, 0, true
		}
		return e.End, hist[i+1].TLI, true
	}
	return InvalidLSN, 0, false
}

// FileTLI returns the timeline whose file holds segment segno, following
// PostgreSQL: the segment holding a switch point is read from the newer
// timeline's file, which carries the older timeline's WAL up to the switch.
func FileTLI(hist []HistoryEntry, segno, segSize uint64) uint32 {
	last := LSN((segno+1)*segSize - 1)
	for _, e := range hist {
		if last >= e.Begin && last < e.End {
			return e.TLI
		}
	}
	return hist[len(hist)-1].TLI
}
