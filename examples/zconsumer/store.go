package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// segStore appends streamed WAL to PostgreSQL-named segment files in one
// directory, as pg_receivewal does: the segment being filled is
// "<name>.partial"; when it is full it is fsynced and renamed to "<name>".
//
// Bytes are durable up to Synced(). Anything written after it may be lost
// in a crash; that is why the consumer records (and reports as
// disk_consistent_lsn) only Synced(), and why opening the store at a
// recorded position cuts off whatever a previous run wrote past it.
type segStore struct {
	dir     string
	segSize uint64
	tli     uint32

	f      *os.File // the open .partial file of segment SegmentNo(pos); nil until written
	pos    wal.LSN  // end of WAL written
	synced wal.LSN  // end of WAL fsynced
}

// openStore prepares appending at pos on timeline tli. pos must be a
// position earlier runs made durable (or the start of a segment).
func openStore(dir string, tli uint32, segSize uint64, pos wal.LSN) (*segStore, error) {
	s := &segStore{dir: dir, segSize: segSize, tli: tli, pos: pos, synced: pos}
	if err := s.openSegment(); err != nil {
		return nil, err
	}
	return s, nil
}

// Pos is the end of the WAL written; Synced the end of the WAL fsynced.
func (s *segStore) Pos() wal.LSN    { return s.pos }
func (s *segStore) Synced() wal.LSN { return s.synced }
func (s *segStore) TLI() uint32     { return s.tli }

func (s *segStore) path(segno uint64) string {
	return filepath.Join(s.dir, wal.SegmentFileName(s.tli, segno, s.segSize))
}

// openSegment opens (or creates) the .partial file of the segment holding
// pos and positions it at pos, cutting off bytes beyond it.
func (s *segStore) openSegment() error {
	name := s.path(wal.SegmentNo(s.pos, s.segSize))
	partial := name + ".partial"
	off := int64(wal.SegmentOffset(s.pos, s.segSize))
	f, err := os.OpenFile(partial, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		// A complete segment whose completion was not recorded yet (a
		// crash between the rename and the state file): reopen it as a
		// partial one and continue inside it.
		if _, serr := os.Stat(name); serr == nil {
			if err := os.Rename(name, partial); err != nil {
				return err
			}
			if err := walstore.SyncDir(s.dir); err != nil {
				return err
			}
			f, err = os.OpenFile(partial, os.O_RDWR, 0)
		} else {
			f, err = os.OpenFile(partial, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
			if err == nil {
				err = walstore.SyncDir(s.dir)
			}
		}
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return err
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < off {
		err = fmt.Errorf("%s holds %d bytes, but the state file records %s as durable", partial, fi.Size(), s.pos)
	}
	if err == nil && fi.Size() > off {
		err = f.Truncate(off) // written after the last recorded position: not confirmed
	}
	if err == nil {
		_, err = f.Seek(off, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return err
	}
	s.f = f
	return nil
}

// Write appends WAL that starts at Pos().
func (s *segStore) Write(b []byte) error {
	for len(b) > 0 {
		if s.f == nil {
			if err := s.openSegment(); err != nil {
				return err
			}
		}
		n := min(uint64(len(b)), s.segSize-wal.SegmentOffset(s.pos, s.segSize))
		if _, err := s.f.Write(b[:n]); err != nil {
			return err
		}
		s.pos += wal.LSN(n)
		b = b[n:]
		if wal.SegmentOffset(s.pos, s.segSize) == 0 {
			if err := s.completeSegment(); err != nil {
				return err
			}
		}
	}
	return nil
}

// completeSegment makes the full segment durable and gives it its final
// name: fsync, rename, fsync the directory.
func (s *segStore) completeSegment() error {
	f := s.f
	s.f = nil
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	name := s.path(wal.SegmentNo(s.pos-1, s.segSize))
	if err := os.Rename(name+".partial", name); err != nil {
		return err
	}
	if err := walstore.SyncDir(s.dir); err != nil {
		return err
	}
	s.synced = s.pos
	return nil
}

// Sync makes everything written durable.
func (s *segStore) Sync() error {
	if s.f != nil && s.synced < s.pos {
		if err := s.f.Sync(); err != nil {
			return err
		}
	}
	s.synced = s.pos
	return nil
}

// SwitchTimeline makes what was written durable, leaves the old timeline's
// last segment as .partial (as pg_receivewal does) and continues on tli at
// pos, the start of the segment holding the switch point: PostgreSQL's
// first segment of a new timeline repeats the old timeline's bytes before
// the switch point, so the new file is complete only when streamed from its
// start.
func (s *segStore) SwitchTimeline(tli uint32, pos wal.LSN) error {
	if err := s.Close(); err != nil {
		return err
	}
	s.tli, s.pos, s.synced = tli, pos, pos
	return s.openSegment()
}

// Close makes what was written durable and closes the open file.
func (s *segStore) Close() error {
	err := s.Sync()
	if s.f != nil {
		if cerr := s.f.Close(); err == nil {
			err = cerr
		}
		s.f = nil
	}
	return err
}
