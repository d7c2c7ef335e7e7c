package walsender

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
)

// When the kernel cannot read the mapped WAL (the mapped file was cut
// under the mapping, so sendmsg fails with EFAULT part-way), sendMapped
// completes the message from the file, byte for byte; if the file has
// lost the bytes too, the connection is given up (errClosed) after what
// was sent.
func TestSendMappedFault(t *testing.T) {
	const size, cut = 1 << 20, 600 << 10
	dir := t.TempDir()
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*31 + i>>9)
	}
	write := func(name string) *os.File {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, want, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	// The mapping: of a copy cut at 600 KiB after it was mapped. Go code
	// must not touch its pages past the cut (SIGBUS); the kernel may.
	mf := write("mapped")
	m, err := unix.Mmap(int(mf.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if err := os.Truncate(mf.Name(), cut); err != nil {
		t.Fatal(err)
	}

	const off, n = 512 << 10, 256 << 10 // 88 KiB before the cut, the rest after
	for _, c := range []struct {
		name  string
		file  *os.File
		whole bool
	}{
		{"file has the rest", write("intact"), true},
		{"file lost it too", mf, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc, cl := loopback(t)
			s := &Server{m: metrics.New(nil), log: zap.NewNop()}
			cn := &conn{s: s, nc: nc, log: zap.NewNop(), tm: metrics.Unexported()}
			snd := &sender{c: cn, fs: newFileSender(nc)}
			if snd.fs == nil {
				noZeroCopy(t)
			}
			buf := make([]byte, frameHeader+n)
			for i := range frameHeader {
				buf[i] = byte(0xA0 + i)
			}
			ext := walreader.Extent{File: c.file, Off: off, Mapped: m[off : off+n], N: n}
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(io.LimitReader(cl, int64(len(buf))))
				got <- b
			}()
			err := snd.sendMapped(context.Background(), buf, ext)
			if !c.whole {
				if err != errClosed {
					t.Fatalf("sendMapped with the bytes gone: %v, want errClosed", err)
				}
				nc.Close()
			} else if err != nil {
				t.Fatalf("sendMapped: %v", err)
			}
			b := <-got
			wantMsg := append(append([]byte{}, buf[:frameHeader]...), want[off:off+n]...)
			if c.whole && !bytes.Equal(b, wantMsg) {
				t.Fatalf("received %d bytes, want the %d of header and WAL (equal prefix: %v)", len(b), len(wantMsg), bytes.HasPrefix(wantMsg, b))
			}
			if !c.whole && (len(b) < frameHeader || !bytes.HasPrefix(wantMsg, b) || len(b) > frameHeader+cut-off) {
				t.Fatalf("received %d bytes, want a prefix of the message up to the cut (%d)", len(b), frameHeader+cut-off)
			}
		})
	}
}
