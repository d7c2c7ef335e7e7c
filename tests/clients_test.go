package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// lockedBuffer is a bytes.Buffer safe to read while a process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// receivewal is a pg_receivewal process streaming from a safekeeper.
type receivewal struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan error
}

func startReceivewal(t testing.TB, bins *pgtest.Bins, port int, dir string, args ...string) *receivewal {
	t.Helper()
	all := append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(port), "-U", "postgres", "-D", dir, "--no-loop", "--no-password"}, args...)
	cmd := exec.Command(bins.Path("pg_receivewal"), all...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pg_receivewal: %v", err)
	}
	r := &receivewal{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-r.done
		if t.Failed() {
			t.Logf("pg_receivewal output:\n%s", out.String())
		}
		r.done <- nil
	})
	return r
}

// stop interrupts pg_receivewal (SIGINT, its clean stop) and waits for it.
func (r *receivewal) stop(t testing.TB) {
	t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("pg_receivewal did not stop on SIGINT:\n%s", r.out.String())
	}
	r.done <- nil
}

// runReceivewal runs pg_receivewal to completion and returns its exit error and output.
func runReceivewal(t testing.TB, bins *pgtest.Bins, port int, dir string, args ...string) (string, error) {
	t.Helper()
	all := append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(port), "-U", "postgres", "-D", dir, "--no-loop", "--no-password"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bins.Path("pg_receivewal"), all...).CombinedOutput()
	return string(out), err
}

// completeSegments lists the complete (24-hex, no suffix) segment files in dir.
func completeSegments(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if len(e.Name()) == 24 && !strings.Contains(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// compareWithPrimary requires each named file in dir to be byte-identical
// to the primary's pg_wal file of the same name.
func compareWithPrimary(t testing.TB, primary *pgtest.Cluster, dir string, names []string) {
	t.Helper()
	for _, name := range names {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(primary.WalDir(), name))
		if err != nil {
			t.Fatalf("primary segment %s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			off := 0
			for off < len(got) && off < len(want) && got[off] == want[off] {
				off++
			}
			t.Fatalf("segment %s differs from the primary's at offset %d (sizes %d and %d)", name, off, len(got), len(want))
		}
	}
}

// generateSegments writes rows and switches WAL n times on the primary.
func generateSegments(t testing.TB, primary *pgtest.Cluster, n int) {
	t.Helper()
	primary.Exec(t, "CREATE TABLE IF NOT EXISTS filler(id serial primary key, payload text)")
	for i := 0; i < n; i++ {
		primary.Exec(t, "INSERT INTO filler(payload) SELECT repeat(md5(g::text), 4) FROM generate_series(1, 2000) g")
		primary.Exec(t, "SELECT pg_switch_wal()")
	}
	primary.Exec(t, "INSERT INTO filler(payload) VALUES ('tail')")
}

// xlogMsg is one XLogData message as received.
type xlogMsg struct {
	start, walEnd wal.LSN
	n             int
}

// streamRange runs START_REPLICATION at start with a minimal Go client and
// collects WAL until end, returning the bytes and the message framing.
func streamRange(t testing.TB, connString string, start, end wal.LSN, tli uint32) ([]byte, []xlogMsg) {
	t.Helper()
	ctx := ctxTimeout(t, 60*time.Second)
	conn, err := pgconn.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	conn.Frontend().Send(&pgproto3.Query{String: fmt.Sprintf("START_REPLICATION %s TIMELINE %d", start, tli)})
	if err := conn.Frontend().Flush(); err != nil {
		t.Fatal(err)
	}
	var buf []byte
	var msgs []xlogMsg
	pos := start
	for pos < end {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
		case *pgproto3.CopyData:
			if m.Data[0] != 'w' {
				continue
			}
			s := wal.LSN(binary.BigEndian.Uint64(m.Data[1:]))
			e := wal.LSN(binary.BigEndian.Uint64(m.Data[9:]))
			if s != pos {
				t.Fatalf("XLogData starts at %s, want %s (contiguous)", s, pos)
			}
			msgs = append(msgs, xlogMsg{start: s, walEnd: e, n: len(m.Data) - 25})
			buf = append(buf, m.Data[25:]...)
			pos += wal.LSN(len(m.Data) - 25)
		case *pgproto3.ErrorResponse:
			t.Fatalf("server error: %s %s", m.Code, m.Message)
		default:
			t.Fatalf("unexpected message %T", msg)
		}
	}
	return buf[:end-start], msgs
}

// primaryBytes reads [start, end) of the primary's WAL from its segment files.
func primaryBytes(t testing.TB, primary *pgtest.Cluster, tli uint32, segSize uint64, start, end wal.LSN) []byte {
	t.Helper()
	var out []byte
	for pos := start; pos < end; {
		segno := wal.SegmentNo(pos, segSize)
		b, err := os.ReadFile(filepath.Join(primary.WalDir(), wal.SegmentFileName(tli, segno, segSize)))
		if err != nil {
			t.Fatal(err)
		}
		off := wal.SegmentOffset(pos, segSize)
		n := uint64(end - pos)
		if off+n > segSize {
			n = segSize - off
		}
		out = append(out, b[off:off+n]...)
		pos += wal.LSN(n)
	}
	return out
}

// segmentsByTLI lists dir's complete segments of timeline 1 and of the
// later ones (after one switch).
func segmentsByTLI(t testing.TB, dir string) (tli1, later []string) {
	t.Helper()
	for _, name := range completeSegments(t, dir) {
		if strings.HasPrefix(name, "00000001") {
			tli1 = append(tli1, name)
		} else {
			later = append(later, name)
		}
	}
	return tli1, later
}
