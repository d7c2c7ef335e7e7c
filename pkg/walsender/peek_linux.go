package walsender

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// dataWaiting reports whether bytes the client sent are already waiting
// on the socket (SIOCINQ). Asked before the answer to an encryption
// request goes out, it finds only bytes sent without waiting for it, which
// PostgreSQL, reading the request, would have buffered with it.
func dataWaiting(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return false
	}
	return n > 0
}
