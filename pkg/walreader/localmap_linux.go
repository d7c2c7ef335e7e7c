package walreader

import (
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/internal/pagemap"
)

// segMap is the local tier's read-only shared mapping of the segment file
// it holds open, taken on the first Locate in it: from the timeline's
// SegmentMaps for a finished segment, its own for one being written. A
// sender passes the mapped bytes straight to sendmsg(2): the kernel copies
// them from the page cache into the socket once, where pread then write
// copies them twice (docs/performance.md, P1). Go code never reads the
// mapping itself: a page the file no longer has would kill the process
// with SIGBUS there, while a system call reading it only fails with
// EFAULT.
//
// Mapped bytes are handed out only from 2 MiB regions the kernel maps
// with one huge page table entry, which it does where the page cache
// holds the region as one 2 MiB folio (the WAL writer refolds each
// segment it finishes for this: walstore.Refold). Mapped with 4 KiB entries, the page table
// updates of a stream that touches each page once cost more than the copy
// they save (docs/performance.md, P1); such regions are copied as before.
type segMap struct {
	maps *SegmentMaps // where finished segments' mappings are shared; nil: none is
	sh   *sharedMap   // nil: not mapped (yet, or the kernel refused)
	vec  []byte       // mincore's answer, one byte per page; grown, never shrunk
	// any hands out resident bytes without the huge-entry check (tests
	// of the send path on machines whose page cache has no 2 MiB folios).
	any bool
}

var pageSize = int64(os.Getpagesize())

// mapFile maps f, segment segno, up to segSize bytes: shared with the
// timeline's other consumers unless partial (the segment is still being
// written). On any failure the segment is served without a mapping.
func (m *segMap) mapFile(f *os.File, segno, segSize uint64, partial bool) {
	m.sh = m.maps.acquire(f, segno, segSize, !partial)
}

// unmap lets go of the mapping, if any.
func (m *segMap) unmap() {
	if m.sh != nil {
		m.sh.release()
		m.sh = nil
	}
}

// fileIdentity returns f's device and inode and its size, from a raw
// fstat(2): it never waits for the disk.
func fileIdentity(f *os.File) (fileID, int64, bool) {
	var st unix.Stat_t
	if _, _, errno := unix.RawSyscall(unix.SYS_FSTAT, f.Fd(), uintptr(unsafe.Pointer(&st)), 0); errno != 0 {
		return fileID{}, 0, false
	}
	return fileID{dev: st.Dev, ino: st.Ino}, st.Size, true
}

// mapSegment maps the first n bytes of f read-only and shared.
func mapSegment(f *os.File, n int64) ([]byte, bool) {
	b, err := unix.Mmap(int(f.Fd()), 0, int(n), unix.PROT_READ, unix.MAP_SHARED)
	return b, err == nil
}

// unmapSegment drops a mapping mapSegment made; the page cache stays.
func unmapSegment(b []byte) { _ = unix.Munmap(b) }

// reprobeAfter is how long a region found not mapped with a huge entry is
// copied before it is probed again: the writer may refold its segment
// meanwhile (walstore.Refold), after a consumer met it.
const reprobeAfter = time.Second

// epoch is the origin of the times in sharedMap.huge.
var epoch = time.Now()

// sinceEpoch is the time now as sharedMap.huge holds it negated: never 0.
func sinceEpoch() int64 { return int64(time.Since(epoch)) + 1 }

// resident returns the n mapped bytes from off when every 2 MiB region
// under them is mapped with a huge entry and every page under them is in
// the page cache, so that a system call reading them does not wait for
// the disk; otherwise nil. A region no consumer has seen yet, or found
// without a huge entry more than reprobeAfter ago, costs a probe (see
// probe), which maps it; then one mincore(2) over the mapped range, cheap
// where huge entries map it. Both are made without the scheduler's
// syscall bookkeeping: they never block.
func (m *segMap) resident(off int64, n int) []byte {
	sh := m.sh
	end := off + int64(n)
	if sh == nil || n <= 0 || off < 0 || end > int64(len(sh.b)) {
		return nil
	}
	if !m.any {
		for r := off / hugeSize; r <= (end-1)/hugeSize; r++ {
			v := sh.huge[r].Load()
			if v < 0 && sinceEpoch()+v < int64(reprobeAfter) {
				return nil
			}
			if v <= 0 {
				switch m.probe(r * hugeSize) {
				case 0:
					return nil // not in the page cache: probed again later
				case 1:
					sh.huge[r].CompareAndSwap(v, 1)
				default:
					sh.huge[r].CompareAndSwap(v, -sinceEpoch())
					return nil
				}
			}
		}
	}
	if !m.cached(off, end) {
		// Pages left the page cache: what comes back may be held in
		// smaller folios, so the regions are probed again.
		for r := off / hugeSize; r <= (end-1)/hugeSize; r++ {
			sh.huge[r].Store(0)
		}
		return nil
	}
	return sh.b[off:end:end]
}

// cached reports whether all pages of the mapping from off to end are in
// the page cache.
func (m *segMap) cached(off, end int64) bool {
	start := off &^ (pageSize - 1)
	pages := int((end - start + pageSize - 1) / pageSize)
	if len(m.vec) < pages {
		m.vec = make([]byte, pages)
	}
	_, _, errno := unix.RawSyscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m.sh.b[start])), uintptr(end-start), uintptr(unsafe.Pointer(&m.vec[0])))
	if errno != 0 {
		return false
	}
	for _, v := range m.vec[:pages] {
		if v&1 == 0 {
			return false
		}
	}
	return true
}

// probe maps the first page of the 2 MiB region at off (which the kernel
// does with one huge entry for the whole region when the page cache holds
// it as one 2 MiB folio, and else with small entries for a few pages
// around it) and says whether the region is now mapped with a huge entry,
// per the PAGEMAP_SCAN ioctl of /proc/self/pagemap (Linux 6.7 on): 1 yes,
// -1 no (also without the ioctl, or on any error; the region is then
// copied), 0 when its first page is not in the page cache, where mapping
// it would read the disk. Small entries it made are removed again: a
// mapped page is one the kernel cannot drop, and the writer's refold of a
// finished segment drops its pages to read them back in 2 MiB folios.
func (m *segMap) probe(off int64) int {
	base := uintptr(unsafe.Pointer(&m.sh.b[0]))
	if base%hugeSize != 0 || off+hugeSize > int64(len(m.sh.b)) {
		return -1 // a huge entry cannot cover the region
	}
	if !m.cached(off, off+pageSize) {
		return 0
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_MADVISE, base+uintptr(off), uintptr(pageSize), unix.MADV_POPULATE_READ); errno != 0 {
		return -1
	}
	if pagemap.HugeMapped(base + uintptr(off)) {
		return 1
	}
	_, _, _ = unix.RawSyscall(unix.SYS_MADVISE, base+uintptr(off), hugeSize, unix.MADV_DONTNEED)
	return -1
}
