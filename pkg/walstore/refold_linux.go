package walstore

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Refold has the page cache hold the finished segment file f (size bytes,
// durable, never written again) in folios of up to 2 MiB: it drops the
// file's cached pages and reads them back through a read-only mapping
// marked MADV_HUGEPAGE, for which the kernel reads ahead in 2 MiB folios
// where the file system supports them (ext4 from Linux 6.16, XFS). A
// sender can then map a 2 MiB region of the file with one huge page table
// entry and hand the mapped bytes to sendmsg(2): one copy, where pread
// and write make two (walreader's local tier; docs/performance.md, P1).
//
// The writer cannot create such folios itself: the page cache sizes a
// folio by the write that creates it, and writes into 2 MiB folios make
// every commit's fdatasync slower on ext4, which walks all of a folio's
// block buffers (docs/performance.md). So segments are written in 64 KiB
// folios and refolded once finished, at the price of reading each one
// back from the disk once.
//
// Pages that are dirty or mapped elsewhere are not dropped and keep their
// folios; readers meanwhile read the file as usual. Errors leave the
// cache as it is (or empty): only speed is at stake.
func Refold(f *os.File, size int64) error {
	if size <= 0 {
		return nil
	}
	fd := int(f.Fd())
	if err := unix.Fadvise(fd, 0, size, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("refold: fadvise: %w", err)
	}
	b, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("refold: mmap: %w", err)
	}
	defer func() { _ = unix.Munmap(b) }()
	if err := unix.Madvise(b, unix.MADV_HUGEPAGE); err != nil {
		return fmt.Errorf("refold: madvise(MADV_HUGEPAGE): %w", err)
	}
	// Reads the file into the page cache without Go touching the
	// mapping (a page the file lost would be SIGBUS there).
	if err := unix.Madvise(b, unix.MADV_POPULATE_READ); err != nil {
		return fmt.Errorf("refold: madvise(MADV_POPULATE_READ): %w", err)
	}
	return nil
}
