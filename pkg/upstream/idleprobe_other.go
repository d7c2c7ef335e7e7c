//go:build !linux

package upstream

import "net"

// idleProbe cannot look into a socket here: received WAL always goes to
// the flusher.
type idleProbe struct{}

func newIdleProbe(net.Conn) *idleProbe { return &idleProbe{} }

func (*idleProbe) quiet() bool { return false }
