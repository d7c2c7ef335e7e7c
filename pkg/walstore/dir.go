package walstore

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// DivergedDir holds WAL set aside at a timeline switch: bytes of the old
// timeline past the switch point, which the new timeline does not contain.
// They are never served, archived or removed.
const DivergedDir = "diverged"

// Dir is the directory of one timeline. It is the only place that knows
// the on-disk layout: segment files named as PostgreSQL names them (the one
// being written with PartialSuffix), "<TLI>.history" files, the control file
// and other small state files, and DivergedDir.
type Dir string

// Path returns the directory's path.
func (d Dir) Path() string { return string(d) }

// File returns the path of a state file kept in the directory.
func (d Dir) File(name string) string { return filepath.Join(string(d), name) }

// ReadControl reads the control file.
func (d Dir) ReadControl() (Control, error) { return ReadControl(d.File(ControlFileName)) }

// WriteControl atomically replaces the control file.
func (d Dir) WriteControl(c Control) error { return WriteControl(d.File(ControlFileName), c) }

// OpenSegment opens segment segno of timeline tli for reading, under its
// final name or, while it is being written, its ".partial" name. An open
// descriptor survives the rename that completes a segment and the unlink
// of a removed one. The error wraps os.ErrNotExist when neither exists.
func (d Dir) OpenSegment(tli uint32, segno, segSize uint64) (*os.File, error) {
	base := filepath.Join(string(d), wal.SegmentFileName(tli, segno, segSize))
	// The final name, then the partial one, then the final one again in
	// case the rename happened between the two attempts.
	var err error
	for _, p := range []string{base, base + PartialSuffix, base} {
		var f *os.File
		if f, err = os.Open(p); err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// ListSegments returns the segment files, sorted by (SegNo, TLI).
func (d Dir) ListSegments(segSize uint64) ([]SegmentFile, error) {
	return ListSegments(string(d), segSize)
}

// SealedSegments returns the complete segment files (fsynced and renamed
// to their final name), sorted by (SegNo, TLI).
func (d Dir) SealedSegments(segSize uint64) ([]SegmentFile, error) {
	all, err := d.ListSegments(segSize)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, f := range all {
		if !f.Partial && f.Size == int64(segSize) {
			out = append(out, f)
		}
	}
	return out, nil
}

// RemoveSegmentsBelow unlinks every segment file (of any timeline) that
// lies entirely before lsn, then fsyncs the directory. The caller records
// the new first LSN in the control file first, so that a crash in between
// leaves only files that Open removes, never a hole the control file claims
// is present.
func (d Dir) RemoveSegmentsBelow(lsn wal.LSN, segSize uint64) ([]string, error) {
	files, err := d.ListSegments(segSize)
	if err != nil {
		return nil, err
	}
	limit := wal.SegmentNo(lsn, segSize)
	var removed []string
	for _, f := range files {
		if f.SegNo >= limit {
			break
		}
		if err := os.Remove(filepath.Join(string(d), f.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("remove segment %s: %w", f.Name, err)
		}
		removed = append(removed, f.Name)
	}
	if len(removed) > 0 {
		if err := SyncDir(string(d)); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// SaveHistory stores a timeline history file atomically.
func (d Dir) SaveHistory(tli uint32, content []byte) error {
	return WriteFileAtomic(d.File(wal.HistoryFileName(tli)), content, 0o600)
}

// ReadHistory returns a stored timeline history file; the error wraps
// os.ErrNotExist when it is not stored.
func (d Dir) ReadHistory(tli uint32) ([]byte, error) {
	return os.ReadFile(d.File(wal.HistoryFileName(tli)))
}

// HasHistory reports whether the history file of tli is stored.
func (d Dir) HasHistory(tli uint32) bool {
	_, err := os.Stat(d.File(wal.HistoryFileName(tli)))
	return err == nil
}

// Histories returns the timelines whose history files are stored, ascending.
func (d Dir) Histories() ([]uint32, error) {
	ents, err := os.ReadDir(string(d))
	if err != nil {
		return nil, err
	}
	var out []uint32
	for _, e := range ents {
		if tli, ok := wal.ParseHistoryFileName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, tli)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// HistoryEntries returns the history of PostgreSQL timeline tli as stored:
// every TLI with the range of positions it covers, tli itself open-ended.
// Without a (parsable) history file, tli covers everything.
func (d Dir) HistoryEntries(tli uint32) []wal.HistoryEntry {
	if tli > 1 {
		if content, err := d.ReadHistory(tli); err == nil {
			if h, err := wal.ParseHistory(content, tli); err == nil {
				return h
			}
		}
	}
	return []wal.HistoryEntry{{TLI: tli, Begin: 0, End: wal.LSN(math.MaxUint64)}}
}

// SwitchHead returns the bytes of segment file tli that precede
// switchpoint in its segment: what the new timeline's first segment starts
// with. It is empty when the switch point is a segment boundary.
func (d Dir) SwitchHead(tli uint32, switchpoint wal.LSN, segSize uint64) ([]byte, error) {
	off := wal.SegmentOffset(switchpoint, segSize)
	if off == 0 {
		return nil, nil
	}
	f, err := d.OpenSegment(tli, wal.SegmentNo(switchpoint, segSize), segSize)
	if err != nil {
		return nil, fmt.Errorf("read segment holding the switch point: %w", err)
	}
	defer f.Close()
	head := make([]byte, off)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(off)), head); err != nil {
		return nil, fmt.Errorf("read segment holding the switch point: %w", err)
	}
	return head, nil
}

// StartTimeline writes the first segment of timeline newTLI, which begins
// at switchpoint: as PostgreSQL does, the segment starts with the old
// timeline's bytes before the switch point (head, from SwitchHead or the
// archive). It is written as a ".partial" file (temp, fsync, rename, fsync
// dir).
func (d Dir) StartTimeline(newTLI uint32, switchpoint wal.LSN, segSize uint64, head []byte) error {
	if uint64(len(head)) != wal.SegmentOffset(switchpoint, segSize) {
		return fmt.Errorf("first segment of timeline %d: %d bytes before the switch point %s, want %d",
			newTLI, len(head), switchpoint, wal.SegmentOffset(switchpoint, segSize))
	}
	name := d.File(wal.SegmentFileName(newTLI, wal.SegmentNo(switchpoint, segSize), segSize) + PartialSuffix)
	return WriteFileAtomic(name, head, 0o600)
}

// SetAsideDiverged moves segment files of timelines before tli that hold
// WAL past their timeline's switch point in hist (WAL that is not part of
// the history) into DivergedDir. The file of the segment holding a switch
// point that holds nothing past it (the old timeline ended exactly there)
// is removed instead: its bytes begin the newer timeline's file, which the
// caller wrote first. Files of timelines not on the history are left for
// the operator. It is idempotent.
func (d Dir) SetAsideDiverged(tli uint32, hist []wal.HistoryEntry, segSize uint64) ([]string, error) {
	files, err := d.ListSegments(segSize)
	if err != nil {
		return nil, err
	}
	dd := d.File(DivergedDir)
	var moved []string
	for _, f := range files {
		if f.TLI >= tli {
			continue
		}
		sp, _, ok := wal.SwitchPoint(hist, f.TLI)
		if !ok || f.SegNo < wal.SegmentNo(sp, segSize) {
			continue
		}
		if f.SegNo == wal.SegmentNo(sp, segSize) {
			empty, err := zeroFrom(d.File(f.Name), int64(wal.SegmentOffset(sp, segSize)))
			if err != nil {
				return moved, err
			}
			if empty {
				if err := os.Remove(d.File(f.Name)); err != nil {
					return moved, err
				}
				if err := SyncDir(string(d)); err != nil {
					return moved, err
				}
				continue
			}
		}
		if err := os.MkdirAll(dd, 0o700); err != nil {
			return moved, err
		}
		if err := os.Rename(d.File(f.Name), filepath.Join(dd, f.Name)); err != nil {
			return moved, err
		}
		moved = append(moved, f.Name)
	}
	if len(moved) > 0 {
		if err := SyncDir(dd); err != nil {
			return moved, err
		}
		if err := SyncDir(string(d)); err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// zeroFrom reports whether the file holds only zero bytes from off on.
func zeroFrom(path string, off int64) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := f.ReadAt(buf, off)
		for _, b := range buf[:n] {
			if b != 0 {
				return false, nil
			}
		}
		off += int64(n)
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// RemoveStaleTemps removes "*.tmp" files left by an atomic write that a
// crash interrupted.
func (d Dir) RemoveStaleTemps() ([]string, error) {
	ents, err := os.ReadDir(string(d))
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".tmp") {
			if err := os.Remove(d.File(e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return removed, err
			}
			removed = append(removed, e.Name())
		}
	}
	return removed, nil
}
