package retention_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/retention"
	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

const (
	segSize = 1 << 20
	tli     = 1
	partial = 1000
	// The test timeline holds segments 1..6 complete and partial bytes
	// of segment 7.
	flushLSN = 7*segSize + partial
)

// newTimeline returns a real timeline starting at segment 1 with
// segments 1..6 complete and partial bytes of segment 7.
func newTimeline(t *testing.T) *timeline.Timeline {
	t.Helper()
	id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tl, err := timeline.Open(filepath.Join(t.TempDir(), id.TenantID, id.TimelineID), id, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	if err := tl.Initialize(timeline.UpstreamInfo{SystemID: 99, WalSegSize: segSize, TLI: tli}, segSize); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, segSize)
	for pos := wal.LSN(segSize); pos < flushLSN; {
		n := min(segSize, int(flushLSN-pos))
		chunk[0] = byte(pos >> 20) // content is irrelevant here
		if err := tl.Append(pos, chunk[:n]); err != nil {
			t.Fatal(err)
		}
		pos += wal.LSN(n)
	}
	if got, err := tl.Flush(); err != nil || got != flushLSN {
		t.Fatalf("Flush = %s, %v", got, err)
	}
	return tl
}

// positions is what slots need of the timeline (as the supervisor
// provides it, without an archive).
type positions struct{ tl *timeline.Timeline }

func (p positions) FlushLSN() wal.LSN  { return p.tl.FlushLSN() }
func (p positions) OldestLSN() wal.LSN { return p.tl.LocalStartLSN() }

type env struct {
	tl    *timeline.Timeline
	slots *slots.Set
	cons  *consumers.Registry
}

func newEnv(t *testing.T, limits slots.Limits) *env {
	t.Helper()
	tl := newTimeline(t)
	s, err := slots.Open(tl.Dir().File(slots.FileName), limits, positions{tl}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return &env{tl: tl, slots: s, cons: consumers.NewRegistry()}
}

func (e *env) slot(t *testing.T, name string, restart wal.LSN) {
	t.Helper()
	if err := e.slots.Create(name, false, true, 0); err != nil {
		t.Fatal(err)
	}
	e.slots.Advance(name, restart)
	e.slots.Persist() // removal honours saved positions
}

func (e *env) pageserver(app string, start, remoteConsistent wal.LSN) *consumers.Consumer {
	c := e.cons.Add(consumers.Info{ApplicationName: app, Addr: "10.0.0.1:5000"})
	c.SetStart(start)
	c.RecordPageserver(feedback.Pageserver{LastReceivedLSN: uint64(flushLSN), DiskConsistentLSN: uint64(flushLSN), RemoteConsistentLSN: uint64(remoteConsistent)})
	return c
}

func (e *env) retainer(cfg retention.Config) *retention.Retainer {
	return retention.New(cfg, e.tl, e.slots, e.cons, zap.NewNop())
}

func TestHorizon(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		cfg    retention.Config
		setup  func(t *testing.T, e *env)
		want   wal.LSN
		heldBy string
	}{
		{"nothing holds: the segment of the durable end", retention.Config{}, nil, 7 * segSize, "current segment"},
		{"archive at its start", retention.Config{Archived: true}, nil, segSize, "archive"},
		{"archive not configured: backup_lsn ignored", retention.Config{Archived: false}, nil, 7 * segSize, "current segment"},
		{"archive advanced", retention.Config{Archived: true}, func(t *testing.T, e *env) {
			if err := e.tl.SetBackupLSN(4*segSize, tli); err != nil {
				t.Fatal(err)
			}
		}, 4 * segSize, "archive"},
		{"archive caught up", retention.Config{Archived: true}, func(t *testing.T, e *env) {
			if err := e.tl.SetBackupLSN(7*segSize, tli); err != nil {
				t.Fatal(err)
			}
		}, 7 * segSize, "current segment"},
		{"oldest slot", retention.Config{}, func(t *testing.T, e *env) {
			e.slot(t, "b_slot", 5*segSize)
			e.slot(t, "a_slot", 3*segSize+123)
			e.slot(t, "c_slot", 6*segSize)
		}, 3*segSize + 123, "slot:a_slot"},
		{"slot without reserved WAL holds nothing", retention.Config{}, func(t *testing.T, e *env) {
			if err := e.slots.Create("unreserved", false, false, 0); err != nil {
				t.Fatal(err)
			}
		}, 7 * segSize, "current segment"},
		{"wal_keep_size", retention.Config{WalKeepBytes: 2*segSize + segSize/2}, nil, flushLSN - (2*segSize + segSize/2), "wal_keep_size"},
		{"wal_keep_size beyond all WAL", retention.Config{WalKeepBytes: 100 * segSize}, nil, 0, "wal_keep_size"},
		{"wal_keep_size within the current segment", retention.Config{WalKeepBytes: partial / 2}, nil, 7 * segSize, "current segment"},
		{"pageserver remote_consistent_lsn", retention.Config{}, func(t *testing.T, e *env) {
			e.pageserver("ps-b", segSize, 4*segSize+7)
			e.pageserver("ps-a", segSize, 2*segSize+5)
		}, 2*segSize + 5, "pageserver:ps-a"},
		{"pageserver without remote_consistent_lsn: its start", retention.Config{}, func(t *testing.T, e *env) {
			e.pageserver("ps", 3*segSize+1, 0)
		}, 3*segSize + 1, "pageserver:ps"},
		{"standby feedback only is no pageserver", retention.Config{}, func(t *testing.T, e *env) {
			c := e.cons.Add(consumers.Info{ApplicationName: "standby"})
			c.SetStart(segSize)
			c.RecordStandby(feedback.StandbyStatus{Write: segSize, Flush: segSize, Apply: segSize})
		}, 7 * segSize, "current segment"},
		{"archive is the oldest of all", retention.Config{Archived: true, WalKeepBytes: 3 * segSize}, func(t *testing.T, e *env) {
			e.slot(t, "s", 5*segSize)
			e.pageserver("ps", segSize, 6*segSize)
			if err := e.tl.SetBackupLSN(2*segSize, tli); err != nil {
				t.Fatal(err)
			}
		}, 2 * segSize, "archive"},
		{"slot is the oldest of all", retention.Config{Archived: true, WalKeepBytes: 3 * segSize}, func(t *testing.T, e *env) {
			e.slot(t, "s", 2*segSize+9)
			e.pageserver("ps", segSize, 6*segSize)
			if err := e.tl.SetBackupLSN(5*segSize, tli); err != nil {
				t.Fatal(err)
			}
		}, 2*segSize + 9, "slot:s"},
		{"wal_keep_size is the oldest of all", retention.Config{Archived: true, WalKeepBytes: 5 * segSize}, func(t *testing.T, e *env) {
			e.slot(t, "s", 3*segSize)
			e.pageserver("ps", segSize, 4*segSize)
			if err := e.tl.SetBackupLSN(6*segSize, tli); err != nil {
				t.Fatal(err)
			}
		}, flushLSN - 5*segSize, "wal_keep_size"},
		{"pageserver is the oldest of all", retention.Config{Archived: true, WalKeepBytes: segSize}, func(t *testing.T, e *env) {
			e.slot(t, "s", 3*segSize)
			e.pageserver("ps", segSize, 2*segSize)
			if err := e.tl.SetBackupLSN(6*segSize, tli); err != nil {
				t.Fatal(err)
			}
		}, 2 * segSize, "pageserver:ps"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, slots.Limits{})
			if tc.setup != nil {
				tc.setup(t, e)
			}
			h, by := e.retainer(tc.cfg).Horizon()
			if h != tc.want || by != tc.heldBy {
				t.Fatalf("Horizon = %s held by %q, want %s held by %q", h, by, tc.want, tc.heldBy)
			}
		})
	}
}

// Lost slots (too far behind, or behind the oldest WAL held) hold nothing.
func TestHorizonIgnoresLostSlots(t *testing.T) {
	e := newEnv(t, slots.Limits{MaxKeepBytes: 3 * segSize})
	e.slot(t, "far_behind", 2*segSize)     // 5 MiB behind the end: lost
	e.slot(t, "within_limit", 5*segSize+1) // reserved
	h, by := e.retainer(retention.Config{}).Horizon()
	if h != 5*segSize+1 || by != "slot:within_limit" {
		t.Fatalf("Horizon = %s held by %q, want 0/500001 held by slot:within_limit", h, by)
	}
}

type runner struct {
	r      *retention.Retainer
	cancel context.CancelFunc
	done   chan error
}

func run(t *testing.T, r *retention.Retainer) *runner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rn := &runner{r: r, cancel: cancel, done: make(chan error, 1)}
	go func() { rn.done <- r.Run(ctx) }()
	t.Cleanup(func() { rn.stop(t) })
	return rn
}

func (rn *runner) stop(t *testing.T) {
	t.Helper()
	rn.cancel()
	select {
	case err, ok := <-rn.done:
		if ok && err != nil {
			t.Errorf("Run returned %v", err)
		}
		if ok {
			close(rn.done)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancellation")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitRemoved waits for a pass that left segments first..7.
func waitRemoved(t *testing.T, r *retention.Retainer, first uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("segments before %d removed", first), func() bool {
		s := r.Status()
		return s.RemovedSegments == first-1 && s.LocalSegments == int(8-first)
	})
}

var fast = retention.Config{RetryInterval: 5 * time.Millisecond, MinInterval: time.Millisecond}

// localSegnos lists the segment numbers of the files in the timeline dir
// that hold WAL (not the writer's preallocation of the next segment).
func localSegnos(t *testing.T, tl *timeline.Timeline) []uint64 {
	t.Helper()
	files, err := tl.Dir().ListSegments(segSize)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, f := range files {
		if f.Partial && f.SegNo > wal.SegmentNo(tl.FlushLSN(), segSize) {
			continue
		}
		out = append(out, f.SegNo)
	}
	return out
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// checkLocal verifies the files, the local start (in memory and in the
// control file) and the status after removals up to segment first.
func checkLocal(t *testing.T, tl *timeline.Timeline, r *retention.Retainer, first uint64) {
	t.Helper()
	if got := localSegnos(t, tl); !slices.Equal(got, seq(first, 7)) {
		t.Errorf("local segments %v, want %d..7", got, first)
	}
	want := wal.LSN(first * segSize)
	if got := tl.LocalStartLSN(); got != want {
		t.Errorf("local start %s, want %s", got, want)
	}
	ctl, err := tl.Dir().ReadControl()
	if err != nil {
		t.Fatal(err)
	}
	if ctl.StartLSN != want {
		t.Errorf("control file start_lsn %s, want %s", ctl.StartLSN, want)
	}
	s := r.Status()
	if s.RemovedSegments != first-1 || s.LocalSegments != int(8-first) || s.LocalBytes != int64((7-first)*segSize+partial) {
		t.Errorf("status %+v; want %d removed, %d local segments of %d bytes", s, first-1, 8-first, (7-first)*segSize+partial)
	}
}

func TestRunRemovesSegmentsBeforeTheHorizon(t *testing.T) {
	e := newEnv(t, slots.Limits{})
	e.slot(t, "s", 3*segSize+10)
	r := e.retainer(fast)
	rn := run(t, r)
	waitRemoved(t, r, 3)
	checkLocal(t, e.tl, r, 3)
	if s := r.Status(); s.HeldBy != "slot:s" || s.HorizonLSN != wal.LSN(3*segSize+10).String() || s.LastError != "" {
		t.Errorf("status %+v; want held by slot:s at 0/300000A", s)
	}
	// The slot advances: once its position is saved (within a second),
	// a pass notices.
	e.slots.Advance("s", 6*segSize)
	waitRemoved(t, r, 6)
	checkLocal(t, e.tl, r, 6)
	// Without holders only the segment of the durable end stays.
	if err := e.slots.Drop(context.Background(), "s", 0, false); err != nil {
		t.Fatal(err)
	}
	waitRemoved(t, r, 7)
	checkLocal(t, e.tl, r, 7)
	if s := r.Status(); s.HeldBy != "current segment" || s.HorizonLSN != wal.LSN(7*segSize).String() {
		t.Errorf("status %+v; want held by the current segment", s)
	}
	rn.stop(t)
}

// With an archive nothing past backup_lsn is removed, whatever else
// would allow it.
func TestRunNeverRemovesPastBackupLSN(t *testing.T) {
	e := newEnv(t, slots.Limits{})
	cfg := fast
	cfg.Archived = true
	r := e.retainer(cfg)
	rn := run(t, r)
	waitFor(t, "a pass held by the archive", func() bool { return r.Status().HeldBy == "archive" })
	checkLocal(t, e.tl, r, 1)
	if err := e.tl.SetBackupLSN(4*segSize, tli); err != nil {
		t.Fatal(err)
	}
	waitRemoved(t, r, 4)
	checkLocal(t, e.tl, r, 4)
	if s := r.Status(); s.HeldBy != "archive" || s.HorizonLSN != wal.LSN(4*segSize).String() {
		t.Errorf("status %+v; want held by the archive at 0/400000", s)
	}
	if got := e.tl.LocalStartLSN(); got > e.tl.BackupLSN() {
		t.Fatalf("local start %s past backup_lsn %s", got, e.tl.BackupLSN())
	}
	if err := e.tl.SetBackupLSN(7*segSize, tli); err != nil {
		t.Fatal(err)
	}
	waitRemoved(t, r, 7)
	checkLocal(t, e.tl, r, 7)
	rn.stop(t)
}

func TestRunKeepsWalKeepSize(t *testing.T) {
	e := newEnv(t, slots.Limits{})
	cfg := fast
	cfg.WalKeepBytes = 2*segSize + 500 // horizon 5*segSize+500: segment 5 stays
	r := e.retainer(cfg)
	run(t, r)
	waitRemoved(t, r, 5)
	checkLocal(t, e.tl, r, 5)
	if s := r.Status(); s.HeldBy != "wal_keep_size" {
		t.Errorf("held by %q, want wal_keep_size", s.HeldBy)
	}
}

func TestRunFollowsPageservers(t *testing.T) {
	e := newEnv(t, slots.Limits{})
	c := e.pageserver("ps", segSize, 2*segSize+1)
	r := e.retainer(fast)
	run(t, r)
	waitRemoved(t, r, 2)
	checkLocal(t, e.tl, r, 2)
	if s := r.Status(); s.HeldBy != "pageserver:ps" {
		t.Errorf("held by %q, want pageserver:ps", s.HeldBy)
	}
	// The pageserver disconnects: it holds nothing any more.
	e.cons.Remove(c)
	waitRemoved(t, r, 7)
	checkLocal(t, e.tl, r, 7)
}

// Before the timeline's first contact a pass does nothing (and does not
// crash on the zero segment size).
func TestRunBeforeInitialization(t *testing.T) {
	id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tl, err := timeline.Open(filepath.Join(t.TempDir(), "tl"), id, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	s, err := slots.Open(tl.Dir().File(slots.FileName), slots.Limits{}, positions{tl}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	r := retention.New(fast, tl, s, consumers.NewRegistry(), zap.NewNop())
	rn := run(t, r)
	if err := tl.Initialize(timeline.UpstreamInfo{SystemID: 99, WalSegSize: segSize, TLI: tli}, 3*segSize); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a pass after initialization", func() bool { return r.Status().HeldBy == "current segment" })
	if st := r.Status(); st.RemovedSegments != 0 || st.LocalSegments != 1 || st.HorizonLSN != wal.LSN(3*segSize).String() {
		t.Errorf("status %+v", st)
	}
	rn.stop(t)
}
