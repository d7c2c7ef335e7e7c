//go:build !linux

package walsender

import "net"

// dataWaiting reports whether bytes the client sent are already waiting on
// the socket; only Linux is asked (peek_linux.go).
func dataWaiting(net.Conn) bool { return false }
