package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// localFiles lists the safekeeper's segment files of its only timeline.
func localFiles(t testing.TB, sk *SK, st archStatus) []walstore.SegmentFile {
	t.Helper()
	files, err := walstore.Dir(filepath.Join(sk.DataDir, st.TenantID, st.TimelineID)).ListSegments(st.WalSegSize)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// localState checks the timeline directory against the status: segments
// contiguous from the local start to (at least) the segment holding the
// end of WAL, and complete ones not renamed late. It returns "" when they
// agree, else what is wrong, and the complete segments.
func localState(t testing.TB, sk *SK) (string, []string) {
	t.Helper()
	st := sk.archStatus(t)
	start, flush := st.lsn(t, st.LocalStart), st.lsn(t, st.FlushLSN)
	seg := st.WalSegSize
	files := localFiles(t, sk, st)
	want := wal.SegmentNo(start, seg)
	var complete []string
	for _, f := range files {
		if f.SegNo != want {
			return fmt.Sprintf("local segments %v: expected segment %d next (local start %s, flush %s)", names(files), want, start, flush), nil
		}
		if wal.LSN((f.SegNo+1)*seg) <= flush && f.Partial {
			return fmt.Sprintf("segment %s is complete (flush %s) but still .partial", f.Name, flush), nil
		}
		if !f.Partial {
			complete = append(complete, f.Name)
		}
		want++
	}
	// The writer may already have opened the segment after the one
	// holding the durable end.
	if want <= wal.SegmentNo(flush, seg) {
		return fmt.Sprintf("local segments %v end before the segment holding flush %s", names(files), flush), nil
	}
	return "", complete
}

// checkLocalConsistent requires the timeline directory to be what the
// status says (see localState) and every complete segment byte-identical
// to the primary's. Retention runs meanwhile, so the status and the
// listing are taken again until they are of the same moment.
func checkLocalConsistent(t testing.TB, sk *SK, primary *pgtest.Cluster) {
	t.Helper()
	var problem string
	var complete []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		if problem, complete = localState(t, sk); problem == "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
	if problem != "" {
		t.Fatal(problem)
	}
	st := sk.archStatus(t)
	dir := filepath.Join(sk.DataDir, st.TenantID, st.TimelineID)
	for _, name := range complete {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue // removed by retention since the listing
		}
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(primary.WalDir(), name))
		if err != nil {
			t.Fatalf("primary segment %s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("local segment %s differs from the primary's", name)
		}
	}
}

// checkCrashState inspects the directory a kill -9 left, before anything
// repairs it: every segment from the control file's local start to the
// last file exists (files below the start may remain; the next start
// removes them), so the control file never claims a hole.
func checkCrashState(t testing.TB, sk *SK, tenant, timeline string, seg uint64) {
	t.Helper()
	d := walstore.Dir(filepath.Join(sk.DataDir, tenant, timeline))
	ctl, err := d.ReadControl()
	if err != nil {
		t.Fatal(err)
	}
	files, err := d.ListSegments(seg)
	if err != nil {
		t.Fatal(err)
	}
	have := map[uint64]bool{}
	var last uint64
	for _, f := range files {
		have[f.SegNo] = true
		last = max(last, f.SegNo)
	}
	for segno := wal.SegmentNo(ctl.StartLSN, seg); segno <= last; segno++ {
		if !have[segno] {
			t.Fatalf("after kill -9: segment %d missing although the control file's local start is %s (files %v)", segno, ctl.StartLSN, names(files))
		}
	}
}

// loadPerSecond bounds startLoad's statements, about 1 MB of WAL each.
const loadPerSecond = 5

// startLoad inserts rows on the primary in a loop until the returned
// function (also run at cleanup, before the primary stops) is called.
// It runs at most loadPerSecond statements a second: unthrottled, a fast
// VM made WAL faster than a race-detector build's offloader archives it
// (16-24 local segments in TestRetentionKill9UnderLoad on 2026-12-02,
// the code before and after that day's changes alike), and these tests
// are of retention and failover under load, not of archive throughput.
func startLoad(t testing.TB, primary *pgtest.Cluster) (stop func()) {
	t.Helper()
	primary.Exec(t, "CREATE TABLE IF NOT EXISTS load(id serial primary key, pad text)")
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pace := time.NewTicker(time.Second / loadPerSecond)
		defer pace.Stop()
		for {
			select {
			case <-done:
				return
			case <-pace.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			// About 1 MB of WAL per statement: a few MB/s, which the
			// offloader of a race-detector build keeps up with on 2 cores.
			err := execOn(ctx, primary, "INSERT INTO load(pad) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 1000) g")
			cancel()
			if err != nil {
				select {
				case <-done:
				default:
					t.Errorf("load: %v", err)
				}
				return
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// execOn runs sql on c.
func execOn(ctx context.Context, c *pgtest.Cluster, sql string) error {
	conn, err := pgconn.Connect(ctx, c.ConnString())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql).ReadAll()
	return err
}

func names(files []walstore.SegmentFile) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.Name)
	}
	return out
}

// Issue 6 acceptance 2 (slots): without an archive, a slot holds local WAL
// until it falls further behind than --max-slot-wal-keep-size; then it is
// reported lost and removal goes on. held_by names the slot while it holds.
func TestRetentionSlotHoldsUntilCap(t *testing.T) {
	const seg = 1 << 20
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := StartSK(t, primary.ConnString(), "--wal-keep-size", "0", "--max-slot-wal-keep-size", "5MB")
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	replQuery(t, sk, "CREATE_REPLICATION_SLOT holder PHYSICAL (RESERVE_WAL)")
	restart, err := wal.ParseLSN(str(replQuery(t, sk, "READ_REPLICATION_SLOT holder")[1]))
	if err != nil {
		t.Fatal(err)
	}
	generateSegments(t, primary, 3)
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	// Retention runs every second: give it a pass, then the slot's WAL must
	// still be there and the slot must be the holder.
	pgtest.WaitFor(t, 30*time.Second, "retention to name the slot as holder", func() bool {
		return sk.archStatus(t).Retention.HeldBy == "slot:holder"
	})
	st := sk.archStatus(t)
	if ls := st.lsn(t, st.LocalStart); ls > wal.SegmentStart(restart, seg) {
		t.Fatalf("local start %s is past the slot's restart_lsn %s", ls, restart)
	}
	if st.slot("holder") != "reserved" {
		t.Fatalf("slot within its cap reports %q", st.slot("holder"))
	}
	checkLocalConsistent(t, sk, primary)

	// Past the cap: lost, and its WAL is released.
	generateSegments(t, primary, 5)
	flush := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, flush, 60*time.Second)
	pgtest.WaitFor(t, 30*time.Second, "the lost slot's WAL to be removed", func() bool {
		st := sk.archStatus(t)
		return st.lsn(t, st.LocalStart) == wal.SegmentStart(flush, seg)
	})
	st = sk.archStatus(t)
	if st.slot("holder") != "lost" {
		t.Fatalf("slot past its cap reports %q, want lost", st.slot("holder"))
	}
	if v, ok := sk.metricWith(t, `safekeeper_slot_lost{`, `slot="holder"`); !ok || v != 1 {
		t.Fatalf("safekeeper_slot_lost = %v", v)
	}
	t.Logf("slot held WAL from %s until it was lost; local start now %s, %d segments removed", restart, st.LocalStart, st.Retention.Removed)
}

// Issue 6 acceptance 2 (crash): under sustained load with 1 MB segments
// and an archive, retention removes segments every second; kill -9 at
// varying moments, restart, and the directory is consistent each time:
// segments contiguous from the recorded local start to the end of WAL and
// byte-identical to the primary's, the local segment count bounded, and
// nothing removed before it was archived. (The exact window between
// recording the new start and unlinking is covered by walstore's
// TestOpenCompletesInterruptedRemoval.)
func TestRetentionKill9UnderLoad(t *testing.T) {
	const seg = 1 << 20
	ae := fileArchive(t)
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := StartSK(t, primary.ConnString(), "--archive", ae.url, "--wal-keep-size", "0")
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	first := sk.archStatus(t).lsn(t, sk.archStatus(t).LocalStart)
	stopLoad := startLoad(t, primary)
	// Steady state first: the local segment count stays bounded while
	// the archive keeps pace.
	maxLocal, removed0 := 0, sk.archStatus(t).Retention.Removed
	pgtest.WaitFor(t, 90*time.Second, "20 segments to be archived and removed under load", func() bool {
		st := sk.archStatus(t)
		if n := len(localFiles(t, sk, st)); n > maxLocal {
			maxLocal = n
		}
		return st.Retention.Removed >= removed0+20
	})
	if maxLocal > 8 {
		t.Fatalf("up to %d local segments under sustained load; retention should keep few", maxLocal)
	}
	for round := 0; round < 5; round++ {
		before := sk.archStatus(t).Retention.Removed
		pgtest.WaitFor(t, 60*time.Second, "retention to remove segments under load", func() bool {
			return sk.archStatus(t).Retention.Removed >= before+2
		})
		time.Sleep(time.Duration(137*round) * time.Millisecond) // vary the moment of the kill
		st := sk.archStatus(t)
		sk.Kill()
		checkCrashState(t, sk, st.TenantID, st.TimelineID, seg)
		sk.Start()
		checkLocalConsistent(t, sk, primary)
		st = sk.archStatus(t)
		if ls, b := st.lsn(t, st.LocalStart), st.lsn(t, st.BackupLSN); ls > b {
			t.Fatalf("local start %s is past backup_lsn %s: WAL removed before it was archived", ls, b)
		}
	}
	stopLoad()
	target := waitArchived(t, sk, primary, seg)
	checkLocalConsistent(t, sk, primary)
	st := sk.archStatus(t)
	checkArchive(t, ae, st, primary, first, target)
	t.Logf("5 kill -9 cycles under load: directory consistent each time; at most %d local segments; archive complete %s..%s",
		maxLocal, first, target)
}

// Issue 6 acceptance 6: an object with the name of a segment to upload
// but other content is placed in the archive beforehand. It is never
// overwritten, offloading of the timeline stops with the error in status
// and metrics, and ingest and serving go on.
func TestArchiveConflict(t *testing.T) {
	const seg = 1 << 20
	ae := fileArchive(t)
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	tenant, tlid := strings.Repeat("ab", 16), strings.Repeat("cd", 16)
	next := wal.SegmentNo(flushLSNOfPrimary(t, primary), seg) + 1
	bad := fmt.Sprintf("%s/%s/wal/%s.zst", tenant, tlid, wal.SegmentFileName(1, next, seg))
	junk := []byte("not this segment")
	if err := ae.store.Create(context.Background(), bad, junk, map[string]string{"sk-sha256": strings.Repeat("0", 64)}); err != nil {
		t.Fatal(err)
	}
	sk := StartSK(t, primary.ConnString(), "--archive", ae.url, "--wal-keep-size", "0",
		"--tenant-id", tenant, "--timeline-id", tlid)
	generateSegments(t, primary, 4)
	flush := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, flush, 60*time.Second)
	pgtest.WaitFor(t, 60*time.Second, "the conflict to be reported", func() bool {
		st := sk.archStatus(t)
		return st.Archive != nil && st.Archive.Conflict != ""
	})
	st := sk.archStatus(t)
	if !strings.Contains(st.Archive.Conflict, wal.SegmentFileName(1, next, seg)) || st.Archive.State != "stopped" {
		t.Fatalf("archive status %+v", st.Archive)
	}
	if b := st.lsn(t, st.BackupLSN); b != wal.LSN(next*seg) {
		t.Fatalf("backup_lsn %s, want the conflicting segment's start %s", b, wal.LSN(next*seg))
	}
	labels := fmt.Sprintf(`{tenant_id="%s",timeline_id="%s"}`, tenant, tlid)
	if v, ok := sk.metric(t, "safekeeper_archive_conflict"+labels); !ok || v != 1 {
		t.Fatalf("safekeeper_archive_conflict = %v (%v)", v, ok)
	}
	rc, _, err := ae.store.Get(context.Background(), bad)
	if err != nil {
		t.Fatal(err)
	}
	var got [64]byte
	n, _ := rc.Read(got[:])
	rc.Close()
	if string(got[:n]) != string(junk) {
		t.Fatalf("the conflicting object was changed: %q", got[:n])
	}
	// Ingest goes on, local WAL from the conflict on is kept, serving works.
	generateSegments(t, primary, 2)
	flush = flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, flush, 60*time.Second)
	st = sk.archStatus(t)
	if ls := st.lsn(t, st.LocalStart); ls > wal.LSN(next*seg) {
		t.Fatalf("local start %s passed the unarchived segment %d", ls, next)
	}
	start := wal.LSN(next * seg)
	got2, _ := streamRange(t, sk.ConnString(), start, flush, 1)
	if want := primaryBytes(t, primary, 1, seg, start, flush); string(got2) != string(want) {
		t.Fatal("WAL streamed after the conflict differs from the primary's")
	}
	checkLocalConsistent(t, sk, primary)
	if _, err := os.Stat(filepath.Join(sk.DataDir, tenant, tlid)); err != nil {
		t.Fatal(err)
	}
}
