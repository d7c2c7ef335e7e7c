package walmem

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page on the platforms the
// safekeeper runs on (x86-64, and arm64 with 4 KiB base pages).
const hugePage = 2 << 20

// newChunkMem returns size bytes for a chunk. A chunk of at least a huge
// page is mapped outside the Go heap, aligned to huge pages and marked
// MADV_HUGEPAGE: a sender's copy from the window into a socket then walks
// 2 MiB pages instead of 4 KiB ones, which cuts the TLB misses of reading
// the window (docs/performance.md, P1, "The window on huge pages"). Where
// the kernel gives no huge pages (THP off, or none free) the mapping works
// with small pages, as the Go heap would. Smaller chunks, or a failed
// mapping, come from the Go heap.
func newChunkMem(size uint64) *chunkMem {
	if size < hugePage || size%hugePage != 0 || size > 1<<40 {
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
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE) // advice only: small pages work too
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
