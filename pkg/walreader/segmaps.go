package walreader

import (
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// SegmentMaps keeps the read-only mappings of one timeline's finished
// segment files, shared by all of the timeline's consumers (their
// LocalTiers, see ShareMaps). A consumer streaming from a segment maps it
// through here; when it moves on, the mapping stays for the next consumer
// to stream the same range, until nobody has used it for the idle time,
// its segment is removed, or more than max mappings are idle (the least
// recently used go first).
//
// What this saves is the page table work: on this project's reference VM
// each 2 MiB region a stream maps with a huge entry and unmaps again costs
// two page table updates that trap to the hypervisor, about 8 % of the
// CPU of serving a GiB from files (docs/performance.md, P1). A mapping
// kept once per timeline pays them once per region, whatever the number
// of consumers. It holds no memory of its own: the pages are the page
// cache's, which the kernel may still reclaim (a consumer then copies
// from the file again). They count in the process's RSS as file pages
// (RssFile) while mapped. A mapping of a segment that was removed keeps
// its disk blocks until it is dropped: at the next sweep (every idle/6)
// when removed says so, else after the idle time.
//
// Segments still being written (".partial") are mapped per consumer and
// unmapped when it moves on, as without SegmentMaps: the writer refolds a
// segment's page cache once it is finished, which the kernel cannot do
// for pages still mapped.
type SegmentMaps struct {
	idle    time.Duration
	max     int
	removed func(tli uint32, segno uint64) bool

	mu     sync.Mutex
	byFile map[fileID]*sharedMap
	timer  *time.Timer // armed while an unused mapping is kept
	closed bool
}

// fileID identifies a segment file whatever its name: its device and
// inode. A mapping keeps its inode alive, so the number is not reused
// while the entry exists.
type fileID struct{ dev, ino uint64 }

// sharedMap is one segment file's mapping and what consumers learnt about
// it.
type sharedMap struct {
	id    fileID
	tli   uint32
	segno uint64
	b     []byte
	// huge says per 2 MiB region of b whether it is mapped with one huge
	// entry: 0 not probed yet, 1 yes, -1 no (see segMap.resident).
	huge []atomic.Int32
	// Under SegmentMaps.mu:
	refs   int       // consumers holding it
	used   time.Time // when the last one let go
	shared bool      // in byFile; else unmapped when let go
}

// NewSegmentMaps returns an empty set that drops a mapping nobody has used
// for idle (0: as soon as it is let go), keeps at most max unused ones,
// and drops those of segments removed reports gone (nil: none is).
func NewSegmentMaps(idle time.Duration, max int, removed func(tli uint32, segno uint64) bool) *SegmentMaps {
	return &SegmentMaps{idle: idle, max: max, removed: removed, byFile: map[fileID]*sharedMap{}}
}

// acquire returns the mapping of f, segment segno of timeline tli, of at
// most size bytes: the shared one when share is set (made on first use),
// else one of the caller's own. nil when the file cannot be mapped.
func (c *SegmentMaps) acquire(f *os.File, tli uint32, segno, size uint64, share bool) *sharedMap {
	id, n, ok := fileIdentity(f)
	if !ok {
		return nil
	}
	n = min(n, int64(size))
	if n <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	share = share && !c.closed && c.idle > 0
	if share {
		if e := c.byFile[id]; e != nil && int64(len(e.b)) == n {
			e.refs++
			return e
		}
	}
	b, ok := mapSegment(f, n)
	if !ok {
		return nil
	}
	e := &sharedMap{id: id, tli: tli, segno: segno, b: b, huge: make([]atomic.Int32, (n+hugeSize-1)/hugeSize), refs: 1}
	if share {
		if old := c.byFile[id]; old != nil {
			// The file grew since it was mapped: the old mapping goes
			// once its holders let go.
			old.shared = false
			delete(c.byFile, id)
			if old.refs == 0 {
				unmapSegment(old.b)
			}
		}
		e.shared = true
		c.byFile[id] = e
		c.trimLocked(time.Now())
	}
	return e
}

// release lets go of e.
func (c *SegmentMaps) release(e *sharedMap) {
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
	c.trimLocked(e.used)
	if e.shared && c.timer == nil {
		c.timer = time.AfterFunc(c.sweepEvery(), c.sweep)
	}
}

func (c *SegmentMaps) sweepEvery() time.Duration { return max(c.idle/6, 10*time.Millisecond) }

// sweep drops the mappings idle for long enough or of removed segments,
// and comes back while unused ones remain.
func (c *SegmentMaps) sweep() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = nil
	if c.closed {
		return
	}
	c.trimLocked(time.Now())
	for _, e := range c.byFile {
		if e.refs == 0 {
			c.timer = time.AfterFunc(c.sweepEvery(), c.sweep)
			return
		}
	}
}

// trimLocked drops unused mappings that are idle since idle before now or
// of removed segments, then the least recently used beyond max.
func (c *SegmentMaps) trimLocked(now time.Time) {
	unused := 0
	for id, e := range c.byFile {
		if e.refs > 0 {
			continue
		}
		if now.Sub(e.used) >= c.idle || (c.removed != nil && c.removed(e.tli, e.segno)) {
			c.dropLocked(id, e)
			continue
		}
		unused++
	}
	for ; unused > c.max; unused-- {
		var oldest *sharedMap
		for _, e := range c.byFile {
			if e.refs == 0 && (oldest == nil || e.used.Before(oldest.used)) {
				oldest = e
			}
		}
		c.dropLocked(oldest.id, oldest)
	}
}

func (c *SegmentMaps) dropLocked(id fileID, e *sharedMap) {
	delete(c.byFile, id)
	e.shared = false
	unmapSegment(e.b)
}

// Mapped returns how many segment mappings are kept, in use or not.
func (c *SegmentMaps) Mapped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byFile)
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
	for id, e := range c.byFile {
		delete(c.byFile, id)
		e.shared = false
		if e.refs == 0 {
			unmapSegment(e.b)
		}
	}
}
