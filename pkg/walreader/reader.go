package walreader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// ErrNotInTier is returned by a Tier that does not hold the requested WAL.
var ErrNotInTier = errors.New("WAL not held by this tier")

// ErrUnavailable marks the error of a read that no tier can serve. The
// error also carries PostgreSQL's 58P01 "requested WAL segment %s has
// already been removed" for the consumer.
var ErrUnavailable = errors.New("requested WAL is not held by any tier")

// Tier is one source of WAL bytes. ReadAt reads into p the WAL of timeline
// tli starting at lsn; it never reads across a segment boundary, and the
// caller never asks for bytes beyond the durable end of WAL. A tier that
// may block on the network honours ctx.
type Tier interface {
	ReadAt(ctx context.Context, p []byte, tli uint32, lsn wal.LSN) (int, error)
	Close() error
}

// releaser is a tier that holds memory between reads; Release is called
// when another tier starts serving the reader.
type releaser interface{ Release() }

// namer is a tier with a name for observers: "memory", "local", "archive".
type namer interface{ Name() string }

// Observer is told of every successful read: the name of the tier that
// served it and how many bytes it read. Bytes the memory window lends to
// ReadOrLocate's caller are reported when the caller says they were sent
// (Lent), and only those. It is called on the reader's goroutine, must
// not block, and should not allocate.
type Observer interface {
	WALRead(tier string, n int)
}

// Reader reads WAL through its tiers in order.
type Reader struct {
	tiers   []Tier
	names   []string
	segSize uint64
	last    int // index of the tier that served the last read, -1 before
	// lentTier is the tier whose window the last ReadOrLocate lent, -1
	// when it lent none.
	lentTier int
	obs      []Observer
}

// New returns a reader over the given tiers, consulted in order.
func New(segSize uint64, tiers ...Tier) *Reader {
	names := make([]string, len(tiers))
	for i, t := range tiers {
		if n, ok := t.(namer); ok {
			names[i] = n.Name()
		}
	}
	return &Reader{tiers: tiers, names: names, segSize: segSize, last: -1, lentTier: -1}
}

// Observe adds an observer of the reader's reads (metrics, a consumer's
// status).
func (r *Reader) Observe(o Observer) { r.obs = append(r.obs, o) }

// LastTier returns the name of the tier that served the last read ("" before
// the first one).
func (r *Reader) LastTier() string {
	if r.last < 0 {
		return ""
	}
	return r.names[r.last]
}

// ReadAt fills p (up to the end of lsn's segment) with the WAL of timeline
// tli starting at lsn. It returns how many bytes it read; a short read
// means the end of the segment was reached. When no tier holds the WAL the
// error wraps ErrUnavailable and a *pgerr.Error with SQLSTATE 58P01.
func (r *Reader) ReadAt(ctx context.Context, p []byte, tli uint32, lsn wal.LSN) (int, error) {
	if room := r.segSize - wal.SegmentOffset(lsn, r.segSize); uint64(len(p)) > room {
		p = p[:room]
	}
	for i, t := range r.tiers {
		n, err := t.ReadAt(ctx, p, tli, lsn)
		if errors.Is(err, ErrNotInTier) {
			continue
		}
		r.served(i, n, err)
		return n, err
	}
	return 0, r.unavailable(tli, lsn)
}

// served records that tier i answered a read of n bytes with err.
func (r *Reader) served(i, n int, err error) {
	r.switchTo(i)
	if err == nil {
		r.count(i, n)
	}
}

// count tells the observers that tier i served n bytes.
func (r *Reader) count(i, n int) {
	for _, o := range r.obs {
		o.WALRead(r.names[i], n)
	}
}

// switchTo makes tier i the one serving the reader.
func (r *Reader) switchTo(i int) {
	if i != r.last {
		// Another tier took over (e.g. a catch-up read reached the
		// local files): the previous one may drop what it holds.
		if r.last >= 0 {
			if rel, ok := r.tiers[r.last].(releaser); ok {
				rel.Release()
			}
		}
		r.last = i
	}
}

func (r *Reader) unavailable(tli uint32, lsn wal.LSN) error {
	name := wal.SegmentFileName(tli, wal.SegmentNo(lsn, r.segSize), r.segSize)
	return fmt.Errorf("%w: %w", ErrUnavailable,
		pgerr.New(pgerr.UndefinedFile, "requested WAL segment %s has already been removed", name))
}

// Extent is where the N bytes of a ReadOrLocate are: in File from Off on
// when File is set; in the memory window Mem lends when Mem is set;
// otherwise in the caller's buffer. With File, Mapped may hold the same
// bytes in a read-only mapping of the file whose pages were all in the
// page cache when located: they are for a system call to read (a socket
// write), never for Go code (see segMap); valid, as File is, until the
// next call or Close.
type Extent struct {
	File   *os.File
	Off    int64
	Mapped []byte
	Mem    Lender
	N      int
}

// locator is a tier that can tell where in a file its bytes are instead
// of copying them, so that a sender can hand the file to the kernel
// (sendfile) rather than read it into user space.
type locator interface {
	Locate(tli uint32, lsn wal.LSN, n int) (*os.File, int64, []byte, error)
}

// ReadOrLocate is ReadAt for a sender that can send from a file or from
// memory without a copy: the tiers are consulted in the same order; the
// memory tier, when its window lends bytes (Lender) and holds lsn, answers
// with the window; a tier that keeps the WAL in a file (the local tier)
// answers with the open file and the offset; either instead of copying up
// to len(p) bytes into p. The archive tier fills p as ReadAt does. The
// file belongs to the reader: it is valid until the next call or Close.
// The caller never asks for bytes beyond the durable end of WAL, so the
// file holds them all; the window may move past them before they are
// borrowed, which the sender sees as a miss. Bytes the window lends are
// counted for the observers when the sender reports them sent (Lent).
func (r *Reader) ReadOrLocate(ctx context.Context, p []byte, tli uint32, lsn wal.LSN) (Extent, error) {
	if room := r.segSize - wal.SegmentOffset(lsn, r.segSize); uint64(len(p)) > room {
		p = p[:room]
	}
	r.lentTier = -1
	for i, t := range r.tiers {
		if mt, ok := t.(*MemoryTier); ok {
			if l := mt.lend(tli, lsn); l != nil {
				// Counted by Lent, once sent: the window may move
				// past the bytes first, and then the rest is read
				// (and counted) elsewhere.
				r.switchTo(i)
				r.lentTier = i
				return Extent{Mem: l, N: len(p)}, nil
			}
		}
		if lt, ok := t.(locator); ok {
			f, off, m, err := lt.Locate(tli, lsn, len(p))
			if errors.Is(err, ErrNotInTier) {
				continue
			}
			r.served(i, len(p), err)
			if err != nil {
				return Extent{}, err
			}
			return Extent{File: f, Off: off, Mapped: m, N: len(p)}, nil
		}
		n, err := t.ReadAt(ctx, p, tli, lsn)
		if errors.Is(err, ErrNotInTier) {
			continue
		}
		r.served(i, n, err)
		return Extent{N: n}, err
	}
	return Extent{}, r.unavailable(tli, lsn)
}

// Lent tells the observers that n bytes were sent from the window the
// last ReadOrLocate lent. Without such a lend it does nothing.
func (r *Reader) Lent(n int) {
	if n > 0 && r.lentTier >= 0 {
		r.count(r.lentTier, n)
	}
}

// Close closes all tiers.
func (r *Reader) Close() error {
	var first error
	for _, t := range r.tiers {
		if err := t.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// LocalTier reads the segment files of a timeline directory. It keeps the
// current segment open, so streaming costs one pread per message; the
// descriptor survives the rename that completes a segment and the unlink
// of a removed one. Locate also maps the segment (on Linux), once per
// segment: a finished one through the timeline's SegmentMaps when the
// tier shares them (ShareMaps), so that the timeline's consumers share
// one mapping; else (and always while the segment is being written) a
// mapping of its own, dropped with the descriptor. Mapped bytes are
// handed out only where the kernel maps them with huge entries (see
// segMap).
type LocalTier struct {
	dir     walstore.Dir
	segSize uint64

	f      *os.File
	tli    uint32
	segno  uint64
	mp     segMap
	mapped bool // mapping f was tried
	noMap  bool
}

// NewLocalTier returns a tier reading from dir, with mappings of its own.
func NewLocalTier(dir walstore.Dir, segSize uint64) *LocalTier {
	return &LocalTier{dir: dir, segSize: segSize}
}

// ShareMaps makes the tier take the mappings of finished segments from
// maps, shared with the other tiers given the same. Call it before the
// first read.
func (l *LocalTier) ShareMaps(maps *SegmentMaps) { l.mp.maps = maps }

// NoMapping makes Locate answer without a mapping, so that a sender uses
// sendfile or copies: for comparing the send paths, and a way around a
// file system where mapping misbehaves.
func (l *LocalTier) NoMapping() { l.noMap = true }

// MapSmallPages makes Locate hand out mapped bytes in the page cache also
// from regions the kernel maps with small page table entries, which
// streaming pays for (see segMap): for tests of the mapped send path on
// machines whose page cache holds no 2 MiB folios.
func (l *LocalTier) MapSmallPages() { l.mp.any = true }

func (l *LocalTier) open(tli uint32, segno uint64) error {
	if l.f != nil && l.tli == tli && l.segno == segno {
		return nil
	}
	l.Close()
	f, err := l.dir.OpenSegment(tli, segno, l.segSize)
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotInTier
	}
	if err != nil {
		return err
	}
	l.f, l.tli, l.segno = f, tli, segno
	return nil
}

// ReadAt implements Tier.
func (l *LocalTier) ReadAt(_ context.Context, p []byte, tli uint32, lsn wal.LSN) (int, error) {
	if err := l.open(tli, wal.SegmentNo(lsn, l.segSize)); err != nil {
		return 0, err
	}
	n, err := l.f.ReadAt(p, int64(wal.SegmentOffset(lsn, l.segSize)))
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// Name implements namer.
func (l *LocalTier) Name() string { return "local" }

// Locate implements locator: the open segment file holding lsn, the
// offset of lsn in it, and the n bytes from there in the segment's mapping
// when they are all in the page cache and mapped with huge entries (else
// nil; see segMap). They are durable WAL
// (the caller never asks for more); the file is not read.
func (l *LocalTier) Locate(tli uint32, lsn wal.LSN, n int) (*os.File, int64, []byte, error) {
	if err := l.open(tli, wal.SegmentNo(lsn, l.segSize)); err != nil {
		return nil, 0, nil, err
	}
	if !l.mapped && !l.noMap {
		l.mapped = true
		l.mp.mapFile(l.f, l.segno, l.segSize, strings.HasSuffix(l.f.Name(), walstore.PartialSuffix))
	}
	off := int64(wal.SegmentOffset(lsn, l.segSize))
	return l.f, off, l.mp.resident(off, n), nil
}

// Close implements Tier.
func (l *LocalTier) Close() error {
	l.mp.unmap()
	l.mapped = false
	if l.f != nil {
		err := l.f.Close()
		l.f = nil
		return err
	}
	return nil
}
