package walstore

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/internal/pagemap"
)

// Refold has the page cache hold the finished segment file f (size bytes,
// durable, never written again) in folios of up to 2 MiB: region by
// region it drops the file's cached pages and reads them back through a
// read-only mapping marked MADV_HUGEPAGE, for which the kernel reads ahead
// in 2 MiB folios where the file system supports them (ext4 from Linux
// 6.16, XFS). A sender can then map a 2 MiB region of the file with one
// huge page table entry and hand the mapped bytes to sendmsg(2): one
// copy, where pread and write make two (walreader's local tier;
// docs/performance.md, P1).
//
// The writer cannot create such folios itself: the page cache sizes a
// folio by the write that creates it, and writes into 2 MiB folios make
// every commit's fdatasync slower on ext4, which walks all of a folio's
// block buffers (docs/performance.md). So segments are written in 64 KiB
// folios and refolded once finished, at the price of reading each one
// back from the disk once.
//
// Nothing is dropped before the kernel has accepted both advices on the
// mapping, so a kernel without them leaves the cache as it was. Each
// region is dropped just before it is read back, and unmapped right after
// (its pages stay cached), so the process maps 2 MiB at a time and a
// concurrent reader finds at most one region out of the cache. Pages that
// are dirty or mapped elsewhere are not dropped and keep their folios. At
// most refoldMax refolds run at once in the process. stop, checked
// between regions, ends a refold early. Errors leave the cache as it is,
// or with one region to be read again: only speed is at stake.
//
// When the first refoldMissesMax refolds in the process find no region of
// their segment mapped with a huge entry afterwards (a file system that
// caches files in small folios only), the last returns ErrRefoldUseless,
// and every later call returns it at once, as does one on a kernel that
// refuses the advices. (One miss proves little: a region some reader has
// mapped keeps its small folios.)
func Refold(f *os.File, size int64, stop *atomic.Bool) error {
	if refoldUseless.Load() {
		return ErrRefoldUseless
	}
	if size <= 0 {
		return nil
	}
	refoldSem <- struct{}{}
	defer func() { <-refoldSem }()
	fd := int(f.Fd())
	b, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("refold: mmap: %w", err)
	}
	defer func() { _ = unix.Munmap(b) }()
	if err := unix.Madvise(b, unix.MADV_HUGEPAGE); err != nil {
		if errors.Is(err, unix.EINVAL) {
			refoldUseless.Store(true) // no transparent huge pages here
			return ErrRefoldUseless
		}
		return fmt.Errorf("refold: madvise(MADV_HUGEPAGE): %w", err)
	}
	// Asked of the cached first page before anything is dropped: a
	// kernel without MADV_POPULATE_READ (before 5.14) says so here. What
	// it mapped (the page and the kernel's fault-around) is unmapped again
	// at once: the kernel drops no page a mapping holds.
	if err := unix.Madvise(b[:os.Getpagesize()], unix.MADV_POPULATE_READ); err != nil {
		if errors.Is(err, unix.EINVAL) {
			refoldUseless.Store(true)
			return ErrRefoldUseless
		}
		return fmt.Errorf("refold: madvise(MADV_POPULATE_READ): %w", err)
	}
	_ = unix.Madvise(b, unix.MADV_DONTNEED)
	base := uintptr(unsafe.Pointer(&b[0]))
	aligned := base%pagemap.HugeSize == 0
	huge, regions := 0, 0
	for off := int64(0); off < size; off += pagemap.HugeSize {
		if stop != nil && stop.Load() {
			return nil
		}
		n := min(int64(pagemap.HugeSize), size-off)
		r := b[off : off+n]
		if err := unix.Fadvise(fd, off, n, unix.FADV_DONTNEED); err != nil {
			return fmt.Errorf("refold: fadvise: %w", err)
		}
		// Reads the region into the page cache without Go touching the
		// mapping (a page the file lost would be SIGBUS there).
		if err := unix.Madvise(r, unix.MADV_POPULATE_READ); err != nil {
			return fmt.Errorf("refold: madvise(MADV_POPULATE_READ): %w", err)
		}
		if aligned && n == pagemap.HugeSize {
			regions++
			if pagemap.HugeMapped(base + uintptr(off)) {
				huge++
			}
		}
		_ = unix.Madvise(r, unix.MADV_DONTNEED) // the mapping only: the pages stay cached
	}
	switch {
	case huge > 0:
		refoldWorked.Store(true)
	case regions > 0 && !refoldWorked.Load() && refoldMisses.Add(1) >= refoldMissesMax:
		refoldUseless.Store(true)
		return ErrRefoldUseless
	}
	return nil
}

var (
	// refoldWorked: a refold has given a huge mapping here; refoldMisses
	// counts those that gave none before one did.
	refoldWorked atomic.Bool
	refoldMisses atomic.Int32
	// refoldSem bounds the refolds running at once, whatever the number
	// of timelines: each reads a segment from the disk.
	refoldSem = make(chan struct{}, refoldMax)
)

const (
	// refoldMax is how many segments are refolded at once in the process.
	refoldMax = 2
	// refoldMissesMax: see Refold.
	refoldMissesMax = 4
)
