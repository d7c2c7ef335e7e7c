package walmem

// cachedCopyPiece is the most CopyCached copies at once: below the size
// (1 MiB) from which the Go runtime's amd64 memmove, with AVX, writes with
// non-temporal stores that leave the destination out of the CPU's caches.
const cachedCopyPiece = 512 << 10

// CopyCached is copy(dst, src) for a destination that is read again at
// once, a message buffer about to be written to a socket or encrypted: it
// copies in pieces smaller than 1 MiB, so the bytes stay in the cache for
// that next read. A 1 MiB message copied in one piece bypasses the cache,
// and the write after it reads the whole message back from memory
// (BenchmarkSendXLogDataTCP/memcopy/1048576: 424-435 µs of the sending
// thread's CPU in one piece, 292-301 µs in pieces).
func CopyCached(dst, src []byte) int {
	n := 0
	for n < len(dst) && n < len(src) {
		n += copy(dst[n:min(len(dst), n+cachedCopyPiece)], src[n:])
	}
	return n
}
