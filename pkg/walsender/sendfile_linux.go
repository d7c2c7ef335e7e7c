package walsender

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
)

// fileSender writes an XLogData message whose WAL stays in a segment file:
// the 30-byte header with MSG_MORE, so that the kernel puts it in the same
// TCP segment as what follows, then the WAL with sendfile(2) from the page
// cache, without a copy through user space. It runs in the callback of the
// connection's RawConn, so a full socket buffer parks the goroutine in the
// network poller as a Write would, and the write deadline applies.
//
// Everything is prepared in fields and the callback is bound once: sending
// a message allocates nothing.
type fileSender struct {
	rc     syscall.RawConn
	write  func(fd uintptr) bool
	hdr    []byte
	src    int
	off    int64
	remain int
	err    error
}

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
	return fs
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
