//go:build !linux

package walmem

// newChunkMem returns size bytes for a chunk from the Go heap.
func newChunkMem(size uint64) *chunkMem { return &chunkMem{b: make([]byte, size)} }

func (m *chunkMem) free() {}
