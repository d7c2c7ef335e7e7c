package upstream

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pollConn reads and writes the upstream's socket with read(2) and
// write(2) made from the callbacks of its RawConn, as raw system calls:
// the socket is non-blocking (every net.Conn's is), so neither call can
// block, and a would-block answer parks the goroutine in the network
// poller exactly as net.Conn's own Read and Write do, deadlines included.
//
// Why: net.Conn's Read and Write enter the scheduler's syscall state,
// which wakes the runtime's sysmon thread whenever it was asleep, and a
// receive loop that goes idle between every commit put it back to sleep
// and woke it again some thousand times a second (see pkg/walstore's
// fdatasync_linux.go, which does the same for the write and the fsync). A
// call that cannot block does not need that bookkeeping, as the
// runtime's own epoll calls do without it.
//
// Everything else (deadlines, Close, addresses) is the wrapped
// connection's. Like a net.Conn it may be used from several goroutines:
// one Read and one Write at a time each, the others wait.
type pollConn struct {
	net.Conn
	rc syscall.RawConn

	rmu     sync.Mutex
	rbuf    []byte
	rn      int
	rerr    error
	readFn  func(fd uintptr) bool // bound once: a closure per call would allocate
	tryFn   func(fd uintptr) bool
	blocked bool         // tryFn found nothing to read
	idle    func() error // see setReadIdle; called with rmu held
	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

// wrapPollConn returns c read and written through raw system calls, or c
// itself when it is not a socket with a RawConn.
func wrapPollConn(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	p := &pollConn{Conn: c, rc: rc}
	p.readFn = p.readStep
	p.tryFn = p.tryStep
	p.writeFn = p.writeStep
	return p
}

// setReadIdle makes fn run each time a Read of c is about to wait for the
// socket to become readable: the receive loop makes what it wrote durable
// then, as a walreceiver flushes once the socket has nothing more for it,
// whether or not part of a message is already in. An error from fn ends
// that Read with it. c is what Dial's DialFunc returned, or a TLS
// connection over it; setReadIdle reports false for any other net.Conn,
// and fn is then never called. Set it before reading, from the goroutine
// that reads.
//
// fn may write to c (under TLS too: a tls.Conn's Write does not take the
// lock its Read holds). It must not be set while a TLS handshake may run,
// which holds the handshake lock that a Write would wait for: pgconn
// completes the handshake before streaming and never renegotiates.
func setReadIdle(c net.Conn, fn func() error) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	p, ok := c.(*pollConn)
	if !ok {
		return false
	}
	p.rmu.Lock()
	p.idle = fn
	p.rmu.Unlock()
	return true
}

// SyscallConn is the socket's, as a *net.TCPConn's would be.
func (p *pollConn) SyscallConn() (syscall.RawConn, error) { return p.rc, nil }

func (p *pollConn) readStep(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p.rbuf[0])), uintptr(len(p.rbuf)))
		switch e {
		case 0:
			p.rn = int(n)
		case unix.EINTR:
			// Again at once: the poller reports readiness once (edge
			// triggered), so waiting for it could wait for more data.
			continue
		case unix.EAGAIN:
			return false // wait in the poller until readable
		default:
			p.rerr = e
		}
		return true
	}
}

// tryStep is readStep that never waits: on EAGAIN it sets p.blocked.
func (p *pollConn) tryStep(fd uintptr) bool {
	if !p.readStep(fd) {
		p.blocked = true
	}
	return true
}

func (p *pollConn) writeStep(fd uintptr) bool {
	for p.wn < len(p.wbuf) {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p.wbuf[p.wn])), uintptr(len(p.wbuf)-p.wn))
		switch e {
		case 0:
			p.wn += int(n)
		case unix.EAGAIN:
			return false // wait in the poller until writable
		case unix.EINTR:
		default:
			p.werr = e
			return true
		}
	}
	return true
}

func (p *pollConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p.rmu.Lock()
	defer p.rmu.Unlock()
	p.rbuf, p.rn, p.rerr = b, 0, nil
	var err error
	if p.idle != nil {
		// Try once; only a read that would wait runs the idle hook.
		p.blocked = false
		if err = p.rc.Read(p.tryFn); err == nil && p.blocked {
			if err := p.idle(); err != nil {
				p.rbuf = nil
				return 0, err
			}
			err = p.rc.Read(p.readFn)
		}
	} else {
		err = p.rc.Read(p.readFn)
	}
	p.rbuf = nil
	switch {
	case err != nil:
		return 0, p.opError("read", unwrapOp(err))
	case p.rerr != nil:
		return 0, p.opError("read", p.rerr)
	case p.rn == 0:
		return 0, io.EOF
	}
	return p.rn, nil
}

func (p *pollConn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.wbuf, p.wn, p.werr = b, 0, nil
	err := p.rc.Write(p.writeFn)
	p.wbuf = nil
	if err == nil {
		err = p.werr
	} else {
		err = unwrapOp(err)
	}
	if err != nil {
		return p.wn, p.opError("write", err)
	}
	return p.wn, nil
}

// opError is the error net.Conn's Read or Write would return.
func (p *pollConn) opError(op string, err error) error {
	e := &net.OpError{Op: op, Source: p.LocalAddr(), Addr: p.RemoteAddr(), Err: err}
	if e.Addr != nil {
		e.Net = e.Addr.Network()
	}
	return e
}

// unwrapOp takes the cause out of the RawConn's own OpError ("raw-read"),
// so that the error reads as net.Conn's would (a timeout stays one).
func unwrapOp(err error) error {
	if oe, ok := err.(*net.OpError); ok {
		return oe.Err
	}
	return err
}
