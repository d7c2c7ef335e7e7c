package walmem

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page on the platforms the
// safekeeper runs on (x86-64, and arm64 with 4 KiB base pages).
const hugePage = 2 << 20

// hugeChunks reports whether chunks of size bytes are prepared on huge
// pages (see newChunkMem).
func hugeChunks(size uint64) bool {
	return size >= hugePage && size%hugePage == 0 && size <= 1<<40
}

// newChunkMem returns size bytes for a chunk. A chunk of whole huge pages
// is mapped outside the Go heap, aligned to huge pages. With huge, the
// mapping is marked MADV_HUGEPAGE and populated at once: a sender's copy
// from the window into a socket then walks 2 MiB pages instead of 4 KiB
// ones, which cuts its TLB misses (docs/performance.md, P1, "The window on
// huge pages"). Populating may make the kernel compact memory to find huge
// pages, so huge chunks are prepared off the ingest path (Window.prepare);
// the writer itself only ever maps small pages, which it faults in as it
// writes. Where the kernel gives no huge pages (THP off, or none free) the
// mapping works with small pages. Other sizes, or a failed mapping, come
// from the Go heap.
func newChunkMem(size uint64, huge bool) *chunkMem {
	if !hugeChunks(size) {
		return &chunkMem{b: make([]byte, size)}
	}
	// Map a huge page more than needed and unmap the unaligned ends.
	span := uintptr(size) + hugePage
	p, err := unix.MmapPtr(-1, 0, nil, span, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return &chunkMem{b: make([]byte, size)}
	}
	addr := uintptr(p)
	head := (hugePage - addr%hugePage) % hugePage
	if head > 0 {
		_ = unix.MunmapPtr(p, head)
	}
	if tail := span - head - uintptr(size); tail > 0 {
		_ = unix.MunmapPtr(unsafe.Add(p, head+uintptr(size)), tail)
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, head)), size)
	if huge {
		// Advice only: small pages work too. Without
		// MADV_POPULATE_WRITE (before Linux 5.14) the writer faults the
		// pages in, huge ones where the kernel has them free.
		_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
		_ = unix.Madvise(b, unix.MADV_POPULATE_WRITE)
	}
	m := &chunkMem{b: b, mapped: true}
	// A window released while a reader still held one of its chunks
	// leaves that chunk to the collector (see Window.Release).
	m.cleanup = runtime.AddCleanup(m, unmapChunk, b)
	return m
}

// free unmaps a mapped chunk at once; its bytes must no longer be read.
func (m *chunkMem) free() {
	if !m.mapped {
		return
	}
	m.cleanup.Stop()
	unmapChunk(m.b)
	m.b, m.mapped = nil, false
}

func unmapChunk(b []byte) {
	_ = unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}
