package walreader

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// segMap is the local tier's read-only shared mapping of the segment file
// it holds open, made on the first Locate in it. A sender passes the
// mapped bytes straight to sendmsg(2): the kernel copies them from the
// page cache into the socket once, where pread then write copies them
// twice (docs/performance.md, P1). Go code never reads the mapping itself:
// a page the file no longer has would kill the process with SIGBUS there,
// while a system call reading it only fails with EFAULT.
type segMap struct {
	b   []byte // nil: not mapped (yet, or the kernel refused)
	vec []byte // mincore's answer, one byte per page; grown, never shrunk
}

var pageSize = int64(os.Getpagesize())

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
// for the disk; otherwise nil. One mincore(2), made without the
// scheduler's syscall bookkeeping: it never blocks.
func (m *segMap) resident(off int64, n int) []byte {
	end := off + int64(n)
	if m.b == nil || n <= 0 || off < 0 || end > int64(len(m.b)) {
		return nil
	}
	start := off &^ (pageSize - 1)
	pages := int((end - start + pageSize - 1) / pageSize)
	if len(m.vec) < pages {
		m.vec = make([]byte, pages)
	}
	_, _, errno := unix.RawSyscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m.b[start])), uintptr(end-start), uintptr(unsafe.Pointer(&m.vec[0])))
	if errno != 0 {
		return nil
	}
	for _, v := range m.vec[:pages] {
		if v&1 == 0 {
			return nil
		}
	}
	return m.b[off:end:end]
}
