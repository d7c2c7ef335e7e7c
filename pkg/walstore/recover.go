package walstore

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// RecoveryResult says what Recover found and did.
type RecoveryResult struct {
	End        wal.LSN // true end of valid WAL
	Scanned    string  // segment file that was scanned ("" if none)
	ScanEnd    wal.LSN // where the record scan stopped
	Truncated  int64   // bytes cut off the last segment
	Removed    []string
	Renamed    string // partial segment found complete and renamed
	ControlEnd wal.LSN
}

// Recover finds the true end of valid WAL of timeline tli in dir and makes
// the files agree with it: the last segment is scanned from its start (page
// headers, record headers, CRCs), anything past the end of valid WAL is
// truncated, later segment files are removed, and a partial segment that
// turns out complete is renamed. Bytes up to ctl.FlushLSN were acknowledged
// as durable and are never cut, even when they end inside a record (the
// upstream flushes at page boundaries mid-record).
func Recover(dir string, ctl Control) (RecoveryResult, error) {
	res := RecoveryResult{ControlEnd: ctl.FlushLSN}
	segSize := ctl.WalSegSize
	files, err := ListSegments(dir, segSize)
	if err != nil {
		return res, err
	}
	var mine []SegmentFile
	for _, f := range files {
		if f.TLI == ctl.TLI {
			mine = append(mine, f)
		}
	}
	if len(mine) == 0 {
		res.End = ctl.FlushLSN
		if res.End < ctl.StartLSN {
			res.End = ctl.StartLSN
		}
		return res, nil
	}
	// Walk back from the highest segment to the last one that holds valid WAL.
	for i := len(mine) - 1; i >= 0; i-- {
		f := mine[i]
		segStart := wal.LSN(f.SegNo * segSize)
		path := filepath.Join(dir, f.Name)
		if !f.Partial && f.Size == int64(segSize) {
			// Complete segments were fsynced before they were renamed.
			res.End = segStart + wal.LSN(segSize)
			break
		}
		fh, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return res, err
		}
		scan, err := wal.ScanSegment(fh, f.Size, segStart, wal.ScanOptions{SegSize: segSize, SysID: ctl.SystemID, Magic: ctl.PageMagic})
		if err != nil {
			fh.Close()
			return res, fmt.Errorf("scan %s: %w", f.Name, err)
		}
		end := scan.End
		res.Scanned, res.ScanEnd = f.Name, scan.End
		if scan.Continues {
			// Consistent to the last byte present, ending inside a record
			// that carries on in the next segment: keep all of it.
			end = segStart + wal.LSN(f.Size)
		}
		if ctl.FlushLSN > end && ctl.FlushLSN <= segStart+wal.LSN(f.Size) {
			end = ctl.FlushLSN
		}
		if end < segStart+wal.LSN(f.Size) {
			keep := int64(end - segStart)
			res.Truncated = f.Size - keep
			if err := fh.Truncate(keep); err != nil {
				fh.Close()
				return res, err
			}
		}
		if err := fh.Sync(); err != nil {
			fh.Close()
			return res, err
		}
		fh.Close()
		if end == segStart && segStart > ctl.StartLSN && i > 0 {
			// Nothing valid here; the end is in (or at the end of) the previous segment.
			if err := os.Remove(path); err != nil {
				return res, err
			}
			res.Removed = append(res.Removed, f.Name)
			continue
		}
		if end == segStart+wal.LSN(segSize) && f.Partial {
			final := wal.SegmentFileName(f.TLI, f.SegNo, segSize)
			if err := os.Rename(path, filepath.Join(dir, final)); err != nil {
				return res, err
			}
			res.Renamed = final
		}
		res.End = end
		break
	}
	// Remove anything beyond the end (a .partial created just before a crash).
	for _, f := range mine {
		if wal.LSN(f.SegNo*segSize) > res.End {
			if err := os.Remove(filepath.Join(dir, f.Name)); err != nil && !os.IsNotExist(err) {
				return res, err
			}
			res.Removed = append(res.Removed, f.Name)
		}
	}
	if len(res.Removed) > 0 || res.Renamed != "" || res.Truncated > 0 {
		if err := SyncDir(dir); err != nil {
			return res, err
		}
	}
	return res, nil
}
