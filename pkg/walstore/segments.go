package walstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// PartialSuffix marks the segment being written.
const PartialSuffix = ".partial"

// SegmentFile describes one segment file found in a timeline directory.
type SegmentFile struct {
	Name    string // file name, with suffix
	TLI     uint32
	SegNo   uint64
	Partial bool
	Size    int64
}

// ListSegments returns the segment files in dir sorted by (SegNo, TLI).
func ListSegments(dir string, segSize uint64) ([]SegmentFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []SegmentFile
	for _, e := range ents {
		name := e.Name()
		base, partial := strings.CutSuffix(name, PartialSuffix)
		tli, segno, ok := wal.ParseSegmentFileName(base, segSize)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // removed since the directory was read
		}
		if err != nil {
			return nil, err
		}
		out = append(out, SegmentFile{Name: name, TLI: tli, SegNo: segno, Partial: partial, Size: info.Size()})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].SegNo != out[j].SegNo {
			return out[i].SegNo < out[j].SegNo
		}
		return out[i].TLI < out[j].TLI
	})
	return out, nil
}

// Writer appends WAL to the segment files of one timeline. Write and Sync
// may be called from different goroutines: one receiver writes, one flusher
// syncs, so an fsync never stalls the network read.
type Writer struct {
	dir     string
	tli     uint32
	segSize uint64

	mu      sync.Mutex
	cur     *os.File // current .partial segment; nil while not open (see Write)
	curSeg  uint64   // segment holding the end of written WAL
	closed  bool
	written wal.LSN   // end of bytes written (not necessarily durable)
	sealed  []*sealed // complete segments awaiting fsync + rename
	durable wal.LSN
	broken  error // set by a failed write or fsync (not by a full disk); the writer refuses all further work
	// next is the preallocation of segment curSeg+1 (or of curSeg, once
	// the writer moved past the segment it was started in), started when
	// the writer entered curSeg; nil when none was started.
	next *prealloc
	// fill zero-fills the rest of the current segment's file when it was
	// not preallocated (see tailFill); nil when none is under way.
	fill atomic.Pointer[tailFill]
	// catchingUp: the upstream is far ahead (SetCatchingUp), so segments
	// are created empty ahead of the writer and extended by its writes,
	// not zero-filled first.
	catchingUp atomic.Bool

	syncMu sync.Mutex // serializes Sync

	// refold: the names of finished segments waiting to be refolded
	// (see refoldLater).
	refoldMu      sync.Mutex
	refoldQueue   []string
	refoldRunning bool
	refoldIdle    chan struct{} // closed when the running goroutine ends
	refoldStop    atomic.Bool   // set once, by Close: no more refolds
}

// Preallocate makes writers prepare the next segment's file in the
// background (see prealloc). On by default; a variable so that a test can
// exercise the writer's own creation path.
var Preallocate = true

// prealloc is a segment file created, sized and made durable (file and
// directory entry) by a background goroutine while the writer fills the
// segment before it, as etcd's WAL file pipeline does, so that the
// receive goroutine never creates a file or fsyncs the directory on its
// way into a new segment: it only opens the file. The file is zero-filled
// (see fillSegment), so that the fdatasync of each flush into it writes
// back data only, never a change of the file's size or of its extents.
// The goroutine closes its descriptor when done, so that an idle timeline
// holds none. done is closed when the goroutine is finished; ok then says
// the file is on disk, full-size and durable, directory entry included;
// when the preallocation failed (a full disk, say) it was undone and the
// writer creates the file itself, as it did before. While the writer is
// catching up (SetCatchingUp) the file is created empty, not filled.
type prealloc struct {
	segno uint64
	done  chan struct{}
	ok    bool
	err   error
}

// fillSegment gives a new segment file its full size with real blocks.
// Zeros are written rather than fallocated: on ext4 and xfs a write into a
// fallocated (unwritten) extent still makes fdatasync commit the extent's
// conversion through the journal, which zero-filled blocks do not need
// (BenchmarkFdatasync). PostgreSQL's walreceiver zero-fills for the same
// reason.
var fillSegment = writeZeros

func (w *Writer) startPrealloc(segno uint64) *prealloc {
	p := &prealloc{segno: segno, done: make(chan struct{})}
	path := filepath.Join(w.dir, w.segName(segno)+PartialSuffix)
	size := int64(w.segSize)
	dir := w.dir
	fill := !w.catchingUp.Load()
	go func() {
		defer close(p.done)
		// Near a full disk the space is better left to the WAL due now:
		// the writer creates the file itself when it gets there.
		if free, err := FreeBytes(dir); err != nil || free < 2*uint64(size) {
			p.err = fmt.Errorf("%w: %d bytes free", ErrNoSpace, free)
			return
		}
		// O_EXCL: a file already there (which Recover would have removed
		// past the end of WAL) is left to the writer's own path.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			p.err = err
			return
		}
		if fill {
			err = fillSegment(f, size)
		}
		if err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = SyncDir(dir)
		}
		if err != nil {
			// Give the space back; a crash before the removal is durable
			// leaves a file past the end of WAL, which Recover removes
			// (or empties, at the end of WAL).
			f.Close()
			os.Remove(path)
			p.err = err
			return
		}
		if err := f.Close(); err != nil {
			os.Remove(path)
			p.err = err
			return
		}
		p.ok = true
	}()
	return p
}

// takePrealloc hands the preallocated file of w.curSeg, if there is one,
// to w.cur. It waits for a preallocation still under way: that happens
// only when the upstream fills a segment faster than the disk zero-fills
// one, and creating the file here instead would race with it.
func (w *Writer) takePrealloc() {
	p := w.next
	if p == nil || p.segno != w.curSeg {
		return
	}
	<-p.done
	w.next = nil
	if p.ok {
		path := filepath.Join(w.dir, w.segName(w.curSeg)+PartialSuffix)
		if f, err := os.OpenFile(path, os.O_RDWR, 0); err == nil {
			w.cur = f
		}
	}
}

// dropPrealloc waits for the preallocation and removes its file, which
// holds no WAL (the writer closes, or moves to another timeline).
func (w *Writer) dropPrealloc() {
	p := w.next
	if p == nil {
		return
	}
	<-p.done
	w.next = nil
	if !p.ok {
		return
	}
	os.Remove(filepath.Join(w.dir, w.segName(p.segno)+PartialSuffix))
}

// tailFill gives the segment file the writer is in its full size with
// zeros, in the background, when it was not preallocated: the segment a
// writer starts in after a restart (Recover and Close cut the file to the
// end of WAL), or one whose preallocation was skipped. Until then every
// fdatasync into it would commit a change of the file's size, the cost
// preallocation removes (BenchmarkFdatasync). The zeros are written in
// pieces under the writer's lock, each only past the writer's position at
// that moment, so that a zero never lands on WAL: the writer's later bytes
// overwrite zeros, never the reverse. The file is fsynced when done, so
// that the writer's next fdatasync finds the zeros already on disk.
type tailFill struct {
	segno uint64
	stop  atomic.Bool
	done  chan struct{}
	// filled: past it nothing was written to the file yet. Under the
	// writer's lock; set back when the writer cuts the file (a full disk,
	// a reopen), so that the fill never leaves a hole.
	filled uint64
}

// tailFillPiece is how many zeros go out per lock hold.
const tailFillPiece = 64 << 10

func (w *Writer) startTailFill(segno uint64) *tailFill {
	t := &tailFill{segno: segno, done: make(chan struct{})}
	path := filepath.Join(w.dir, w.segName(segno)+PartialSuffix)
	go func() {
		defer close(t.done)
		if free, err := FreeBytes(w.dir); err != nil || free < 2*w.segSize {
			return // near a full disk the space is for WAL
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return
		}
		w.mu.Lock()
		t.filled = max(t.filled, uint64(fi.Size()))
		w.mu.Unlock()
		zeros := make([]byte, tailFillPiece)
		for !t.stop.Load() {
			w.mu.Lock()
			if t.stop.Load() || w.closed || w.broken != nil || w.curSeg != segno {
				w.mu.Unlock()
				return // stopped, closed, or the writer filled the segment itself
			}
			lo := max(wal.SegmentOffset(w.written, w.segSize), t.filled)
			if lo >= w.segSize {
				w.mu.Unlock()
				break
			}
			hi := min(lo+tailFillPiece, w.segSize)
			_, err := f.WriteAt(zeros[:hi-lo], int64(lo))
			t.filled = hi
			if err != nil {
				// Give the space back (a full disk): the file ends at
				// the writer's position again.
				_ = f.Truncate(int64(wal.SegmentOffset(w.written, w.segSize)))
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
		}
		_ = f.Sync()
	}()
	return t
}

// fillTail starts a tail fill of the current segment when its file is
// short of the segment size and none is under way. w.mu is held.
func (w *Writer) fillTail() {
	if t := w.fill.Load(); Preallocate && w.cur != nil && (t == nil || t.segno != w.curSeg) {
		if fi, err := w.cur.Stat(); err == nil && uint64(fi.Size()) < w.segSize {
			w.fill.Store(w.startTailFill(w.curSeg))
		}
	}
}

// SetCatchingUp tells the writer whether the upstream is far ahead of it.
// Zero-filling a segment before writing WAL into it makes each commit's
// fdatasync write data only (see prealloc), but it writes every segment
// twice: a writer catching up on a backlog, whose flushes are megabytes,
// is bound by the disk and gains from writing once. So while catching up,
// segments are created (and their directory entries made durable) ahead
// of the writer as before, but empty, and the writer's own writes extend
// them; no tail fill runs. Once caught up, the segment the writer is in
// gets a tail fill, and the segments after it are zero-filled again.
func (w *Writer) SetCatchingUp(on bool) {
	if w.catchingUp.Load() == on {
		return // the usual case: the receiver says it with every message
	}
	if w.catchingUp.Swap(on) == on || on {
		return // a racing call got there first, or nothing to fill
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed && w.broken == nil {
		w.fillTail()
	}
}

// CatchingUp reports what SetCatchingUp last said.
func (w *Writer) CatchingUp() bool { return w.catchingUp.Load() }

// stopTailFill ends a tail fill under way and waits for it. w.mu must not
// be held.
func (w *Writer) stopTailFill() {
	if t := w.fill.Swap(nil); t != nil {
		t.stop.Store(true)
		<-t.done
	}
}

// settle waits for a preallocation or a tail fill under way (tests).
func (w *Writer) settle() {
	w.mu.Lock()
	p := w.next
	w.mu.Unlock()
	if p != nil {
		<-p.done
	}
	if t := w.fill.Load(); t != nil {
		<-t.done
	}
}

// ErrBroken marks a writer that hit a write or fsync error. PostgreSQL
// PANICs on a failed fsync: after one, the kernel may have dropped the dirty
// pages, so a later fsync that succeeds proves nothing. The only safe way
// on is a restart, whose recovery rescans what is really on disk.
var ErrBroken = errors.New("WAL writer failed; restart required")

// ErrNoSpace is returned by Write when the file system is full (ENOSPC,
// or EDQUOT for a quota). Unlike other write errors it leaves the writer
// usable: the written end stays where it was, the bytes of the failed
// write are truncated away, and a later Write of the same bytes carries
// on once space has been freed. Nothing durable is touched: only a failed
// fsync loses the guarantee that written pages reach the disk.
var ErrNoSpace = errors.New("no space left on device for WAL")

// IsNoSpace reports whether err is a file system running out of space.
func IsNoSpace(err error) bool {
	return errors.Is(err, ErrNoSpace) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

type sealed struct {
	f    *os.File
	name string // final name (without .partial)
}

// OpenWriter positions a writer at end, which must be the true end of valid
// WAL as returned by Recover (or a segment start for a new timeline).
//
// The writer holds no file until WAL arrives: the .partial file of the
// segment holding end is prepared here (created, or cut to end) and closed
// again, and the first Write opens it. An idle timeline thus costs no file
// descriptor, and a directory where the file cannot be made still fails
// here. When end is a segment start whose file cannot be created for lack
// of space, the writer opens anyway: the first Write creates the file, or
// reports ErrNoSpace, so that a node on a full disk still starts and
// serves.
func OpenWriter(dir string, tli uint32, segSize uint64, end wal.LSN) (*Writer, error) {
	w := &Writer{dir: dir, tli: tli, segSize: segSize, written: end, durable: end, curSeg: wal.SegmentNo(end, segSize)}
	if err := w.openSegment(w.curSeg, int64(wal.SegmentOffset(end, segSize)), false); err != nil {
		if !IsNoSpace(err) {
			return nil, err
		}
		return w, nil
	}
	// Nothing was written through it: closing loses nothing.
	w.cur.Close()
	w.cur = nil
	return w, nil
}

func (w *Writer) segName(segno uint64) string { return wal.SegmentFileName(w.tli, segno, w.segSize) }

// openSegment opens (creating if needed) the .partial file of segno, which
// is to hold size bytes. Bytes past size are cut off: they are past the
// end of WAL, never acknowledged. A file shorter than size is extended
// with zeros (OpenWriter's behaviour for a file Recover found missing)
// unless strict: when Write reopens a file it wrote itself, a short file
// means WAL reported durable is gone, and that is an error.
func (w *Writer) openSegment(segno uint64, size int64, strict bool) error {
	path := filepath.Join(w.dir, w.segName(segno)+PartialSuffix)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open segment: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %q: %w", path, err)
	}
	switch have := fi.Size(); {
	case have < size && strict:
		f.Close()
		return fmt.Errorf("segment %q holds %d bytes; WAL up to %d of them was written to it", path, have, size)
	case have == int64(w.segSize) && strict:
		// A preallocated file this writer wrote into: past size are the
		// zeros it was filled with. Cutting them would undo the
		// preallocation.
	case have != size:
		// Reopened files normally hold exactly size bytes: no metadata
		// write then.
		if err := f.Truncate(size); err != nil {
			f.Close()
			return fmt.Errorf("truncate %q: %w", path, err)
		}
		if t := w.fill.Load(); t != nil && t.segno == segno {
			t.filled = uint64(size) // a fill under way resumes from here
		}
	}
	if size == 0 {
		// A new file: make its directory entry durable before we report any
		// of its bytes as flushed.
		if err := SyncDir(w.dir); err != nil {
			f.Close()
			return err
		}
	}
	w.cur = f
	return nil
}

// Written returns the end of WAL written so far.
func (w *Writer) Written() wal.LSN {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written
}

// Durable returns the end of WAL made durable by Sync.
func (w *Writer) Durable() wal.LSN {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.durable
}

// ErrNotContiguous is returned when Write is handed bytes that do not start
// at the current end of WAL.
var ErrNotContiguous = errors.New("WAL data is not contiguous with the end of WAL")

// Write appends data, which must start at the current end of written WAL.
// Bytes that repeat WAL already written (start < end) are skipped.
func (w *Writer) Write(start wal.LSN, data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return w.broken
	}
	if w.closed {
		return errors.New("writer is closed")
	}
	if start > w.written {
		return fmt.Errorf("%w: got %s, end is %s", ErrNotContiguous, start, w.written)
	}
	if skip := uint64(w.written - start); skip > 0 {
		if skip >= uint64(len(data)) {
			return nil
		}
		data = data[skip:]
	}
	for len(data) > 0 {
		off := wal.SegmentOffset(w.written, w.segSize)
		if w.cur == nil {
			// The previous segment was just sealed: its successor was
			// normally preallocated meanwhile.
			if off == 0 {
				w.takePrealloc()
				if w.cur != nil && !w.catchingUp.Load() {
					// Created empty while catching up: zeros now.
					w.fillTail()
				}
			}
		}
		if w.cur == nil {
			// Not opened yet (OpenWriter does not keep it open), closed
			// by CloseIdle, not creatable earlier (a full disk), or not
			// preallocated. The file holds the bytes written, all durable
			// (CloseIdle closes only then), and maybe the zeros of its
			// preallocation: reopening it cuts nothing.
			if err := w.openSegment(w.curSeg, int64(off), true); err != nil {
				if IsNoSpace(err) {
					w.dropPrealloc()
					return fmt.Errorf("%w: create segment %s: %w", ErrNoSpace, w.segName(w.curSeg), err)
				}
				w.broken = fmt.Errorf("%w: %w", ErrBroken, err)
				return w.broken
			}
			if !w.catchingUp.Load() {
				w.fillTail()
			}
		}
		if Preallocate && w.next == nil {
			// Entering curSeg (or writing again after a restart): prepare
			// the next one.
			w.next = w.startPrealloc(w.curSeg + 1)
		}
		n := uint64(len(data))
		if room := w.segSize - off; n > room {
			n = room
		}
		// Positioned writes: a short write cannot shift later bytes.
		if _, err := pwrite(w.cur, data[:n], int64(off)); err != nil {
			if IsNoSpace(err) {
				// Give back the blocks of the partial write; the end of
				// written WAL has not moved, so nothing refers to them.
				_ = w.cur.Truncate(int64(off))
				// And stop filling the tail: the space is for WAL.
				if t := w.fill.Load(); t != nil {
					t.stop.Store(true)
				}
				// And the next segment's preallocation: the space is
				// better used by the WAL due now.
				w.dropPrealloc()
				return fmt.Errorf("%w: write segment %s at offset %d: %w", ErrNoSpace, w.segName(w.curSeg), off, err)
			}
			w.broken = fmt.Errorf("%w: write segment %s at offset %d: %w", ErrBroken, w.segName(w.curSeg), off, err)
			return w.broken
		}
		w.written += wal.LSN(n)
		data = data[n:]
		if off+n == w.segSize {
			w.sealed = append(w.sealed, &sealed{f: w.cur, name: w.segName(w.curSeg)})
			w.cur = nil
			w.curSeg++
		}
	}
	return nil
}

// Sync makes everything written so far durable and returns the new durable
// end. Complete segments are fsynced, renamed to their final name and the
// directory fsynced. Concurrent Writes continue while the fsync runs.
func (w *Writer) Sync() (wal.LSN, error) {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()

	w.mu.Lock()
	if w.broken != nil {
		defer w.mu.Unlock()
		return w.durable, w.broken
	}
	target := w.written
	cur := w.cur
	seal := w.sealed
	w.sealed = nil
	durable := w.durable
	w.mu.Unlock()

	if target == durable && len(seal) == 0 {
		return durable, nil
	}
	for _, s := range seal {
		if err := s.f.Sync(); err != nil {
			return durable, w.fail(fmt.Errorf("fsync segment %s: %w", s.name, err))
		}
	}
	if len(seal) > 0 {
		for _, s := range seal {
			if err := os.Rename(filepath.Join(w.dir, s.name+PartialSuffix), filepath.Join(w.dir, s.name)); err != nil {
				return durable, w.fail(fmt.Errorf("rename segment %s: %w", s.name, err))
			}
			s.f.Close()
			w.refoldLater(s.name)
		}
		if err := SyncDir(w.dir); err != nil {
			return durable, w.fail(err)
		}
	}
	if cur != nil {
		if err := fdatasync(cur, target-durable <= rawSyncMax); err != nil {
			return durable, w.fail(fmt.Errorf("fdatasync: %w", err))
		}
	}
	w.mu.Lock()
	if target > w.durable {
		w.durable = target
	}
	d := w.durable
	w.mu.Unlock()
	return d, nil
}

// fail marks the writer broken.
func (w *Writer) fail(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken == nil {
		w.broken = fmt.Errorf("%w: %w", ErrBroken, err)
	}
	return w.broken
}

// CloseIdle closes the current segment file when everything written is
// durable (Sync would have nothing to do), so that a timeline whose
// ingest went idle holds no file descriptor; the next Write opens the
// file again. With WAL not yet synced, or complete segments not yet
// renamed, it does nothing: call it after a Sync. (A preallocation of the
// next segment, or a tail fill of the current one, under way holds a
// descriptor of its own until it is done: at most one segment of zeros
// written and fsynced.) It never blocks a Write for longer than a close.
func (w *Writer) CloseIdle() error {
	w.syncMu.Lock() // no Sync is using cur meanwhile
	defer w.syncMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil || w.written != w.durable || len(w.sealed) > 0 {
		return nil
	}
	if w.cur == nil {
		return nil
	}
	f := w.cur
	w.cur = nil
	// Every byte was fdatasynced: a close error cannot lose WAL.
	return f.Close()
}

// Close syncs and closes the writer.
func (w *Writer) Close() error {
	w.stopTailFill()
	_, err := w.Sync()
	w.stopRefold()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	w.dropPrealloc()
	if w.cur != nil {
		if cerr := w.cur.Close(); err == nil {
			err = cerr
		}
		w.cur = nil
	}
	if w.broken == nil {
		// The current file ends at the written end again, as it did
		// before preallocation: the zeros past it are of no use to
		// anyone reading the directory (Recover would cut them anyway).
		path := filepath.Join(w.dir, w.segName(w.curSeg)+PartialSuffix)
		if fi, serr := os.Stat(path); serr == nil && fi.Size() > int64(wal.SegmentOffset(w.written, w.segSize)) {
			_ = os.Truncate(path, int64(wal.SegmentOffset(w.written, w.segSize)))
		}
	}
	return err
}
