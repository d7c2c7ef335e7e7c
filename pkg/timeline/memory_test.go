package timeline

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

func tliBytes(tli uint32, from wal.LSN, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(uint64(from)+uint64(i)) ^ byte(tli*101)
	}
	return b
}

// A switch to a new timeline cuts the memory window at the switch point:
// old-timeline bytes past it are never served, as either timeline, and the
// new timeline's bytes are served once durable.
func TestMemoryWindowSwitch(t *testing.T) {
	tl := openTest(t)
	defer tl.Close()
	tl.SetMemoryWindow(1 << 20)
	end := wal.LSN(testSeg + 600_000)
	if err := tl.Append(testSeg, tliBytes(1, testSeg, int(end-testSeg))); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
	m := tl.Memory()
	p := make([]byte, 1000)
	if !m.ReadAt(p, 1, end-1000) || !bytes.Equal(p, tliBytes(1, end-1000, 1000)) {
		t.Fatal("durable WAL not served from memory")
	}
	sp := wal.LSN(testSeg + 400_000)
	if err := tl.SaveHistory(2, []byte(fmt.Sprintf("1\t%s\tno recovery target specified\n", sp))); err != nil {
		t.Fatal(err)
	}
	if err := tl.SwitchTimeline(context.Background(), 2, sp); err != nil {
		t.Fatal(err)
	}
	for _, tli := range []uint32{1, 2} {
		if m.ReadAt(p, tli, sp) || m.ReadAt(p, tli, end-1000) {
			t.Fatalf("old-timeline bytes past the switch point served as timeline %d", tli)
		}
	}
	if m.ReadAt(p, 1, sp-1000) {
		t.Fatal("old-timeline read served after the switch")
	}
	// The shared history before the switch point, in the window's chunk
	// holding it, is timeline 2's too.
	if !m.ReadAt(p, 2, sp-1000) || !bytes.Equal(p, tliBytes(1, sp-1000, 1000)) {
		t.Fatal("history before the switch point not served on the new timeline")
	}
	if err := tl.Append(sp, tliBytes(2, sp, 300_000)); err != nil {
		t.Fatal(err)
	}
	if m.ReadAt(p, 2, sp) {
		t.Fatal("new-timeline WAL served before it is durable")
	}
	if _, err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
	q := make([]byte, 300_000)
	if !m.ReadAt(q, 2, sp) || !bytes.Equal(q, tliBytes(2, sp, len(q))) {
		t.Fatal("new-timeline WAL not served from memory")
	}
	if m.ReadAt(p, 1, sp) {
		t.Fatal("new-timeline bytes served as the old timeline's")
	}
}

// An idle timeline gives its window's memory back; the next WAL allocates
// again. A timeline that never receives WAL allocates none.
func TestMemoryWindowIdleRelease(t *testing.T) {
	tl := openTest(t)
	defer tl.Close()
	tl.SetMemoryWindow(64 << 20)
	if a := tl.Memory().Stats().Allocated; a != 0 {
		t.Fatalf("%d bytes allocated before any WAL", a)
	}
	if err := tl.Append(testSeg, tliBytes(1, testSeg, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
	if a := tl.Memory().Stats().Allocated; a != tl.Memory().ChunkSize() {
		t.Fatalf("%d bytes allocated for 1000 bytes of WAL, want one chunk", a)
	}
	if err := tl.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	if a := tl.Memory().Stats().Allocated; a == 0 {
		t.Fatal("released right after WAL arrived")
	}
	tl.lastSync.Store(time.Now().Add(-memoryIdleRelease).UnixNano())
	if err := tl.CloseIdle(); err != nil {
		t.Fatal(err)
	}
	if a := tl.Memory().Stats().Allocated; a != 0 {
		t.Fatalf("%d bytes still allocated after %s idle", a, memoryIdleRelease)
	}
	if err := tl.Append(testSeg+1000, tliBytes(1, testSeg+1000, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1000)
	if !tl.Memory().ReadAt(p, 1, testSeg+1000) || !bytes.Equal(p, tliBytes(1, testSeg+1000, 1000)) {
		t.Fatal("WAL after the release not served from memory")
	}
}
