package walreader

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walmem"
)

// Archive is what the archive tier needs: whole verified segments.
type Archive interface {
	GetSegment(ctx context.Context, tli uint32, segno uint64, id archive.Identity) ([]byte, error)
}

// archiveFetchTimeout bounds fetching one segment (the SDK retries inside).
const archiveFetchTimeout = 2 * time.Minute

// ArchiveTier serves WAL from the archive: it fetches whole segments,
// verified against their recorded checksum, keeps the current one in
// memory and prefetches the next one while the consumer reads, so a
// catch-up read streams at the archive's throughput. It never asks for a
// segment the local files hold (the reader consults them first), and it
// prefetches only segments below the local start.
type ArchiveTier struct {
	ar         Archive
	id         archive.Identity
	localStart func() wal.LSN

	ctx    context.Context
	cancel context.CancelFunc

	cur *fetched // segment being read
	pf  *fetched // prefetch in flight or done
}

type fetched struct {
	tli   uint32
	segno uint64
	done  chan struct{}
	data  []byte
	err   error
}

// NewArchiveTier returns a tier reading from ar; localStart reports the
// first position held in local files (prefetching stops there).
func NewArchiveTier(ar Archive, id archive.Identity, localStart func() wal.LSN) *ArchiveTier {
	ctx, cancel := context.WithCancel(context.Background())
	return &ArchiveTier{ar: ar, id: id, localStart: localStart, ctx: ctx, cancel: cancel}
}

func (a *ArchiveTier) fetch(tli uint32, segno uint64) *fetched {
	f := &fetched{tli: tli, segno: segno, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		ctx, cancel := context.WithTimeout(a.ctx, archiveFetchTimeout)
		defer cancel()
		f.data, f.err = a.ar.GetSegment(ctx, tli, segno, a.id)
	}()
	return f
}

// ReadAt implements Tier. Waiting for a fetch ends with ctx (a consumer
// leaving, a shutdown).
func (a *ArchiveTier) ReadAt(ctx context.Context, p []byte, tli uint32, lsn wal.LSN) (int, error) {
	segno := wal.SegmentNo(lsn, a.id.SegSize)
	if a.cur == nil || a.cur.tli != tli || a.cur.segno != segno {
		f := a.pf
		a.pf = nil
		if f == nil || f.tli != tli || f.segno != segno {
			f = a.fetch(tli, segno)
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			a.pf = f // may still be of use to the next read
			return 0, ctx.Err()
		case <-a.ctx.Done():
			return 0, a.ctx.Err()
		}
		if errors.Is(f.err, archive.ErrNotFound) {
			return 0, ErrNotInTier
		}
		if f.err != nil {
			return 0, fmt.Errorf("read segment %s from the archive: %w", wal.SegmentFileName(tli, segno, a.id.SegSize), f.err)
		}
		a.cur = f
		next := segno + 1
		if wal.LSN(next*a.id.SegSize) < a.localStart() {
			a.pf = a.fetch(tli, next)
		}
	}
	off := wal.SegmentOffset(lsn, a.id.SegSize)
	return walmem.CopyCached(p, a.cur.data[off:]), nil
}

// Release drops the segments held in memory (the reader moved on to
// another tier); a prefetch in flight is abandoned.
func (a *ArchiveTier) Release() {
	a.cur, a.pf = nil, nil
}

// Name implements namer.
func (a *ArchiveTier) Name() string { return "archive" }

// Close implements Tier: it stops a prefetch in flight.
func (a *ArchiveTier) Close() error {
	a.cancel()
	a.cur, a.pf = nil, nil
	return nil
}
