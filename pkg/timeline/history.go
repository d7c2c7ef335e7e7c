package timeline

import (
	"math"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// HistoryEntries returns the timeline history of the current PostgreSQL
// timeline: every TLI with the range of WAL positions it covers, the last
// one (the current TLI) open-ended.
func (t *Timeline) HistoryEntries() []wal.HistoryEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.historyLocked()
}

func (t *Timeline) historyLocked() []wal.HistoryEntry {
	tli := t.ctl.TLI
	if t.hist != nil && t.histTLI == tli {
		return t.hist
	}
	hist := []wal.HistoryEntry{{TLI: tli, Begin: 0, End: wal.LSN(math.MaxUint64)}}
	if tli > 1 {
		if content, err := t.History(tli); err == nil {
			if h, err := wal.ParseHistory(content, tli); err == nil {
				hist = h
			}
		}
	}
	t.hist, t.histTLI = hist, tli
	return hist
}

// TLIOfPoint returns the timeline, in the current history, that holds lsn.
func (t *Timeline) TLIOfPoint(lsn wal.LSN) uint32 {
	hist := t.HistoryEntries()
	if tli, ok := wal.TLIOfPoint(hist, lsn); ok {
		return tli
	}
	return hist[len(hist)-1].TLI
}

// FileTLI returns the timeline whose file holds segment segno, following
// PostgreSQL: the segment holding a switch point is read from the newer
// timeline's file, which carries the older timeline's WAL up to the switch.
func FileTLI(hist []wal.HistoryEntry, segno, segSize uint64) uint32 {
	last := wal.LSN((segno+1)*segSize - 1)
	for _, e := range hist {
		if last >= e.Begin && last < e.End {
			return e.TLI
		}
	}
	return hist[len(hist)-1].TLI
}
