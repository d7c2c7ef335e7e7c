package walreader

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/internal/pagemap"
)

// segMap is the local tier's read-only shared mapping of the segment file
// it holds open, made on the first Locate in it. A sender passes the
// mapped bytes straight to sendmsg(2): the kernel copies them from the
// page cache into the socket once, where pread then write copies them
// twice (docs/performance.md, P1). Go code never reads the mapping itself:
// a page the file no longer has would kill the process with SIGBUS there,
// while a system call reading it only fails with EFAULT.
//
// Mapped bytes are handed out only from 2 MiB regions the kernel maps
// with one huge page table entry, which it does where the page cache
// holds the region as one 2 MiB folio (the WAL writer refolds each
// segment it finishes for this: walstore.Refold). Mapped with 4 KiB entries, the page table
// updates of a stream that touches each page once cost more than the copy
// they save (docs/performance.md, P1); such regions are copied as before.
type segMap struct {
	b   []byte // nil: not mapped (yet, or the kernel refused)
	vec []byte // mincore's answer, one byte per page; grown, never shrunk
	// huge says per 2 MiB region of b whether it is mapped with one
	// huge entry: 0 not probed yet, 1 yes, -1 no.
	huge []int8
	// any hands out resident bytes without the huge-entry check (tests
	// of the send path on machines whose page cache has no 2 MiB folios).
	any bool
	// below: the regions before it, which the reader has passed, are
	// unmapped (see resident).
	below int64
}

var pageSize = int64(os.Getpagesize())

// hugeSize is the span of one huge page table entry.
const hugeSize = pagemap.HugeSize

// zapBatch is how many regions a reader passes before they are unmapped:
// a consumer keeps at most 8 MiB mapped past where it reads.
const zapBatch = 4

// mapFile maps f whole, up to segSize bytes; on any failure the segment
// is served without a mapping.
func (m *segMap) mapFile(f *os.File, segSize uint64) {
	fi, err := f.Stat()
	if err != nil {
		return
	}
	size := min(fi.Size(), int64(segSize))
	if size <= 0 {
		return
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return
	}
	m.b = b
	regions := int((size + hugeSize - 1) / hugeSize)
	if cap(m.huge) < regions {
		m.huge = make([]int8, regions)
	}
	m.huge = m.huge[:regions]
	clear(m.huge)
	m.below = 0
}

// unmap drops the mapping, if any.
func (m *segMap) unmap() {
	if m.b != nil {
		_ = unix.Munmap(m.b)
		m.b = nil
	}
}

// resident returns the n mapped bytes from off when every page under them
// is in the page cache, so that a system call reading them does not wait
// for the disk, and every 2 MiB region under them is mapped with a huge
// entry; otherwise nil. One mincore(2), made without the scheduler's
// syscall bookkeeping: it never blocks; a region seen for the first time
// costs a probe (see hugeMapped).
func (m *segMap) resident(off int64, n int) []byte {
	end := off + int64(n)
	if m.b == nil || n <= 0 || off < 0 || end > int64(len(m.b)) {
		return nil
	}
	// A reader moves forward: the regions it has passed are unmapped
	// (their page cache stays), so that a consumer's mapped pages, which
	// its process's RSS counts once per mapping, stay within zapBatch
	// regions of where it reads rather than a whole segment (up to 1 GiB).
	// In batches: each unmapping flushes the TLB of every CPU the process
	// ran on.
	if r := off / hugeSize; r-m.below >= zapBatch {
		_, _, _ = unix.RawSyscall(unix.SYS_MADVISE, uintptr(unsafe.Pointer(&m.b[m.below*hugeSize])), uintptr((r-m.below)*hugeSize), unix.MADV_DONTNEED)
		m.below = r
	}
	if !m.cached(off, end) {
		// Pages left the page cache: what comes back may be held in
		// smaller folios, so the regions are probed again.
		for r := off / hugeSize; r <= (end-1)/hugeSize; r++ {
			m.huge[r] = 0
		}
		return nil
	}
	if !m.any {
		for r := off / hugeSize; r <= (end-1)/hugeSize; r++ {
			if m.huge[r] == 0 {
				m.huge[r] = -1
				if m.hugeMapped(r * hugeSize) {
					m.huge[r] = 1
				}
			}
			if m.huge[r] < 0 {
				return nil
			}
		}
	}
	return m.b[off:end:end]
}

// cached reports whether all pages of the mapping from off to end are in
// the page cache.
func (m *segMap) cached(off, end int64) bool {
	start := off &^ (pageSize - 1)
	pages := int((end - start + pageSize - 1) / pageSize)
	if len(m.vec) < pages {
		m.vec = make([]byte, pages)
	}
	_, _, errno := unix.RawSyscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m.b[start])), uintptr(end-start), uintptr(unsafe.Pointer(&m.vec[0])))
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

// hugeMapped maps the first page of the 2 MiB region at off (which the
// kernel does with one huge entry for the whole region when the page cache
// holds it as one 2 MiB folio, and else with small entries for a few
// pages around it) and reports whether the region is now mapped with a
// huge entry, per the PAGEMAP_SCAN ioctl of /proc/self/pagemap (Linux 6.7
// on). Without it, or with any error, the answer is no and the region is
// copied.
func (m *segMap) hugeMapped(off int64) bool {
	base := uintptr(unsafe.Pointer(&m.b[0]))
	if base%hugeSize != 0 || off+hugeSize > int64(len(m.b)) {
		return false // a huge entry cannot cover the region
	}
	// The first page must be cached, or populating it reads the disk.
	if !m.cached(off, off+pageSize) {
		return false
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_MADVISE, base+uintptr(off), uintptr(pageSize), unix.MADV_POPULATE_READ); errno != 0 {
		return false
	}
	return pagemap.HugeMapped(base + uintptr(off))
}
