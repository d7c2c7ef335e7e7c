package pgtest

import (
	"net"
	"sync"
	"testing"
)

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Within
// one process the same port is never returned twice, so parallel tests do not
// collide; another process may still take it, which StartPrimary and
// StartStandby handle by retrying on a new port.
func FreePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pgtest: finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portsMu.Lock()
		taken := ports[port]
		ports[port] = true
		portsMu.Unlock()
		if !taken {
			return port
		}
	}
	t.Fatalf("pgtest: could not find an unused free port")
	return 0
}
