package walsender

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/internal/testcert"
	"github.com/pgsafekeeper/safekeeper/internal/testenv"
	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walmem"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// discardConn is a net.Conn that accepts and drops every write.
type discardConn struct {
	net.Conn
	n int64
}

func (d *discardConn) Write(b []byte) (int, error)      { d.n += int64(len(b)); return len(b), nil }
func (d *discardConn) SetWriteDeadline(time.Time) error { return nil }
func (d *discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// newTestTimeline makes a timeline holding size bytes of (arbitrary) WAL.
func newTestTimeline(tb testing.TB, segSize uint64, size int, memory bool) *timeline.Timeline {
	tb.Helper()
	id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tl, err := timeline.Open(filepath.Join(tb.TempDir(), "tl"), id, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tl.Close() })
	if memory {
		tl.SetMemoryWindow(uint64(size) + segSize)
	}
	start := wal.LSN(segSize)
	if err := tl.Initialize(timeline.UpstreamInfo{SystemID: 1, WalSegSize: segSize, TLI: 1, ServerVersion: "15.0", ServerVersionNum: 150000}, start); err != nil {
		tb.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for pos := 0; pos < size; pos += len(chunk) {
		// Every position has its own byte, so that bytes from the
		// wrong place show (a period of 256 would hide a shift by a
		// multiple of it).
		for i := range chunk {
			v := uint64(start) + uint64(pos+i)
			chunk[i] = byte(v*2654435761>>13) ^ byte(v>>8) ^ byte(v>>16)
		}
		if err := tl.Append(start+wal.LSN(pos), chunk); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := tl.Flush(); err != nil {
		tb.Fatal(err)
	}
	tl.WaitRefolds() // the page cache settled: nothing reads the disk meanwhile
	return tl
}

// BenchmarkSendXLogData measures one XLogData message of 128 KiB of WAL,
// framed and written to a discarding connection, read from the memory
// window or from a local segment file: neither may allocate.
func BenchmarkSendXLogData(b *testing.B) {
	const segSize = 16 << 20
	for _, tier := range []string{"memory", "local"} {
		b.Run(tier, func(b *testing.B) {
			snd, start, end := newDiscardSender(b, segSize, segSize, tier == "memory")
			now := time.Now()
			b.SetBytes(MaxSendSize)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if snd.sent >= end {
					snd.sent = start
				}
				if err := snd.send(context.Background(), now, end); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if got := snd.rd.LastTier(); got != tier {
				b.Fatalf("served by the %q tier, want %q", got, tier)
			}
		})
	}
}

// newDiscardSender returns a sender to a discarding connection over a
// timeline holding size bytes of WAL, reading through the memory window
// (which holds all of it) and the local files, or the local files only.
func newDiscardSender(tb testing.TB, segSize uint64, size int, memory bool) (*sender, wal.LSN, wal.LSN) {
	tb.Helper()
	tl := newTestTimeline(tb, segSize, size, memory)
	s := &Server{m: metrics.New(nil), log: zap.NewNop()}
	c := &conn{s: s, nc: &discardConn{}, log: zap.NewNop(), tm: metrics.Unexported(), ctx: context.Background()}
	tiers := []walreader.Tier{walreader.NewLocalTier(tl.Dir(), segSize)}
	if memory {
		tiers = append([]walreader.Tier{walreader.NewMemoryTier(tl.Memory())}, tiers...)
	}
	rd := walreader.New(segSize, tiers...)
	tb.Cleanup(func() { rd.Close() })
	st := &stream{c: c, consumer: consumers.NewRegistry().Add(consumers.Info{})}
	start := wal.LSN(segSize)
	return &sender{c: c, st: st, rd: rd, tli: 1, segSize: segSize, sent: start, hist: tl.HistoryEntries()}, start, tl.FlushLSN()
}

func TestSendAllocatesNothing(t *testing.T) {
	const segSize = 1 << 20
	for _, tier := range []string{"memory", "local"} {
		snd, start, end := newDiscardSender(t, segSize, segSize, tier == "memory")
		snd.sent = start + 100 // mid-page start
		now := time.Now()
		// Warm up (opens the segment file once, takes a frame).
		if err := snd.send(context.Background(), now, end); err != nil {
			t.Fatal(err)
		}
		if snd.sent%wal.BlockSize != 0 {
			t.Fatalf("%s: first message from a mid-page start ended at %s, not a page boundary", tier, snd.sent)
		}
		allocs := testing.AllocsPerRun(5, func() {
			if err := snd.send(context.Background(), now, end); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Fatalf("%s: send allocates %.1f times per message", tier, allocs)
		}
		if got := snd.rd.LastTier(); got != tier {
			t.Fatalf("served by the %q tier, want %q", got, tier)
		}
		if snd.sent > end {
			t.Fatalf("sent past the end: %s > %s", snd.sent, end)
		}
	}
}

// noZeroCopy ends a test of the sendfile path where there is none: a
// failure on Linux, where a TCP socket always gets one, a skip elsewhere.
func noZeroCopy(tb testing.TB) {
	tb.Helper()
	if runtime.GOOS == "linux" {
		tb.Fatal("no sendfile sender for a TCP socket on Linux")
	}
	tb.Skip("no zero-copy send on this platform")
}

// loopback returns both ends of a loopback TCP connection, closed when
// the test ends.
func loopback(tb testing.TB) (srv *net.TCPConn, cl net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	cl, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		cl.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		nc.Close()
		cl.Close()
	})
	return nc.(*net.TCPConn), cl
}

// tcpPair returns the server side of a loopback TCP connection whose
// client side is drained (and discarded) until the test ends.
func tcpPair(tb testing.TB) *net.TCPConn {
	tb.Helper()
	srv, cl := loopback(tb)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<20)
		for {
			if _, err := cl.Read(buf); err != nil {
				return
			}
		}
	}()
	tb.Cleanup(func() {
		srv.Close()
		cl.Close()
		<-done
	})
	return srv
}

// tlsPair returns the server side of a TLS connection over loopback TCP,
// its handshake done. The client side, once through the handshake, drains
// the raw connection without decrypting it, so that the client neither
// allocates nor competes for the CPU with the sender measured.
func tlsPair(tb testing.TB) *tls.Conn {
	tb.Helper()
	srv, cl := loopback(tb)
	certs := testcert.Must(tb)
	tc := tls.Client(cl, &tls.Config{RootCAs: certs.Pool(), ServerName: "localhost"})
	ts := tls.Server(srv, certs.ServerConfig())
	hs := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs <- tc.Handshake()
		buf := make([]byte, 1<<20)
		for {
			if _, err := cl.Read(buf); err != nil {
				return
			}
		}
	}()
	if err := ts.Handshake(); err != nil {
		tb.Fatal(err)
	}
	if err := <-hs; err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ts.Close()
		cl.Close()
		<-done
	})
	return ts
}

// newTCPSender returns a sender over a loopback TCP connection streaming
// a timeline holding one segment of WAL. mode: "mapped" from the segment
// file's mapping (sendMapped), the segment refolded into 2 MiB folios
// by the writer when it finished it (walstore.Refold), "sendfile" from
// the segment file with the mapping off (messages up to sendfileMax;
// larger ones are copied), "copy" from it through the frame buffer,
// "memory" straight from the memory window (sendMem), "memcopy" from the
// window through the frame buffer (what TLS does), "tls" from the window
// through the frame buffer to a TLS connection.
func newTCPSender(tb testing.TB, segSize uint64, mode string) (*sender, wal.LSN, wal.LSN) {
	inMemory := mode == "memory" || mode == "memcopy" || mode == "tls"
	tl := newTestTimeline(tb, segSize, int(segSize), inMemory)
	var nc net.Conn
	if mode == "tls" {
		nc = tlsPair(tb)
	} else {
		nc = tcpPair(tb)
	}
	s := &Server{m: metrics.New(nil), log: zap.NewNop()}
	c := &conn{s: s, nc: nc, log: zap.NewNop(), tm: metrics.Unexported(), ctx: context.Background()}
	lt := walreader.NewLocalTier(tl.Dir(), segSize)
	switch {
	case mode != "mapped":
		lt.NoMapping()
	case segSize < 2<<20:
		// Too small for huge entries: mapped with small ones.
		lt.MapSmallPages()
	}
	tiers := []walreader.Tier{lt}
	if inMemory {
		tiers = append([]walreader.Tier{walreader.NewMemoryTier(tl.Memory())}, tiers...)
	}
	rd := walreader.New(segSize, tiers...)
	tb.Cleanup(func() { rd.Close() })
	st := &stream{c: c, consumer: consumers.NewRegistry().Add(consumers.Info{})}
	start := wal.LSN(segSize)
	snd := &sender{c: c, st: st, rd: rd, tli: 1, segSize: segSize, sent: start, hist: tl.HistoryEntries()}
	if mode == "sendfile" || mode == "memory" || mode == "mapped" {
		snd.fs = newFileSender(nc)
		if snd.fs == nil {
			noZeroCopy(tb)
		}
	}
	return snd, start, tl.FlushLSN()
}

// BenchmarkSendXLogDataTCP sends XLogData messages of several sizes to a
// real loopback socket, from a local segment file by copying (pread into
// the frame buffer, one write), as a plain socket is served ("mapped":
// one sendmsg of the header and the file's mapped bytes) and as it was
// before mapping ("sendfile": the header with MSG_MORE, then sendfile
// from the page cache, for messages up to sendfileMax; larger ones are
// copied, which measured cheaper), and from the memory window as a plain
// socket is served ("memory": one sendmsg of the header and the window's
// bytes) and as TLS is ("memcopy": through the frame buffer), and to a
// TLS connection ("tls"). None may allocate.
// "write" is the floor under all of them: the same number of bytes per
// message written from a segment-sized buffer, front to back, with
// (*net.TCPConn).Write and no framing, what a bare Go sender costs.
func BenchmarkSendXLogDataTCP(b *testing.B) {
	const segSize = 16 << 20
	for _, mode := range []string{"write", "copy", "mapped", "sendfile", "memory", "memcopy", "tls"} {
		for _, size := range []int{256, 8 << 10, MaxSendSize, MaxSendSizeLimit} {
			b.Run(fmt.Sprintf("%s/%d", mode, size), func(b *testing.B) {
				if mode == "write" {
					benchBareWrite(b, segSize, size)
					return
				}
				snd, start, end := newTCPSender(b, segSize, mode)
				snd.c.s.maxSend = uint64(max(size, MaxSendSize))
				now := time.Now()
				benchSends(b, size, func() error {
					if snd.sent+wal.LSN(size) > end {
						snd.sent = start
					}
					return snd.send(context.Background(), now, snd.sent+wal.LSN(size))
				})
			})
		}
	}
}

// benchSends runs send b.N times, size bytes each, on one locked thread,
// and reports that thread's CPU per op: the sends, and the loopback's
// protocol work the kernel does in them.
func benchSends(b *testing.B, size int, send func() error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := threadCPU()
	for i := 0; i < b.N; i++ {
		if err := send(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// benchBareWrite writes size bytes per op to a drained loopback socket
// from a segSize buffer, front to back, as benchSends measures.
func benchBareWrite(b *testing.B, segSize, size int) {
	nc := tcpPair(b)
	buf := make([]byte, segSize)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	off := 0
	benchSends(b, size, func() error {
		if off+size > segSize {
			off = 0
		}
		_, err := nc.Write(buf[off : off+size])
		off += size
		return err
	})
}

// BenchmarkSendReadFrom is the alternative to fileSender measured against
// it: the header with Write, then (*net.TCPConn).ReadFrom of an
// io.LimitedReader over the file (Go's own sendfile path, which sends
// from the file's offset: one lseek per message).
func BenchmarkSendReadFrom(b *testing.B) {
	const segSize = 16 << 20
	tl := newTestTimeline(b, segSize, segSize, false)
	nc := tcpPair(b)
	f, err := tl.Dir().OpenSegment(1, 1, segSize)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, frameHeader)
	lr := &io.LimitedReader{R: f}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.SetBytes(MaxSendSize)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := threadCPU()
	defer func() { b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N), "cpu-ns/op") }()
	off := int64(0)
	for i := 0; i < b.N; i++ {
		if off+MaxSendSize > segSize {
			off = 0
		}
		if _, err := nc.Write(hdr); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		lr.N = MaxSendSize
		if n, err := nc.ReadFrom(lr); err != nil || n != MaxSendSize {
			b.Fatal(n, err)
		}
		off += MaxSendSize
	}
}

// TestSendFileAllocatesNothing: a message sent with sendfile to a real
// socket allocates nothing and ends at the same page boundary as a copied
// one.
func TestSendFileAllocatesNothing(t *testing.T) {
	for _, mode := range []string{"mapped", "sendfile"} {
		t.Run(mode, func(t *testing.T) { testSendFileAllocatesNothing(t, mode) })
	}
}

func testSendFileAllocatesNothing(t *testing.T, mode string) {
	const segSize = 1 << 20
	snd, start, end := newTCPSender(t, segSize, mode)
	snd.sent = start + 100 // mid-page start
	now := time.Now()
	if err := snd.send(context.Background(), now, end); err != nil {
		t.Fatal(err)
	}
	if snd.fs == nil {
		t.Fatal("sendfile was given up on a TCP socket")
	}
	if snd.sent%wal.BlockSize != 0 || snd.sent != start+MaxSendSize-MaxSendSize%wal.BlockSize {
		t.Fatalf("first message from a mid-page start ended at %s, not the last page boundary within MaxSendSize", snd.sent)
	}
	allocs := testing.AllocsPerRun(5, func() {
		if err := snd.send(context.Background(), now, end); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("send (%s) allocates %.1f times per message", mode, allocs)
	}
	if snd.sent > end {
		t.Fatalf("sent past the end: %s > %s", snd.sent, end)
	}
}

// TestSendTLSAllocatesNothing: a consumer on TLS is served from the
// memory window through the frame buffer, 1 MiB messages and PostgreSQL's
// 128 KiB, without an allocation per message.
func TestSendTLSAllocatesNothing(t *testing.T) {
	if testenv.RaceEnabled {
		t.Skip("crypto/tls pools its record buffers, and under the race detector sync.Pool drops items on purpose; make test runs this test without it")
	}
	const segSize = 16 << 20
	for _, size := range []int{MaxSendSize, MaxSendSizeLimit} {
		snd, start, end := newTCPSender(t, segSize, "tls")
		snd.c.s.maxSend = uint64(size)
		now := time.Now()
		if err := snd.send(context.Background(), now, end); err != nil {
			t.Fatal(err)
		}
		if snd.sent != start+wal.LSN(size) {
			t.Fatalf("%d: first message ended at %s, want %s", size, snd.sent, start+wal.LSN(size))
		}
		allocs := testing.AllocsPerRun(5, func() {
			if err := snd.send(context.Background(), now, end); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Fatalf("%d: send over TLS allocates %.1f times per message", size, allocs)
		}
		if got := snd.rd.LastTier(); got != "memory" {
			t.Fatalf("%d: served by the %q tier, want memory", size, got)
		}
	}
}

// threadCPU returns the calling OS thread's user+system CPU time in ns.
func threadCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// TestSendFileBytes: what a plain socket is sent, from the segment file's
// mapping, with sendfile from the file, or straight from the memory
// window, is the XLogData framing
// of exactly the WAL in the segment file, in page-cut messages, also when
// the window moves past a message before it is all out (the rest is read
// from the file).
func TestSendFileBytes(t *testing.T) {
	const segSize = 1 << 20
	for _, c := range []struct {
		name    string
		mapped  bool // the local tier maps segments
		memory  bool
		maxSend uint64                              // 0: MaxSendSize
		lender  func(walreader.Lender) *flakyLender // nil: the window itself
		counted string                              // the tiers the bytes are counted for ("": the one that served them)
	}{
		{name: "mapped", mapped: true},
		{name: "mapped-1MiB", mapped: true, maxSend: MaxSendSizeLimit},
		{name: "sendfile"},
		// Larger than sendfileMax: read from the located file instead.
		{name: "file-1MiB", maxSend: MaxSendSizeLimit},
		{name: "memory", memory: true},
		// Each message spans eight of the window's 128 KiB chunks.
		{name: "memory-1MiB", memory: true, maxSend: MaxSendSizeLimit},
		// The window lends 1000 bytes at a time (a message spans chunks).
		{name: "memory-pieces", memory: true, lender: func(l walreader.Lender) *flakyLender { return &flakyLender{l: l, lim: 1000} }},
		// Every second borrow misses: the check that the window holds the
		// start passes, then nothing is sent before the miss.
		// Nothing comes from the window, so none is counted for it.
		{name: "memory-miss-first", memory: true, lender: func(l walreader.Lender) *flakyLender { return &flakyLender{l: l, lim: 1000, missEvery: 2} }, counted: "local"},
		// Every third misses: the header and 1000 bytes are out first.
		{name: "memory-miss-later", memory: true, lender: func(l walreader.Lender) *flakyLender { return &flakyLender{l: l, lim: 1000, missEvery: 3} }, counted: "memory+local"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tl := newTestTimeline(t, segSize, segSize, c.memory)
			nc, cl := loopback(t)
			s := &Server{m: metrics.New(nil), log: zap.NewNop()}
			conn := &conn{s: s, nc: nc, log: zap.NewNop(), tm: metrics.Unexported(), ctx: context.Background()}
			lt := walreader.NewLocalTier(tl.Dir(), segSize)
			if !c.mapped {
				lt.NoMapping()
			} else {
				lt.MapSmallPages() // 1 MiB segments: never huge entries
			}
			tiers := []walreader.Tier{lt}
			var fl *flakyLender
			if c.memory {
				var m walreader.Memory = tl.Memory()
				if c.lender != nil {
					fl = c.lender(tl.Memory())
					m = fl
				}
				tiers = append([]walreader.Tier{walreader.NewMemoryTier(m)}, tiers...)
			}
			rd := walreader.New(segSize, tiers...)
			defer rd.Close()
			counted := &tierBytes{}
			rd.Observe(counted)
			if c.maxSend != 0 {
				s.maxSend = c.maxSend
			}
			maxMsg := s.sendSize()
			st := &stream{c: conn, consumer: consumers.NewRegistry().Add(consumers.Info{})}
			start := wal.LSN(segSize) + 100
			end := tl.FlushLSN()
			snd := &sender{c: conn, st: st, rd: rd, tli: 1, segSize: segSize, sent: start, hist: tl.HistoryEntries(), fs: newFileSender(nc)}
			if snd.fs == nil {
				noZeroCopy(t)
			}
			var tiersSeen []string
			errc := make(chan error, 1)
			go func() {
				for snd.sent < end {
					if err := snd.send(context.Background(), time.Now(), end); err != nil {
						errc <- err
						return
					}
					tiersSeen = append(tiersSeen, rd.LastTier())
				}
				errc <- nil
			}()
			want, err := os.ReadFile(filepath.Join(tl.Dir().Path(), wal.SegmentFileName(1, 1, segSize)+walstore.PartialSuffix))
			if err != nil {
				want, err = os.ReadFile(filepath.Join(tl.Dir().Path(), wal.SegmentFileName(1, 1, segSize)))
			}
			if err != nil {
				t.Fatal(err)
			}
			pos := start
			for pos < end {
				var hdr [frameHeader]byte
				if _, err := io.ReadFull(cl, hdr[:]); err != nil {
					t.Fatal(err)
				}
				n := int(binary.BigEndian.Uint32(hdr[1:])) + 1 - frameHeader
				if hdr[0] != 'd' || hdr[5] != 'w' || wal.LSN(binary.BigEndian.Uint64(hdr[6:])) != pos || n <= 0 || uint64(n) > maxMsg {
					t.Fatalf("bad header at %s: %q, %d bytes", pos, hdr, n)
				}
				got := make([]byte, n)
				if _, err := io.ReadFull(cl, got); err != nil {
					t.Fatal(err)
				}
				off := wal.SegmentOffset(pos, segSize)
				if !bytes.Equal(got, want[off:off+uint64(n)]) {
					t.Fatalf("WAL at %s differs from the segment file", pos)
				}
				pos += wal.LSN(n)
				if pos < end && pos%wal.BlockSize != 0 {
					t.Fatalf("message ends at %s, not a page boundary", pos)
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			wantTier := "local"
			if c.memory {
				wantTier = "memory"
			}
			if fl != nil && fl.missEvery > 0 {
				wantTier = "local" // what the rest of each message was read from
			}
			if len(tiersSeen) == 0 || tiersSeen[0] != wantTier {
				t.Fatalf("tiers that served the messages: %v, want %s first", tiersSeen, wantTier)
			}
			// Each byte counted once, for the tier that served it: after
			// a miss, what the window sent for memory and the rest for
			// the files.
			wantCounted := cmp.Or(c.counted, wantTier)
			if counted.n != int(end-start) || counted.tiers != wantCounted {
				t.Fatalf("reads counted %d bytes from %q, want %d from %q", counted.n, counted.tiers, end-start, wantCounted)
			}
			if fl != nil && fl.lent == 0 {
				t.Fatal("the window lent nothing")
			}
			if fl != nil && fl.missEvery > 0 && fl.missed == 0 {
				t.Fatal("no borrow missed")
			}
			if !c.memory {
				// The path the messages took: the mapping when the
				// tier maps (the segment is in the page cache).
				ext, err := rd.ReadOrLocate(context.Background(), make([]byte, maxMsg), 1, start)
				if err != nil || ext.File == nil || (ext.Mapped != nil) != c.mapped {
					t.Fatalf("located %+v, %v; want the file, mapped: %v", ext, err, c.mapped)
				}
			}
		})
	}
}

// tierBytes is a walreader.Observer adding up the bytes read and naming
// the tiers that served them ("a+b" for more than one).
type tierBytes struct {
	n     int
	tiers string
}

func (c *tierBytes) WALRead(tier string, n int) {
	c.n += n
	if c.tiers == "" {
		c.tiers = tier
	} else if !strings.Contains(c.tiers, tier) {
		c.tiers += "+" + tier
	}
}

// flakyLender is the memory window seen by a sender whose window moves
// on: it lends at most lim bytes at a time and misses every missEvery-th
// borrow; its copying reads always miss, so what it does not lend comes
// from the files.
type flakyLender struct {
	l              walreader.Lender
	lim, missEvery int
	calls, lent    int
	missed         int
}

func (f *flakyLender) Borrow(tli uint32, lsn wal.LSN, n int) ([]byte, walmem.Pin, bool) {
	f.calls++
	if f.missEvery > 0 && f.calls%f.missEvery == 0 {
		f.missed++
		return nil, walmem.Pin{}, false
	}
	b, p, ok := f.l.Borrow(tli, lsn, min(n, f.lim))
	if ok {
		f.lent += len(b)
	}
	return b, p, ok
}

func (f *flakyLender) ReadAt([]byte, uint32, wal.LSN) bool { return false }
