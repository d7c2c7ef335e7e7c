//go:build linux

package upstream

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pollConn behaves as the net.Conn it wraps: bytes both ways, including a
// write larger than the socket buffers (it waits in the poller while the
// peer reads), io.EOF when the peer closes, timeouts from deadlines, and
// net.ErrClosed once closed.
func TestPollConn(t *testing.T) {
	c, peer := loopbackPair(t)
	pc := wrapPollConn(c)
	if _, ok := pc.(*pollConn); !ok {
		t.Fatalf("a TCP connection was not wrapped: %T", pc)
	}

	// A write of 8 MiB cannot fit the socket buffers: it completes only
	// as the peer reads.
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(i * 7 >> 3)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	if n, err := pc.Write(big); err != nil || n != len(big) {
		t.Fatalf("write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("peer read %d bytes, not the %d written", len(b), len(big))
	}

	// Reads: what the peer wrote, in order.
	want := []byte("0123456789abcdef")
	if _, err := peer.Write(want); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(pc, buf); err != nil || !bytes.Equal(buf, want) {
		t.Fatalf("read %q, %v; want %q", buf, err, want)
	}

	// A reader and a writer at once, as the receive loop and the status
	// sender are: the peer echoes what it reads.
	go io.Copy(peer, peer)
	echoed := make(chan error, 1)
	go func() {
		_, err := pc.Write(big)
		echoed <- err
	}()
	back := make([]byte, len(big))
	if _, err := io.ReadFull(pc, back); err != nil || !bytes.Equal(back, big) {
		t.Fatalf("echo: %v, equal %v", err, bytes.Equal(back, big))
	}
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}

	// A read deadline ends a read with nothing to read as net.Conn's
	// does: a timeout.
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := pc.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	pc.SetReadDeadline(time.Time{})

	// The peer closes: io.EOF.
	peer.Close()
	if _, err := pc.Read(buf); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}

	pc.Close()
	if _, err := pc.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v, want net.ErrClosed", err)
	}
	if _, err := pc.Write(want); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// What is not a socket is left as it is.
func TestPollConnPipe(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := wrapPollConn(a); c != a {
		t.Fatalf("a pipe was wrapped: %T", c)
	}
}

// Reading and writing a message allocates nothing: the receive loop and
// the status sender use it for every XLogData and every reply.
func TestPollConnAllocatesNothing(t *testing.T) {
	c, peer := loopbackPair(t)
	pc := wrapPollConn(c)
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := pc.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(pc, buf); err != nil {
			t.Fatal(err)
		}
	})
	// The peer is a plain net.Conn, which allocates nothing either.
	if allocs != 0 {
		t.Fatalf("%v allocations per round trip, want 0", allocs)
	}
}
