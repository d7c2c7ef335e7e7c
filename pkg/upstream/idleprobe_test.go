//go:build linux

package upstream

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/testcert"
)

// The probe sees bytes waiting in a plain socket and in the socket under
// TLS, and answers "not quiet" for a connection that is no socket.
func TestIdleProbe(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		client, server := loopbackPair(t)
		checkProbe(t, client, client, server)
	})
	t.Run("tls", func(t *testing.T) {
		c, s := loopbackPair(t)
		tc, ts := tlsPair(t, c, s)
		checkProbe(t, tc, tc, ts)
	})
	t.Run("pollconn", func(t *testing.T) {
		client, server := loopbackPair(t)
		pc := wrapPollConn(client)
		checkProbe(t, pc, pc, server)
	})
	t.Run("pollconn-tls", func(t *testing.T) {
		c, s := loopbackPair(t)
		tc, ts := tlsPair(t, wrapPollConn(c), s)
		checkProbe(t, tc, tc, ts)
	})
	t.Run("pipe", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if newIdleProbe(a).quiet() {
			t.Fatal("a pipe cannot be probed, yet it was reported quiet")
		}
	})
}

// tlsPair runs TLS over the client c and the server s, handshake done,
// the client verifying the server.
func tlsPair(t *testing.T, c, s net.Conn) (*tls.Conn, *tls.Conn) {
	t.Helper()
	certs := testcert.Must(t)
	tc := tls.Client(c, &tls.Config{RootCAs: certs.Pool(), ServerName: "127.0.0.1"})
	ts := tls.Server(s, certs.ServerConfig())
	errc := make(chan error, 1)
	go func() { errc <- ts.Handshake() }()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return tc, ts
}

// checkProbe: quiet before anything is sent, not quiet once the peer
// wrote, quiet again once everything was read.
func checkProbe(t *testing.T, c net.Conn, r io.Reader, peer net.Conn) {
	t.Helper()
	p := newIdleProbe(c)
	if !p.quiet() {
		t.Fatal("not quiet before anything was sent")
	}
	msg := make([]byte, 1000)
	if _, err := peer.Write(msg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.quiet() {
		if time.Now().After(deadline) {
			t.Fatal("still quiet 10 s after the peer wrote")
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	if _, err := io.ReadFull(r, msg); err != nil {
		t.Fatal(err)
	}
	if !p.quiet() {
		t.Fatal("not quiet after everything sent was read")
	}
}

func loopbackPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}
