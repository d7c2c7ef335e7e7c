//go:build linux

package upstream

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/internal/testcert"
)

// The idle hook runs when a read is about to wait, and only then: not
// while bytes are waiting, and also when part of what the caller wants
// has arrived (a partial message, or a partial TLS record). Its error ends
// the read. It is not offered for a connection that is no pollConn.
func TestReadIdle(t *testing.T) {
	t.Run("pollconn", func(t *testing.T) {
		c, s := loopbackPair(t)
		pc := wrapPollConn(c)
		checkReadIdle(t, pc, c, s)
	})
	t.Run("pollconn-tls", func(t *testing.T) {
		c, s := loopbackPair(t)
		tc, ts := tlsPair(t, wrapPollConn(c), s)
		checkReadIdle(t, tc, c, ts)
	})
	t.Run("not offered", func(t *testing.T) {
		c, _ := loopbackPair(t)
		if setReadIdle(c, func() error { return nil }) {
			t.Fatal("the hook was accepted for a plain TCP connection")
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if setReadIdle(a, func() error { return nil }) {
			t.Fatal("the hook was accepted for a pipe")
		}
	})
}

// checkReadIdle reads from r (a pollConn, or TLS over one whose socket is
// sock) what peer writes.
func checkReadIdle(t *testing.T, r, sock, peer net.Conn) {
	t.Helper()
	calls := make(chan struct{}, 16)
	var fail error
	if !setReadIdle(r, func() error {
		calls <- struct{}{}
		return fail
	}) {
		t.Fatalf("the hook was refused for %T", r)
	}
	msg := make([]byte, 1000)
	for i := range msg {
		msg[i] = byte(i)
	}
	buf := make([]byte, len(msg))

	// Nothing sent yet: the read runs the hook, then waits for the peer.
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(r, buf)
		done <- err
	}()
	waitCall(t, calls, "a read with nothing to read")
	if _, err := peer.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	noCall(t, calls, "after the read completed")

	// Bytes already waiting: read without the hook.
	if _, err := peer.Write(msg); err != nil {
		t.Fatal(err)
	}
	waitInq(t, sock)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	noCall(t, calls, "a read of bytes already waiting")

	// Half of what the reader wants has arrived before it reads: the
	// read of that half does not run the hook, the read of the rest
	// does, once.
	if _, err := peer.Write(msg[:500]); err != nil {
		t.Fatal(err)
	}
	waitInq(t, sock)
	var got atomic.Int64
	go func() {
		n, err := io.ReadFull(&countingReader{r, &got}, buf)
		if err == nil && n != len(buf) {
			err = io.ErrShortBuffer
		}
		done <- err
	}()
	waitCall(t, calls, "a read with part of the message in")
	if n := got.Load(); n != 500 {
		t.Fatalf("the hook ran with %d bytes read; want it to run after the 500 that were in", n)
	}
	if _, err := peer.Write(msg[500:]); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		if buf[i] != msg[i] {
			t.Fatalf("byte %d read as %d, want %d", i, buf[i], msg[i])
		}
	}
	noCall(t, calls, "after the second read completed")

	// Cleared, it is not called.
	setReadIdle(r, nil)
	go func() {
		_, err := io.ReadFull(r, buf)
		done <- err
	}()
	if _, err := peer.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	noCall(t, calls, "with the hook cleared")

	// The hook's error ends the read with it (and, under TLS, the
	// connection: so this comes last).
	setReadIdle(r, func() error {
		calls <- struct{}{}
		return fail
	})
	fail = errors.New("fsync failed")
	if _, err := r.Read(buf); !errors.Is(err, fail) {
		t.Fatalf("read with a failing hook: %v, want %v", err, fail)
	}
	<-calls
}

// countingReader counts what its reader returned.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func waitCall(t *testing.T, calls <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the hook did not run within 10 s", what)
	}
}

func noCall(t *testing.T, calls <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-calls:
		t.Fatalf("%s: the hook ran", what)
	default:
	}
}

// waitInq waits (bounded) until the socket under c holds unread bytes.
func waitInq(t *testing.T, c net.Conn) {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int32
		rc.Control(func(fd uintptr) {
			unix.Syscall(unix.SYS_IOCTL, fd, unix.TIOCINQ, uintptr(unsafe.Pointer(&n)))
		})
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing arrived within 10 s of the peer's write")
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
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
