package walmem

import (
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// wantChunks is how many chunks a window is cut into: the writer takes a
// chunk over as a whole and keeps the oldest chunk as a guard, so between
// (n-2)/n and (n-1)/n of the capacity holds readable WAL, and a reader
// copying from a chunk the writer wants back costs the window at most one
// chunk.
const wantChunks = 16

// minChunks is the fewest chunks a window works with: the one being
// written, the guard, and at least two readable.
const minChunks = 4

// minChunk is the smallest chunk: a WAL page.
const minChunk = wal.BlockSize

// invalid is the generation of a chunk that holds nothing readable.
const invalid = math.MaxUint64

// Window is the in-memory window of one timeline's most recent durable WAL.
// The zero value is not usable; a nil *Window is a disabled window (every
// read misses, writes are ignored).
type Window struct {
	chunkSize uint64 // a power of two
	shift     uint   // log2(chunkSize)
	nchunks   uint64
	capacity  uint64 // nchunks * chunkSize

	mu sync.Mutex           // serializes the writer side
	r  atomic.Pointer[ring] // nil until the first Write and after Release

	conflicts atomic.Uint64 // chunks not taken over because a reader was copying from them

	// spare is a chunk's memory prepared on huge pages off the ingest
	// path, for the next chunk the writer reaches for the first time;
	// preparing is set while a goroutine prepares it (see prepare).
	spare     atomic.Pointer[chunkMem]
	preparing atomic.Bool
}

// ring is the memory of a window between its first Write and its Release.
// A Release detaches it: readers still holding it read immutable bytes.
type ring struct {
	chunks []chunk

	// seq is odd while Switch changes tliEpoch, start and end together.
	seq      atomic.Uint64
	tliEpoch atomic.Uint64 // PostgreSQL timeline << 32 | epoch
	start    atomic.Uint64 // first readable position
	end      atomic.Uint64 // published durable end: nothing at or past it is readable

	// Writer side, under Window.mu.
	filled    uint64 // end of the bytes copied in, contiguous from start
	tli       uint32
	epoch     uint32
	allocated uint64 // chunks with memory
	newest    *chunk // the chunk that got memory last
}

type chunk struct {
	refs atomic.Int64  // readers copying from buf
	gen  atomic.Uint64 // base position | epoch bits, or invalid
	buf  []byte        // mem.b, allocated the first time the writer reaches the chunk
	mem  *chunkMem     // owns buf; reachable as long as a reader holds the chunk
	_    [16]byte      // one cache line per chunk: readers of neighbours do not share refs
}

// chunkMem is the memory of a chunk's buffer: from the Go heap, or mapped
// outside it (mem_linux.go), in which case it is unmapped by Release or,
// when a reader held the chunk then, by the collector once nothing holds
// it.
type chunkMem struct {
	b       []byte
	mapped  bool
	cleanup runtime.Cleanup
}

// New returns a window of at most size bytes, or nil (disabled) when size
// is too small to hold minChunks chunks of a WAL page.
func New(size uint64) *Window {
	cs := uint64(minChunk)
	if per := size / wantChunks; per > cs {
		cs = 1 << (bits.Len64(per) - 1) // the largest power of two not above per
	}
	n := size / cs
	if n < minChunks {
		return nil
	}
	return &Window{chunkSize: cs, shift: uint(bits.TrailingZeros64(cs)), nchunks: n, capacity: n * cs}
}

// Capacity returns the most bytes the window holds (0 for a disabled one).
func (w *Window) Capacity() uint64 {
	if w == nil {
		return 0
	}
	return w.capacity
}

// ChunkSize returns the unit in which the window is filled and evicted.
func (w *Window) ChunkSize() uint64 {
	if w == nil {
		return 0
	}
	return w.chunkSize
}

func (w *Window) genOf(base uint64, epoch uint32) uint64 {
	return base | uint64(epoch)&(w.chunkSize-1)
}

func (w *Window) chunkOf(r *ring, pos uint64) *chunk {
	return &r.chunks[(pos>>w.shift)%w.nchunks]
}

// ReadAt copies len(p) bytes of PostgreSQL timeline tli's WAL starting at
// lsn into p and reports true when the window holds all of them (durable
// and not overwritten); otherwise it reports false and p holds garbage. It
// never blocks and never allocates.
func (w *Window) ReadAt(p []byte, tli uint32, lsn wal.LSN) bool {
	if w == nil {
		return false
	}
	r := w.r.Load()
	if r == nil {
		return false
	}
	s := r.seq.Load()
	if s&1 != 0 {
		return false // a switch is under way
	}
	sn := snapshot{te: r.tliEpoch.Load(), start: r.start.Load(), end: r.end.Load()}
	if r.seq.Load() != s {
		return false
	}
	return w.copyOut(r, sn, p, tli, uint64(lsn))
}

// snapshot is a consistent view of a ring's timeline, epoch and range.
type snapshot struct{ te, start, end uint64 }

// copyOut copies p from r at pos when the snapshot says the window holds it
// and every chunk read still holds it.
func (w *Window) copyOut(r *ring, sn snapshot, p []byte, tli uint32, pos uint64) bool {
	if uint32(sn.te>>32) != tli || pos < sn.start || pos+uint64(len(p)) > sn.end || pos+uint64(len(p)) < pos {
		return false
	}
	epoch := uint32(sn.te)
	for len(p) > 0 {
		base := pos &^ (w.chunkSize - 1)
		c := w.chunkOf(r, pos)
		c.refs.Add(1)
		if c.gen.Load() != w.genOf(base, epoch) {
			// Taken over by the writer (the window moved past pos) or
			// by a switch.
			c.refs.Add(-1)
			return false
		}
		n := CopyCached(p, c.buf[pos-base:])
		c.refs.Add(-1)
		p = p[n:]
		pos += uint64(n)
	}
	return true
}

// Pin holds a chunk of a window against being taken over by the writer
// (see Borrow). The zero Pin holds nothing.
type Pin struct{ c *chunk }

// Release lets the writer take the chunk over again.
func (p Pin) Release() {
	if p.c != nil {
		p.c.refs.Add(-1)
	}
}

// Borrow returns the window's own bytes of PostgreSQL timeline tli from lsn
// on, without copying them: at most n bytes, and no further than the end
// of the chunk holding lsn or the published durable end. ok is false when
// the window does not hold lsn (not durable, moved past, or another
// timeline). The chunk is pinned, as by a reader copying from it, until
// the Pin is released; release it after one non-blocking use (a write to
// a socket): while it is pinned the writer skips the chunk when it comes
// round, and the window restarts after it.
func (w *Window) Borrow(tli uint32, lsn wal.LSN, n int) (b []byte, p Pin, ok bool) {
	if w == nil || n <= 0 {
		return nil, Pin{}, false
	}
	r := w.r.Load()
	if r == nil {
		return nil, Pin{}, false
	}
	s := r.seq.Load()
	if s&1 != 0 {
		return nil, Pin{}, false // a switch is under way
	}
	sn := snapshot{te: r.tliEpoch.Load(), start: r.start.Load(), end: r.end.Load()}
	if r.seq.Load() != s {
		return nil, Pin{}, false
	}
	pos := uint64(lsn)
	if uint32(sn.te>>32) != tli || pos < sn.start || pos >= sn.end {
		return nil, Pin{}, false
	}
	base := pos &^ (w.chunkSize - 1)
	k := min(uint64(n), sn.end-pos, base+w.chunkSize-pos)
	c := w.chunkOf(r, pos)
	c.refs.Add(1)
	if c.gen.Load() != w.genOf(base, uint32(sn.te)) {
		c.refs.Add(-1)
		return nil, Pin{}, false
	}
	off := pos - base
	return c.buf[off : off+k : off+k], Pin{c}, true
}

// Write copies WAL of PostgreSQL timeline tli appended at start into the
// window; it becomes readable when Publish reaches past it. Bytes below
// what the window already holds are skipped (a re-sent range), a gap
// starts the window over at start. Call it before the bytes go to the
// segment file, so that the window never lags the durable end.
func (w *Window) Write(tli uint32, start wal.LSN, data []byte) {
	if w == nil || len(data) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.r.Load()
	if r == nil {
		r = &ring{chunks: make([]chunk, w.nchunks), tli: tli, filled: uint64(start)}
		for i := range r.chunks {
			r.chunks[i].gen.Store(invalid)
		}
		r.tliEpoch.Store(uint64(tli) << 32)
		r.start.Store(uint64(start))
		r.end.Store(uint64(start))
		w.r.Store(r)
	}
	if tli != r.tli {
		return // not the timeline the window is on (Switch comes first)
	}
	pos := uint64(start)
	if end := pos + uint64(len(data)); end <= r.filled {
		return
	}
	if pos > r.filled {
		r.start.Store(pos)
		r.filled = pos
	} else {
		data = data[r.filled-pos:]
		pos = r.filled
	}
	for len(data) > 0 {
		base := pos &^ (w.chunkSize - 1)
		c := w.chunkOf(r, pos)
		if c.gen.Load() != w.genOf(base, r.epoch) && !w.claim(r, c, base) {
			// A reader is copying from the chunk: leave it alone and
			// start the window over at the next chunk.
			next := base + w.chunkSize
			skip := min(next-pos, uint64(len(data)))
			r.start.Store(next)
			r.filled = next
			data = data[skip:]
			pos += skip
			continue
		}
		n := copy(c.buf[pos-base:], data)
		data = data[n:]
		pos += uint64(n)
		r.filled = pos
		if c == r.newest && pos-base >= w.chunkSize/2 && r.allocated < w.nchunks {
			// Half way through the newest chunk: the timeline will
			// want another.
			w.prepare()
		}
	}
}

// claim takes chunk c over for the bytes from base, in the current epoch.
// It fails, leaving the chunk invalid, when a reader is copying from it.
func (w *Window) claim(r *ring, c *chunk, base uint64) bool {
	if lo := base + 2*w.chunkSize; lo > w.capacity && lo-w.capacity > r.start.Load() {
		// What the chunk held leaves the window, and so does the chunk
		// after it (the next one to be taken over): a guard, so that a
		// reader finds a chunk taken from under it only when it was
		// delayed for a whole chunk of ingest between its check and its
		// copy.
		r.start.Store(lo - w.capacity)
	}
	c.gen.Store(invalid)
	if c.refs.Load() != 0 {
		w.conflicts.Add(1)
		return false
	}
	if c.buf == nil {
		m := w.spare.Swap(nil)
		if m == nil {
			m = newChunkMem(w.chunkSize, false)
		}
		c.mem, c.buf = m, m.b
		r.allocated++
		r.newest = c
	}
	c.gen.Store(w.genOf(base, r.epoch))
	return true
}

// prepare makes the memory of the next chunk the writer will allocate on
// huge pages, once the writer is half way through the newest chunk (so a
// timeline that received little holds no chunk ahead), on a goroutine of
// its own: populating huge pages may make the kernel compact memory first,
// which the ingest path must not wait for. The writer takes it if it is
// ready when needed, and otherwise maps small pages. At most one is
// prepared at a time, and one kept; Release frees it, and one finished
// after a Release is freed at once.
func (w *Window) prepare() {
	if !hugeChunks(w.chunkSize) || w.spare.Load() != nil || !w.preparing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		m := newChunkMem(w.chunkSize, true)
		w.mu.Lock()
		if w.r.Load() != nil && w.spare.Load() == nil {
			w.spare.Store(m)
			m = nil
		}
		w.preparing.Store(false)
		w.mu.Unlock()
		if m != nil {
			m.free()
		}
	}()
}

// Truncate forgets the bytes written at and past lsn that are not published
// (the segment file write that was to follow them failed; they will be
// written again).
func (w *Window) Truncate(lsn wal.LSN) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.r.Load()
	if r == nil || uint64(lsn) >= r.filled {
		return
	}
	r.filled = max(uint64(lsn), r.start.Load(), r.end.Load())
}

// Publish makes the window readable up to lsn, the new durable end of WAL
// (or as far as it holds bytes). Call it before the durable end is
// published to readers.
func (w *Window) Publish(lsn wal.LSN) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.r.Load()
	if r == nil {
		return
	}
	if e := min(uint64(lsn), r.filled); e > r.end.Load() {
		r.end.Store(e)
	}
}

// Switch moves the window to PostgreSQL timeline newTLI, which forked at
// switchpoint: what the window held past switchpoint is dropped, what lies
// before it (in the chunk holding it) stays readable as newTLI's, and
// readers of the old timeline miss from now on. Everything up to
// switchpoint must be durable (the timeline syncs before it switches).
func (w *Window) Switch(newTLI uint32, switchpoint wal.LSN) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.r.Load()
	if r == nil {
		return
	}
	sp := uint64(switchpoint)
	r.seq.Add(1)
	defer r.seq.Add(1)
	r.epoch++
	r.tli = newTLI
	r.tliEpoch.Store(uint64(newTLI)<<32 | uint64(r.epoch))
	if r.end.Load() > sp {
		r.end.Store(sp)
	}
	start := r.start.Load()
	keep := start <= sp && sp <= r.filled // the window holds everything up to sp
	base := sp &^ (w.chunkSize - 1)
	if !w.claim(r, w.chunkOf(r, sp), base) {
		r.start.Store(base + w.chunkSize)
		r.filled = base + w.chunkSize
		return
	}
	if keep {
		// Chunks before base are of the old epoch: they no longer match.
		r.start.Store(max(r.start.Load(), base))
		r.end.Store(sp)
	} else {
		r.start.Store(sp)
	}
	r.filled = sp
}

// Release drops the window's memory (an idle timeline); the next Write
// allocates again. Readers holding the old memory finish their copy: a
// chunk no reader holds is freed at once, as the writer takes chunks over
// (its generation made invalid first, so a reader arriving later misses);
// one a reader holds is left to the collector.
func (w *Window) Release() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.r.Load()
	if r == nil {
		return
	}
	w.r.Store(nil)
	if m := w.spare.Swap(nil); m != nil {
		m.free()
	}
	for i := range r.chunks {
		c := &r.chunks[i]
		c.gen.Store(invalid)
		if c.mem != nil && c.refs.Load() == 0 {
			c.mem.free()
			c.buf, c.mem = nil, nil // no pointer into unmapped memory stays
		}
	}
}

// Stats describes a window.
type Stats struct {
	Start, End wal.LSN // readable range; empty when Start >= End
	TLI        uint32
	Allocated  uint64 // bytes of chunk buffers allocated, a prepared one included
	Conflicts  uint64 // chunks skipped because a reader was copying from them
}

// Stats returns the window's state.
func (w *Window) Stats() Stats {
	if w == nil {
		return Stats{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Stats{Conflicts: w.conflicts.Load()}
	r := w.r.Load()
	if r == nil {
		return s
	}
	s.Start, s.End, s.TLI = wal.LSN(r.start.Load()), wal.LSN(r.end.Load()), r.tli
	for i := range r.chunks {
		if r.chunks[i].buf != nil {
			s.Allocated += w.chunkSize
		}
	}
	if w.spare.Load() != nil {
		s.Allocated += w.chunkSize
	}
	return s
}
