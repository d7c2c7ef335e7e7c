package walsender

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walmem"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
)

// fileSender writes an XLogData message to a plain socket without copying
// its WAL through a buffer of its own:
//
//   - WAL in a segment file (send): the 30-byte header with MSG_MORE, so
//     that the kernel puts it in the same TCP segment as what follows,
//     then the WAL with sendfile(2) from the page cache.
//   - WAL in the memory window (sendMem): the header and the window's own
//     bytes in one sendmsg(2), the window's chunk pinned only for that
//     non-blocking call (see walmem.Window.Borrow).
//   - WAL in a segment file the reader has mapped, its pages in the page
//     cache (sendMapped): the header and the mapped bytes in one
//     sendmsg(2), as from the window. The kernel copies the WAL from the
//     page cache into the socket once; pread then write copy it twice.
//
// It runs in the callback of the connection's RawConn, so a full socket
// buffer parks the goroutine in the network poller as a Write would (with
// no chunk pinned), and the write deadline applies.
//
// Everything is prepared in fields and the callbacks are bound once:
// sending a message allocates nothing.
type fileSender struct {
	rc       syscall.RawConn
	write    func(fd uintptr) bool
	writeMem func(fd uintptr) bool
	riov     unix.Iovec // readCached's
	hdr      []byte
	src      int
	off      int64
	remain   int
	err      error

	// sendMem's and sendMapped's message: WAL lent by mem, or else the
	// mapped bytes whose last remain are still to go.
	mem    walreader.Lender
	mapped []byte
	tli    uint32
	pos    wal.LSN
	iov    [2]unix.Iovec
	msg    unix.Msghdr
}

// errMapFault reports that the kernel could not read mapped WAL (EFAULT:
// the file was cut under the mapping, or its page could not be read back);
// what was not sent is to be read from the file.
var errMapFault = errors.New("mapped WAL not readable")

// errNoSendfile reports that the kernel refused sendfile for this file and
// socket (EINVAL, ENOSYS, EOPNOTSUPP); whatever was not sent is to be sent
// by copying.
var errNoSendfile = errors.New("sendfile not supported")

// newFileSender returns a sender for nc, or nil when nc is not a plain
// socket (TLS encrypts in user space: bytes must be copied anyway).
func newFileSender(nc net.Conn) *fileSender {
	var sc syscall.Conn
	switch c := nc.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	fs := &fileSender{rc: rc}
	fs.write = fs.step
	fs.writeMem = fs.stepMem
	return fs
}

// writeAll writes b whole, as the connection's Write would: it is
// sendMem with no WAL after the "header", so the bytes go out with raw
// sendmsg(2) calls from the RawConn's callback. The socket is
// non-blocking, so a call cannot block, and it needs none of the
// scheduler's syscall bookkeeping, which wakes the runtime's sysmon
// thread whenever it sleeps (see pkg/walstore's fdatasync_linux.go). A
// full socket parks the goroutine in the poller.
func (fs *fileSender) writeAll(b []byte) error {
	_, _, err := fs.sendMem(b, nil, 0, 0, 0)
	return err
}

// readCached reads len(b) bytes of f at off into b with one raw
// preadv2(RWF_NOWAIT): WAL in the page cache is copied without the
// scheduler's syscall bookkeeping, while WAL that would have to come from
// the disk (EAGAIN), or a kernel without RWF_NOWAIT, is read with an
// ordinary ReadAt, which may block.
func (fs *fileSender) readCached(f *os.File, b []byte, off int64) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	fs.riov = unix.Iovec{Base: &b[0]}
	fs.riov.SetLen(len(b))
	n, _, errno := unix.RawSyscall6(unix.SYS_PREADV2, f.Fd(), uintptr(unsafe.Pointer(&fs.riov)), 1, uintptr(off), 0, unix.RWF_NOWAIT)
	runtime.KeepAlive(f)
	fs.riov = unix.Iovec{}
	if errno == 0 && int(n) == len(b) {
		return len(b), nil
	}
	k := 0
	if errno == 0 {
		k = int(n) // partly cached, or the file ends
		if k == 0 {
			return 0, io.EOF
		}
	}
	m, err := f.ReadAt(b[k:], off+int64(k))
	return k + m, err
}

// send writes hdr, then n bytes of f from off. It returns how many of the
// n bytes were sent; with errNoSendfile the header and those bytes are out
// and the caller sends the rest itself.
func (fs *fileSender) send(hdr []byte, f *os.File, off int64, n int) (int, error) {
	fs.hdr, fs.src, fs.off, fs.remain, fs.err = hdr, int(f.Fd()), off, n, nil
	err := fs.rc.Write(fs.write)
	runtime.KeepAlive(f)
	if err == nil {
		err = fs.err
	}
	fs.hdr = nil
	return n - fs.remain, err
}

// step is the RawConn callback: false means "wait until writable, then
// call again".
func (fs *fileSender) step(fd uintptr) bool {
	for len(fs.hdr) > 0 {
		n, err := syscall.SendmsgN(int(fd), fs.hdr, nil, nil, syscall.MSG_MORE|syscall.MSG_NOSIGNAL)
		if n > 0 {
			fs.hdr = fs.hdr[n:]
		}
		switch err {
		case nil:
		case syscall.EAGAIN:
			return false
		case syscall.EINTR:
		default:
			fs.err = err
			return true
		}
	}
	for fs.remain > 0 {
		n, err := syscall.Sendfile(int(fd), fs.src, &fs.off, fs.remain)
		if n > 0 {
			fs.remain -= n
		}
		switch err {
		case nil:
			if n == 0 {
				// The file ends before the WAL it should hold.
				fs.err = io.ErrUnexpectedEOF
				return true
			}
		case syscall.EAGAIN:
			return false
		case syscall.EINTR:
		case syscall.EINVAL, syscall.ENOSYS, syscall.EOPNOTSUPP:
			fs.err = errNoSendfile
			return true
		default:
			fs.err = err
			return true
		}
	}
	return true
}

// sendMem writes hdr, then n bytes of timeline tli's WAL from pos, lent by
// the memory window l. hdrLeft is how much of hdr and sent how many of the
// n bytes went out: when the window moves past the WAL before it is all
// out (sent < n, no error), the caller reads the rest elsewhere and writes
// it after the hdrLeft last bytes of the header.
func (fs *fileSender) sendMem(hdr []byte, l walreader.Lender, tli uint32, pos wal.LSN, n int) (hdrLeft, sent int, err error) {
	fs.hdr, fs.mem, fs.tli, fs.pos, fs.remain, fs.err = hdr, l, tli, pos, n, nil
	err = fs.rc.Write(fs.writeMem)
	if err == nil {
		err = fs.err
	}
	hdrLeft, sent = len(fs.hdr), n-fs.remain
	fs.hdr, fs.mem = nil, nil
	fs.iov = [2]unix.Iovec{}
	return hdrLeft, sent, err
}

// sendMapped writes hdr, then the mapped WAL b (see walreader.Extent).
// hdrLeft is how much of hdr and sent how many bytes of b went out; with
// errMapFault the caller reads the rest from the file and writes it after
// the hdrLeft last bytes of the header.
func (fs *fileSender) sendMapped(hdr, b []byte) (hdrLeft, sent int, err error) {
	fs.hdr, fs.mem, fs.mapped, fs.remain, fs.err = hdr, nil, b, len(b), nil
	err = fs.rc.Write(fs.writeMem)
	if err == nil {
		err = fs.err
	}
	hdrLeft, sent = len(fs.hdr), len(b)-fs.remain
	fs.hdr, fs.mapped = nil, nil
	fs.iov = [2]unix.Iovec{}
	return hdrLeft, sent, err
}

// stepMem is sendMem's and sendMapped's RawConn callback: false means
// "wait until writable, then call again". No chunk stays pinned across a
// wait.
func (fs *fileSender) stepMem(fd uintptr) bool {
	for len(fs.hdr) > 0 || fs.remain > 0 {
		iovs := 0
		if len(fs.hdr) > 0 {
			fs.iov[0].Base = &fs.hdr[0]
			fs.iov[0].SetLen(len(fs.hdr))
			iovs = 1
		}
		var pin walmem.Pin
		more := false
		if fs.remain > 0 {
			var b []byte
			if fs.mem != nil {
				var ok bool
				b, pin, ok = fs.mem.Borrow(fs.tli, fs.pos, fs.remain)
				if !ok {
					return true // the window moved past pos: sendMem's caller reads the rest
				}
			} else {
				b = fs.mapped[len(fs.mapped)-fs.remain:]
			}
			fs.iov[iovs].Base = &b[0]
			fs.iov[iovs].SetLen(len(b))
			iovs++
			more = len(b) < fs.remain // the message goes on in the next chunk
		}
		fs.msg.Iov = &fs.iov[0]
		fs.msg.SetIovlen(iovs)
		flags := unix.MSG_NOSIGNAL
		if more {
			flags |= unix.MSG_MORE
		}
		// A raw call: the socket is non-blocking (see writeAll).
		n, _, errno := unix.RawSyscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&fs.msg)), uintptr(flags))
		pin.Release()
		// The window's memory may be unmapped once released (an idle
		// timeline): keep no pointer into it.
		fs.iov[iovs-1].Base = nil
		switch errno {
		case 0:
			k := int(n)
			h := min(k, len(fs.hdr))
			fs.hdr = fs.hdr[h:]
			k -= h
			fs.pos += wal.LSN(k)
			fs.remain -= k
		case unix.EAGAIN:
			return false
		case unix.EINTR:
		case unix.EFAULT:
			fs.err = errno
			if fs.mapped != nil {
				fs.err = errMapFault
			}
			return true
		default:
			fs.err = errno
			return true
		}
	}
	return true
}
