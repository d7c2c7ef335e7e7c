//go:build !linux

package walmem

// hugeChunks reports whether chunks are prepared on huge pages: only on
// Linux (mem_linux.go).
func hugeChunks(uint64) bool { return false }

// newChunkMem returns size bytes for a chunk from the Go heap.
func newChunkMem(size uint64, _ bool) *chunkMem { return &chunkMem{b: make([]byte, size)} }

func (m *chunkMem) free() {}
