package upstream

import (
	"crypto/tls"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// idleProbe tells whether the upstream's socket holds unread bytes, with
// one ioctl(TIOCINQ, alias FIONREAD) and no allocation. Under TLS it looks
// at the socket beneath: a record already decrypted and buffered is not
// seen, which costs at most an fsync earlier than needed, never a byte.
// On a connection that is no socket it always answers "not quiet", and
// received WAL goes to the flusher.
type idleProbe struct {
	rc    syscall.RawConn
	n     int
	n32   int32
	err   error
	probe func(fd uintptr) // made once: a closure per call would allocate
}

func newIdleProbe(c net.Conn) *idleProbe {
	p := &idleProbe{}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return p
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return p
	}
	p.rc = rc
	// A raw call: an ioctl that cannot block needs no syscall bookkeeping
	// (see pollConn).
	p.probe = func(fd uintptr) {
		_, _, e := unix.RawSyscall(unix.SYS_IOCTL, fd, unix.TIOCINQ, uintptr(unsafe.Pointer(&p.n32)))
		p.n, p.err = int(p.n32), nil
		if e != 0 {
			p.err = e
		}
	}
	return p
}

// quiet reports whether nothing more is waiting in the socket.
func (p *idleProbe) quiet() bool {
	if p.rc == nil {
		return false
	}
	if err := p.rc.Control(p.probe); err != nil || p.err != nil {
		return false
	}
	return p.n == 0
}
