//go:build !linux

package pagemap

// HugeSize is the span of one huge page table entry.
const HugeSize = 2 << 20

// HugeMapped is always false here: see pagemap_linux.go.
func HugeMapped(uintptr) bool { return false }
