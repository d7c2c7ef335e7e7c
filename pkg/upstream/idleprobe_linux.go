package upstream

import (
	"crypto/tls"
	"net"
	"syscall"

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
	p.probe = func(fd uintptr) { p.n, p.err = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }
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
