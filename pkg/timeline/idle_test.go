package timeline

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// An idle timeline holds no file: after Initialize, and after CloseIdle
// once appended WAL is flushed. A timeline switch and Close work with the
// file closed, and WAL reads back whole after a reopen.
func TestIdleTimelineHoldsNoFile(t *testing.T) {
	tl := openTest(t)
	dir := tl.Dir().Path()
	if got := testenv.WaitOpenFilesIn(t, dir, 0, 10*time.Second); len(got) != 0 {
		t.Fatalf("files open after Initialize: %v", got)
	}
	chunk := make([]byte, 3000)
	for i := range chunk {
		chunk[i] = byte(i % 241)
	}
	pos := wal.LSN(testSeg)
	appendFlush := func() {
		t.Helper()
		if err := tl.Append(pos, chunk); err != nil {
			t.Fatal(err)
		}
		pos += wal.LSN(len(chunk))
		if d, err := tl.Flush(); err != nil || d != pos {
			t.Fatalf("Flush = %s, %v; want %s", d, err, pos)
		}
	}
	appendFlush()
	if got := testenv.WaitOpenFilesIn(t, dir, 1, 10*time.Second); len(got) != 1 {
		t.Fatalf("files open while ingesting: %v; want the current segment", got)
	}
	if err := tl.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	if got := testenv.WaitOpenFilesIn(t, dir, 0, 10*time.Second); len(got) != 0 {
		t.Fatalf("files open after CloseIdle: %v", got)
	}
	appendFlush() // reopens

	// Switch with the current file closed.
	if err := tl.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	sp := pos - 1000
	if err := tl.SaveHistory(2, []byte(fmt.Sprintf("1\t%s\tno recovery target specified\n", sp))); err != nil {
		t.Fatal(err)
	}
	if err := tl.SwitchTimeline(context.Background(), 2, sp); err != nil {
		t.Fatal(err)
	}
	if got := testenv.WaitOpenFilesIn(t, dir, 0, 10*time.Second); len(got) != 0 {
		t.Fatalf("files open after the switch: %v", got)
	}
	pos = sp
	appendFlush()
	if err := tl.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	if err := tl.Close(); err != nil {
		t.Fatalf("Close with the file closed: %v", err)
	}

	tl2, err := Open(dir, tl.ID(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer tl2.Close()
	if tl2.FlushLSN() != pos || tl2.CurrentTLI() != 2 {
		t.Fatalf("reopened: flush %s tli %d; want %s on 2", tl2.FlushLSN(), tl2.CurrentTLI(), pos)
	}
	got, err := os.ReadFile(tl2.Dir().File(wal.SegmentFileName(2, 1, testSeg) + walstore.PartialSuffix))
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte{}, chunk...), chunk[:len(chunk)-1000]...), chunk...)
	if !bytes.Equal(got, want) {
		t.Fatalf("the new timeline's segment holds %d bytes, not the %d written", len(got), len(want))
	}
}
