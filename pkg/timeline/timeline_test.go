package timeline

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
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

// A promoted server that was behind forks before the local start (the
// rest was archived and removed): the new timeline's first segment starts
// with the archived bytes, and the local start moves back to it. Without
// an archive the switch is refused with a reason.
func TestSwitchBeforeLocalStart(t *testing.T) {
	tl := openTest(t)
	defer tl.Close()
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte(i % 251)
	}
	pos := wal.LSN(testSeg)
	for pos < 5*testSeg+100 {
		if err := tl.Append(pos, chunk); err != nil {
			t.Fatal(err)
		}
		pos += wal.LSN(len(chunk))
	}
	if _, err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := tl.SetBackupLSN(5*testSeg, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.RemoveBefore(5 * testSeg); err != nil {
		t.Fatal(err)
	}
	sp := wal.LSN(2*testSeg + 1000)
	if err := tl.SaveHistory(2, []byte(fmt.Sprintf("1\t%s\tno recovery target specified\n", sp))); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := tl.SwitchTimeline(ctx, 2, sp); err == nil || !strings.Contains(err.Error(), "no archive") {
		t.Fatalf("switch before the local start without an archive: %v", err)
	}
	archived := make([]byte, testSeg)
	for i := range archived {
		archived[i] = byte(i % 13)
	}
	var asked []uint64
	tl.SetArchive(func(_ context.Context, tli uint32, segno, segSize, sysID uint64) ([]byte, error) {
		if tli != 1 || segSize != testSeg || sysID != 42 {
			return nil, fmt.Errorf("unexpected request tli %d seg size %d system %d", tli, segSize, sysID)
		}
		asked = append(asked, segno)
		return archived, nil
	})
	if err := tl.SwitchTimeline(ctx, 2, sp); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 || asked[0] != 2 {
		t.Fatalf("archive asked for %v, want segment 2", asked)
	}
	if tl.CurrentTLI() != 2 || tl.FlushLSN() != sp || tl.LocalStartLSN() != 2*testSeg || tl.BackupLSN() != 2*testSeg {
		t.Fatalf("after the switch: tli %d flush %s local start %s backup %s", tl.CurrentTLI(), tl.FlushLSN(), tl.LocalStartLSN(), tl.BackupLSN())
	}
	got, err := os.ReadFile(tl.Dir().File(wal.SegmentFileName(2, 2, testSeg) + walstore.PartialSuffix))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, archived[:1000]) {
		t.Fatalf("the new timeline's first segment holds %d bytes, not the archived head", len(got))
	}
	// Ingest continues on the new timeline.
	if err := tl.Append(sp, chunk[:500]); err != nil {
		t.Fatal(err)
	}
	if d, err := tl.Flush(); err != nil || d != sp+500 {
		t.Fatalf("Flush on the new timeline = %s, %v", d, err)
	}
}

// backup_lsn belongs to one archive: pointed at another, archiving starts
// again from the local start.
func TestBindArchive(t *testing.T) {
	tl := openTest(t)
	defer tl.Close()
	chunk := make([]byte, 64<<10)
	pos := wal.LSN(testSeg)
	for pos < 4*testSeg {
		if err := tl.Append(pos, chunk); err != nil {
			t.Fatal(err)
		}
		pos += wal.LSN(len(chunk))
	}
	if _, err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
	if prev, err := tl.BindArchive("file:///a"); err != nil || prev != "" {
		t.Fatalf("first bind: %q %v", prev, err)
	}
	if err := tl.SetBackupLSN(3*testSeg, 1); err != nil {
		t.Fatal(err)
	}
	if prev, err := tl.BindArchive("file:///a"); err != nil || prev != "" || tl.BackupLSN() != 3*testSeg {
		t.Fatalf("same archive: %q %v, backup %s", prev, err, tl.BackupLSN())
	}
	if prev, err := tl.BindArchive("s3://b/p"); err != nil || prev != "file:///a" || tl.BackupLSN() != tl.LocalStartLSN() {
		t.Fatalf("other archive: %q %v, backup %s local start %s", prev, err, tl.BackupLSN(), tl.LocalStartLSN())
	}
	ctl, _ := tl.Dir().ReadControl()
	if ctl.Archive != "s3://b/p" || ctl.BackupLSN != ctl.StartLSN {
		t.Fatalf("control file: archive %q backup %s", ctl.Archive, ctl.BackupLSN)
	}
}

func TestIDFromSystemID(t *testing.T) {
	// The documented derivation, checked against sha256sum:
	// printf 'safekeeper tenant 7312345678901234567' | sha256sum | cut -c1-32
	id := IDFromSystemID(7312345678901234567)
	want := ID{TenantID: "8504b526e9b6550b1fa6426b07b57bcf", TimelineID: "fef430a4a8473dcd56712ec064c250c1"}
	if id != want {
		t.Fatalf("IDFromSystemID = %v, want %v", id, want)
	}
	if id == IDFromSystemID(7312345678901234568) {
		t.Fatal("different systems share ids")
	}
}
