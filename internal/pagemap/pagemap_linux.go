package pagemap

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// HugeSize is the span of one huge page table entry (x86-64, arm64 with
// 4 KiB pages).
const HugeSize = 2 << 20

// HugeMapped reports whether the HugeSize bytes of this process's memory
// from addr (a multiple of HugeSize) are present and mapped with one huge
// entry. It never faults anything in; with any error the answer is no.
// It makes a raw system call: it never blocks.
func HugeMapped(addr uintptr) bool {
	if addr%HugeSize != 0 {
		return false
	}
	pm := pagemap()
	if pm < 0 {
		return false
	}
	var reg [2]pageRegion
	arg := pmScanArg{
		size:       uint64(unsafe.Sizeof(pmScanArg{})),
		start:      uint64(addr),
		end:        uint64(addr) + HugeSize,
		vec:        uint64(uintptr(unsafe.Pointer(&reg[0]))),
		vecLen:     uint64(len(reg)),
		returnMask: pageIsHuge | pageIsPresent,
	}
	k, _, errno := unix.RawSyscall(unix.SYS_IOCTL, uintptr(pm), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	return errno == 0 && k == 1 && reg[0].start == arg.start && reg[0].end == arg.end &&
		reg[0].categories&(pageIsHuge|pageIsPresent) == pageIsHuge|pageIsPresent
}

// The PAGEMAP_SCAN ioctl's argument and answer (include/uapi/linux/fs.h).
type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages uint64
	categoryInverted, categoryMask, categoryAnyofMask       uint64
	returnMask                                              uint64
}

type pageRegion struct{ start, end, categories uint64 }

const (
	pageIsPresent = 1 << 3
	pageIsHuge    = 1 << 6
	// _IOWR('f', 16, struct pm_scan_arg)
	pagemapScan = 3<<30 | unsafe.Sizeof(pmScanArg{})<<16 | 'f'<<8 | 16
)

// pagemap returns the descriptor of /proc/self/pagemap, opened once per
// process and kept open, or -1 when it cannot be opened.
var pagemap = sync.OnceValue(func() int {
	fd, err := unix.Open("/proc/self/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
})
