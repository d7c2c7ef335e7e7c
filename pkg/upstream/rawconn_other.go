//go:build !linux

package upstream

import "net"

func wrapPollConn(c net.Conn) net.Conn { return c }

func setReadIdle(net.Conn, func() error) bool { return false }
