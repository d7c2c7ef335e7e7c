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
// the files agree with it. Everything before ctl.FlushLSN was durable when
// it was recorded; from the segment holding it, segments are scanned
// forward (page headers, record headers, CRCs) for as long as they hold
// valid WAL: a segment that proves complete is fsynced and, if it still
// carries ".partial" (a crash between filling it and the flush that
// renames it), renamed; the first segment where valid WAL stops is
// truncated there, and later segment files are removed. A later segment
// is never trusted on its own: after a power loss it may hold pages that
// reached the disk while an earlier, unsynced one did not. Bytes up to
// ctl.FlushLSN were acknowledged and are never cut, even when they end
// inside a record (the upstream flushes at page boundaries mid-record).
func Recover(dir string, ctl Control) (RecoveryResult, error) {
	res := RecoveryResult{ControlEnd: ctl.FlushLSN}
	segSize := ctl.WalSegSize
	files, err := ListSegments(dir, segSize)
	if err != nil {
		return res, err
	}
	bySeg := map[uint64]SegmentFile{}
	for _, f := range files {
		if f.TLI != ctl.TLI {
			continue
		}
		// A final name wins over a stale .partial of the same segment.
		if old, ok := bySeg[f.SegNo]; !ok || old.Partial {
			bySeg[f.SegNo] = f
		}
	}
	durable := max(ctl.FlushLSN, ctl.StartLSN)
	res.End = durable
	renamed := false
	// Segments wholly before the durable end are complete; one still named
	// ".partial" (left by an older version after a crash) gets its name.
	for segno, f := range bySeg {
		if segno < wal.SegmentNo(durable, segSize) && f.Partial && f.Size == int64(segSize) {
			if err := syncAndRename(dir, f, segSize); err != nil {
				return res, err
			}
			renamed = true
		}
	}
	for segno := wal.SegmentNo(durable, segSize); ; segno++ {
		f, ok := bySeg[segno]
		segStart := wal.LSN(segno * segSize)
		if !ok {
			// No file: the end is at or before this segment's start (a
			// crash right after the previous one was sealed leaves the
			// writer to create it).
			break
		}
		path := filepath.Join(dir, f.Name)
		fh, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return res, err
		}
		size := f.Size
		scan, err := wal.ScanSegment(fh, size, segStart, wal.ScanOptions{SegSize: segSize, SysID: ctl.SystemID, Magic: ctl.PageMagic})
		if err != nil {
			fh.Close()
			return res, fmt.Errorf("scan %s: %w", f.Name, err)
		}
		end := scan.End
		res.Scanned, res.ScanEnd = f.Name, scan.End
		if scan.Continues && !f.Partial {
			// Consistent to the last byte, ending inside a record that
			// carries on in the next segment: keep all of it.
			end = segStart + wal.LSN(size)
		}
		// A ".partial" that Continues is kept only to the end of its
		// last complete record (or the recorded flush position). Its
		// size proves nothing: it may be a preallocated file (see
		// prealloc) whose last page was written only in part, the rest
		// still the zeros it was filled with, which the scan cannot tell
		// from record data. Nothing after it was acknowledged: Sync
		// renames a sealed segment (and fsyncs the directory) before it
		// makes any later byte durable, so WAL acknowledged past a
		// segment's end is always in a segment with its final name. The
		// cut bytes are part of an unfinished record, which the upstream
		// sends again from the same segment.
		if scan.Switch && end > segStart+wal.LSN(size) {
			// An XLOG_SWITCH record, but not all of the rest of its
			// segment that the upstream sends after it: the end is what
			// is on disk, and the upstream sends the rest again. Taking
			// the next segment's start would leave a short segment that
			// no reader can read through.
			end = segStart + wal.LSN(size)
		}
		if ctl.FlushLSN > end && ctl.FlushLSN <= segStart+wal.LSN(f.Size) {
			end = ctl.FlushLSN
		}
		if end < segStart {
			end = segStart
		}
		complete := end == segStart+wal.LSN(segSize) && size == int64(segSize)
		if !complete && end < segStart+wal.LSN(f.Size) {
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
		res.End = end
		if !complete {
			if end == segStart && segStart > durable && f.Partial {
				// Nothing valid in it: the writer recreates it.
				if err := os.Remove(path); err != nil {
					return res, err
				}
				res.Removed = append(res.Removed, f.Name)
				delete(bySeg, segno)
			}
			break
		}
		if f.Partial {
			final := wal.SegmentFileName(f.TLI, f.SegNo, segSize)
			if err := os.Rename(path, filepath.Join(dir, final)); err != nil {
				return res, err
			}
			res.Renamed, renamed = final, true
		}
	}
	// Remove anything beyond the end (files a crash left past valid WAL).
	for segno, f := range bySeg {
		if wal.LSN(segno*segSize) > res.End {
			if err := os.Remove(filepath.Join(dir, f.Name)); err != nil && !os.IsNotExist(err) {
				return res, err
			}
			res.Removed = append(res.Removed, f.Name)
		}
	}
	if len(res.Removed) > 0 || renamed || res.Truncated > 0 {
		if err := SyncDir(dir); err != nil {
			return res, err
		}
	}
	return res, nil
}

// syncAndRename makes a complete ".partial" segment durable and gives it
// its final name.
func syncAndRename(dir string, f SegmentFile, segSize uint64) error {
	path := filepath.Join(dir, f.Name)
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = fh.Sync()
	fh.Close()
	if err != nil {
		return err
	}
	return os.Rename(path, filepath.Join(dir, wal.SegmentFileName(f.TLI, f.SegNo, segSize)))
}
