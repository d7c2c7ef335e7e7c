package timeline

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

const testSeg = 1 << 20

func openTest(t *testing.T) *Timeline {
	t.Helper()
	id := ID{TenantID: NewHexID(), TimelineID: NewHexID()}
	tl, err := Open(filepath.Join(t.TempDir(), id.TenantID, id.TimelineID), id, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := tl.Initialize(UpstreamInfo{SystemID: 42, WalSegSize: testSeg, TLI: 1}, testSeg); err != nil {
		t.Fatal(err)
	}
	return tl
}

// Flush is called by the flusher and by the receive loop (and Close); the
// published end must never move backwards whatever the interleaving.
func TestFlushIsMonotonic(t *testing.T) {
	tl := openTest(t)
	defer tl.Close()
	var stop atomic.Bool
	var wg sync.WaitGroup
	regressions := atomic.Int64{}
	wg.Add(1)
	go func() { // observer
		defer wg.Done()
		last := tl.FlushLSN()
		for !stop.Load() {
			cur := tl.FlushLSN()
			if cur < last {
				regressions.Add(1)
			}
			last = cur
		}
	}()
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := tl.Flush(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	chunk := make([]byte, 4096)
	pos := wal.LSN(testSeg)
	for i := 0; i < 2000; i++ {
		if err := tl.Append(pos, chunk); err != nil {
			t.Fatal(err)
		}
		pos += wal.LSN(len(chunk))
	}
	if d, err := tl.Flush(); err != nil || d != pos {
		t.Fatalf("final Flush = %s, %v; want %s", d, err, pos)
	}
	stop.Store(true)
	wg.Wait()
	if n := regressions.Load(); n > 0 {
		t.Fatalf("FlushLSN moved backwards %d times", n)
	}
}

func TestBackupAndLocalStart(t *testing.T) {
	tl := openTest(t)
	chunk := make([]byte, 64<<10)
	pos := wal.LSN(testSeg)
	for pos < 4*testSeg+100 {
		if err := tl.Append(pos, chunk); err != nil {
			t.Fatal(err)
		}
		pos += wal.LSN(len(chunk))
	}
	if _, err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := tl.BackupLSN(); got != testSeg {
		t.Fatalf("initial BackupLSN = %s, want %s", got, wal.LSN(testSeg))
	}
	ch := tl.Changed()
	if err := tl.SetBackupLSN(3*testSeg, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("SetBackupLSN did not wake waiters")
	}
	if err := tl.SetBackupLSN(2*testSeg, 1); err != nil || tl.BackupLSN() != 3*testSeg {
		t.Fatalf("BackupLSN moved backwards: %s %v", tl.BackupLSN(), err)
	}
	// Removal never goes past the segment holding the flush position.
	removed, err := tl.RemoveBefore(100 * testSeg)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 3 || tl.LocalStartLSN() != 4*testSeg {
		t.Fatalf("removed %v, local start %s", removed, tl.LocalStartLSN())
	}
	dir := tl.Dir()
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}
	ctl, err := dir.ReadControl()
	if err != nil {
		t.Fatal(err)
	}
	if ctl.StartLSN != 4*testSeg || ctl.BackupLSN != 3*testSeg || ctl.FlushLSN != pos {
		t.Fatalf("control file: start %s backup %s flush %s", ctl.StartLSN, ctl.BackupLSN, ctl.FlushLSN)
	}
	files, _ := dir.ListSegments(testSeg)
	if len(files) != 1 || files[0].SegNo != 4 {
		t.Fatalf("files left: %+v", files)
	}
}
