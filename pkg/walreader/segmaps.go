package walreader

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pagemap"
)

// SegmentMaps keeps the read-only mappings of one timeline's finished
// segment files, shared by all of the timeline's consumers (their
// LocalTiers, see ShareMaps). A consumer streaming from a segment maps it
// through here; when it moves on, the mapping stays for the next consumer
// to stream the same range, until nobody has used it for the idle time,
// its segment is removed (DropBelow), or the unused mappings exceed their
// bytes (the least recently used go first). Beyond the process's
// MapBudget a timeline letting go of a mapping drops its own least
// recently used unused ones; it takes none from other timelines.
//
// What this saves is the page table work: on this project's reference VM
// each 2 MiB region a stream maps with a huge entry and unmaps again costs
// page table updates that trap to the hypervisor; with the probes and the
// unmapping, about 14 % of the CPU of serving a GiB from files
// (docs/performance.md, P1). A mapping kept once per timeline pays them
// once per region, whatever the number of consumers. It holds no memory
// of its own: the pages are the page cache's, which the kernel may still
// reclaim (a consumer then copies from the file again). They count in the
// process's RSS as file pages (RssFile) while mapped.
//
// Segments still being written (".partial") are mapped per consumer and
// unmapped when it moves on, as without SegmentMaps: their page cache is
// not yet in the 2 MiB folios the writer gives a finished segment
// (walstore.Refold), and while the writer catches up the file grows.
type SegmentMaps struct {
	idle     time.Duration
	maxBytes int64
	budget   *MapBudget

	mu          sync.Mutex
	byFile      map[fileID]*sharedMap
	unusedBytes int64       // of the kept mappings nobody holds
	keptBytes   int64       // of all kept mappings
	below       uint64      // segments before it are removed (DropBelow)
	timer       *time.Timer // armed while an unused mapping is kept
	closed      bool
}

// MapBudget bounds the unused mappings kept by all the SegmentMaps given
// it together, a process's timelines: each mapping is one entry in the
// process's memory map, whose size the kernel limits (vm.max_map_count,
// 65530 by default), and the Go runtime fails when it cannot map memory.
type MapBudget struct {
	max  int64
	kept atomic.Int64
}

// NewMapBudget returns a budget of max unused mappings.
func NewMapBudget(max int) *MapBudget { return &MapBudget{max: int64(max)} }

// hugeSize is the span of one huge page table entry.
const hugeSize = pagemap.HugeSize

// fileID identifies a segment file whatever its name: its device and
// inode. A mapping keeps its inode alive, so the number is not reused
// while the entry exists.
type fileID struct{ dev, ino uint64 }

// sharedMap is one segment file's mapping and what consumers learnt about
// it.
type sharedMap struct {
	id    fileID
	segno uint64
	b     []byte
	// huge says per 2 MiB region of b whether it is mapped with one huge
	// entry: 0 not probed yet, 1 yes; negative: not when probed, at
	// minus that time (see segMap.resident).
	huge []atomic.Int64
	// owner keeps the mapping for others; nil: the holder's own.
	owner *SegmentMaps
	// Under owner.mu:
	refs   int       // consumers holding it
	used   time.Time // when the last one let go
	shared bool      // in owner.byFile; else unmapped when let go
}

// NewSegmentMaps returns an empty set that drops a mapping nobody has used
// for idle (0: as soon as it is let go) and keeps at most maxBytes of
// unused mappings, and no more than budget allows (nil: no limit).
func NewSegmentMaps(idle time.Duration, maxBytes int64, budget *MapBudget) *SegmentMaps {
	return &SegmentMaps{idle: idle, maxBytes: maxBytes, budget: budget, byFile: map[fileID]*sharedMap{}}
}

// acquire returns the mapping of f, segment segno, of at most size bytes:
// the shared one when share is set and c is not nil (made on first use),
// else one of the caller's own. nil when the file cannot be mapped.
func (c *SegmentMaps) acquire(f *os.File, segno, size uint64, share bool) *sharedMap {
	id, n, ok := fileIdentity(f)
	if !ok {
		return nil
	}
	n = min(n, int64(size))
	if n <= 0 {
		return nil
	}
	if share && c != nil {
		if e, ok := c.acquireShared(f, id, segno, n); ok {
			return e
		}
	}
	return newSharedMap(f, id, segno, n)
}

// newSharedMap maps the first n bytes of f, held once, owned by nobody.
func newSharedMap(f *os.File, id fileID, segno uint64, n int64) *sharedMap {
	b, ok := mapSegment(f, n)
	if !ok {
		return nil
	}
	return &sharedMap{id: id, segno: segno, b: b, huge: make([]atomic.Int64, (n+hugeSize-1)/hugeSize), refs: 1}
}

// acquireShared returns the kept mapping of the file, made if needed (nil
// if that fails); false when the segment is not to be shared.
func (c *SegmentMaps) acquireShared(f *os.File, id fileID, segno uint64, n int64) (*sharedMap, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || segno < c.below {
		return nil, false
	}
	if e := c.byFile[id]; e != nil && int64(len(e.b)) == n {
		if e.refs == 0 {
			c.unusedLocked(e, -1)
		}
		e.refs++
		return e, true
	}
	e := newSharedMap(f, id, segno, n)
	if e == nil {
		return nil, true
	}
	if old := c.byFile[id]; old != nil {
		// The file grew since it was mapped: the old mapping goes once
		// its holders let go.
		c.dropLocked(old)
	}
	e.owner, e.shared = c, true
	c.byFile[id] = e
	c.keptBytes += int64(len(e.b))
	return e, true
}

// release lets go of e: a mapping of the caller's own is unmapped, a kept
// one stays for the next consumer (see SegmentMaps).
func (e *sharedMap) release() {
	c := e.owner
	if c == nil {
		unmapSegment(e.b)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs > 0 {
		return
	}
	if !e.shared {
		unmapSegment(e.b)
		return
	}
	e.used = time.Now()
	c.unusedLocked(e, +1)
	c.trimLocked(e.used)
	if c.unusedBytes > 0 && c.timer == nil {
		c.timer = time.AfterFunc(c.sweepEvery(), c.sweep)
	}
}

// unusedLocked counts e, kept and held by nobody, in or (sign -1) out of
// the unused mappings.
func (c *SegmentMaps) unusedLocked(e *sharedMap, sign int64) {
	c.unusedBytes += sign * int64(len(e.b))
	if c.budget != nil {
		c.budget.kept.Add(sign)
	}
}

func (c *SegmentMaps) sweepEvery() time.Duration { return max(c.idle/6, 10*time.Millisecond) }

// sweep drops the mappings idle for long enough, and comes back while
// unused ones remain.
func (c *SegmentMaps) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = nil
	if c.closed {
		return
	}
	c.trimLocked(time.Now())
	if c.unusedBytes > 0 {
		c.timer = time.AfterFunc(c.sweepEvery(), c.sweep)
	}
}

// DropBelow drops the mappings of segments before segno, the local start
// after retention removed what lay before it, so that their blocks are
// freed: at once where unused, else when let go. Segments before segno
// are not shared from then on. The bound follows the local start both
// ways: a new timeline forked before it moves it back.
func (c *SegmentMaps) DropBelow(segno uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.below = segno
	for _, e := range c.byFile {
		if e.segno < c.below {
			c.dropLocked(e)
		}
	}
}

// trimLocked drops unused mappings idle since idle before now, then the
// least recently used beyond maxBytes or the budget.
func (c *SegmentMaps) trimLocked(now time.Time) {
	for _, e := range c.byFile {
		if e.refs == 0 && now.Sub(e.used) >= c.idle {
			c.dropLocked(e)
		}
	}
	for c.unusedBytes > c.maxBytes || (c.budget != nil && c.budget.kept.Load() > c.budget.max && c.unusedBytes > 0) {
		var oldest *sharedMap
		for _, e := range c.byFile {
			if e.refs == 0 && (oldest == nil || e.used.Before(oldest.used)) {
				oldest = e
			}
		}
		if oldest == nil {
			return
		}
		c.dropLocked(oldest)
	}
}

// dropLocked takes e out of the set, unmapping it now if nobody holds it
// and else when the last holder lets go.
func (c *SegmentMaps) dropLocked(e *sharedMap) {
	delete(c.byFile, e.id)
	c.keptBytes -= int64(len(e.b))
	e.shared = false
	if e.refs == 0 {
		c.unusedLocked(e, -1)
		unmapSegment(e.b)
	}
}

// Mapped returns how many segment mappings are kept, in use or not.
func (c *SegmentMaps) Mapped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byFile)
}

// MappedBytes returns the size of the kept mappings, in use or not.
func (c *SegmentMaps) MappedBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keptBytes
}

// Close drops every unused mapping; those in use are dropped when let go.
func (c *SegmentMaps) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	for _, e := range c.byFile {
		c.dropLocked(e)
	}
}
