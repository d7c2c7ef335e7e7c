//go:build !linux

package upstream

import "net"

func wrapPollConn(c net.Conn) net.Conn { return c }
