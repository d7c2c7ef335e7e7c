package walstore

import (
	"io"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// The commit path's write and fdatasync are made as raw system calls,
// which do not enter the scheduler's syscall state.
//
// Why: entering a system call wakes the runtime's sysmon thread when it
// is asleep, and sysmon then polls every 20 µs for as long as any P is
// busy, the whole fdatasync included. A safekeeper acknowledging
// synchronous commits goes idle and busy again with every commit, so
// sysmon was woken about a thousand times a second and took a quarter of
// the process's CPU on a two-core VM, CPU the primary's backends needed
// (docs/performance.md, P6). With the receive loop's socket calls raw too
// (pkg/upstream), a commit's work no longer wakes it.
//
// The cost of a raw call is that its goroutine keeps its P while the
// kernel blocks it. Two limits keep that harmless:
//   - at most GOMAXPROCS-1 raw calls hold a P at once, process-wide, so
//     one P is always free for everything else; with GOMAXPROCS 1 no call
//     is raw;
//   - only an fdatasync of a commit-sized group (rawSyncMax) is raw; a
//     catch-up's large groups, and the fsyncs that seal segments, are
//     ordinary calls.
//
// A stop-the-world pause of the garbage collector waits for a raw call to
// return, so a disk that stalls an fdatasync for seconds also stalls any
// collection that starts meanwhile. Nothing is acknowledged during such a
// stall either way.

// rawHeld counts the Ps held by raw blocking calls.
var rawHeld atomic.Int32

// rawSyncMax is the largest group, in bytes, whose fdatasync is a raw call.
const rawSyncMax = 256 << 10

// rawSlot reserves a P for a raw blocking call; false means make an
// ordinary one. A reservation is given back with rawRelease.
func rawSlot() bool {
	limit := int32(runtime.GOMAXPROCS(0) - 1)
	for {
		n := rawHeld.Load()
		if n >= limit {
			return false
		}
		if rawHeld.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func rawRelease() { rawHeld.Add(-1) }

// pwrite writes b at off, all of it, as f.WriteAt does.
func pwrite(f *os.File, b []byte, off int64) (int, error) {
	if len(b) == 0 || !rawSlot() {
		return f.WriteAt(b, off)
	}
	defer rawRelease()
	fd := f.Fd()
	done := 0
	for done < len(b) {
		n, _, e := syscall.RawSyscall6(syscall.SYS_PWRITE64, fd, uintptr(unsafe.Pointer(&b[done])), uintptr(len(b)-done), uintptr(off+int64(done)), 0, 0)
		switch {
		case e == syscall.EINTR:
		case e != 0:
			return done, &os.PathError{Op: "write", Path: f.Name(), Err: e}
		case n == 0:
			return done, &os.PathError{Op: "write", Path: f.Name(), Err: io.ErrShortWrite}
		default:
			done += int(n)
		}
	}
	runtime.KeepAlive(f)
	return done, nil
}

// fdatasync makes f's written data durable; small says the bytes written
// since the last fdatasync are at most rawSyncMax.
func fdatasync(f *os.File, small bool) error {
	if !small || !rawSlot() {
		return syscall.Fdatasync(int(f.Fd()))
	}
	defer rawRelease()
	fd := f.Fd()
	for {
		_, _, e := syscall.RawSyscall(syscall.SYS_FDATASYNC, fd, 0, 0)
		runtime.KeepAlive(f)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}
