package offload_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/offload"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

const (
	segSize  = 1 << 20
	systemID = 7301234567890123456
	tli      = 2
)

// history2 makes timeline 2 begin at the start of segment 1, where the
// test timelines start: every segment is in a TLI 2 file.
var history2 = []byte("1\t0/100000\tno recovery target specified\n")

var testID = archive.Identity{SystemID: systemID, SegSize: segSize}

// walBytes returns the n bytes the tests write at from.
func walBytes(from wal.LSN, n int) []byte { return waltest.Pattern(from, n) }

// openTimeline opens a real, not yet initialized timeline.
func openTimeline(t *testing.T) *timeline.Timeline {
	t.Helper()
	id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tl, err := timeline.Open(filepath.Join(t.TempDir(), id.TenantID, id.TimelineID), id, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	return tl
}

func initialize(t *testing.T, tl *timeline.Timeline) {
	t.Helper()
	if err := tl.SaveHistory(tli, history2); err != nil {
		t.Fatal(err)
	}
	if err := tl.Initialize(timeline.UpstreamInfo{SystemID: systemID, WalSegSize: segSize, TLI: tli, ServerVersion: "16.0", ServerVersionNum: 160000}, segSize); err != nil {
		t.Fatal(err)
	}
}

// newTimeline returns an initialized timeline starting at segment 1 that
// holds segs complete segments (1..segs) and partial bytes of the next.
func newTimeline(t *testing.T, segs, partial int) *timeline.Timeline {
	t.Helper()
	tl := openTimeline(t)
	initialize(t, tl)
	appendWAL(t, tl, segs*segSize+partial)
	return tl
}

// appendWAL appends n bytes at the end of WAL and makes them durable.
func appendWAL(t *testing.T, tl *timeline.Timeline, n int) {
	t.Helper()
	for n > 0 {
		start := tl.WrittenLSN()
		chunk := min(n, segSize-int(wal.SegmentOffset(start, segSize)))
		if err := tl.Append(start, walBytes(start, chunk)); err != nil {
			t.Fatal(err)
		}
		n -= chunk
	}
	if _, err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
}

var errInjected = errors.New("injected store failure")

// hookStore is a real store with failure injection and call counting.
type hookStore struct {
	objstore.Store

	mu          sync.Mutex
	creates     map[string]int // Create calls per key
	failCreates int            // fail this many more Create calls
	// beforeCreate runs before a Create reaches the store (not for
	// injected failures); an error is returned instead of storing.
	beforeCreate func(ctx context.Context, key string) error
	afterCreate  func(key string, err error)
	afterHead    func(key string)
}

func newHookStore(t *testing.T) *hookStore {
	t.Helper()
	st, err := objstore.Open(context.Background(), "file://"+t.TempDir(), objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &hookStore{Store: st, creates: map[string]int{}}
}

func (s *hookStore) Create(ctx context.Context, key string, body []byte, meta map[string]string) error {
	s.mu.Lock()
	s.creates[key]++
	fail := s.failCreates > 0
	if fail {
		s.failCreates--
	}
	before, after := s.beforeCreate, s.afterCreate
	s.mu.Unlock()
	if fail {
		return fmt.Errorf("create %s: %w", key, errInjected)
	}
	if before != nil {
		if err := before(ctx, key); err != nil {
			return err
		}
	}
	err := s.Store.Create(ctx, key, body, meta)
	if after != nil {
		after(key, err)
	}
	return err
}

func (s *hookStore) Head(ctx context.Context, key string) (objstore.Info, error) {
	info, err := s.Store.Head(ctx, key)
	s.mu.Lock()
	after := s.afterHead
	s.mu.Unlock()
	if after != nil {
		after(key)
	}
	return info, err
}

func (s *hookStore) createCalls(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creates[key]
}

func newArchive(t *testing.T, st objstore.Store, tl *timeline.Timeline, c archive.Compression) *archive.Archive {
	t.Helper()
	a, err := archive.New(st, tl.ID().TenantID, tl.ID().TimelineID, c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func walPrefix(tl offload.Timeline) string {
	ctl := tl.Control()
	return archive.WALPrefix(ctl.TenantID, ctl.TimelineID)
}

// segKey is the key of segment segno of timeline tli in archive a.
func segKey(tl offload.Timeline, a *archive.Archive, segno uint64) string {
	k := walPrefix(tl) + wal.SegmentFileName(tli, segno, segSize)
	if a.Compression() == archive.Zstd {
		k += archive.ZstdSuffix
	}
	return k
}

func fastConfig(concurrency int) offload.Config {
	return offload.Config{Concurrency: concurrency, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, AttemptTimeout: 10 * time.Second}
}

// start runs o until the test ends; the returned channel yields Run's
// result once ctx is cancelled with the returned function.
func start(t *testing.T, o *offload.Offloader) (cancel func(), done <-chan error) {
	t.Helper()
	ctx, cancelCtx := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- o.Run(ctx) }()
	var once sync.Once
	var result error
	stop := func() {
		once.Do(func() {
			cancelCtx()
			select {
			case result = <-ch:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10s of its context being cancelled")
			}
			if result != nil {
				t.Errorf("Run returned %v, want nil", result)
			}
		})
	}
	t.Cleanup(stop)
	return stop, ch
}

// waitFor polls cond every 2ms until it holds or the deadline passes.
func waitFor(t *testing.T, deadline time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", deadline, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// archived returns the (tli, segno) of every archived segment.
func archived(t *testing.T, a *archive.Archive) []uint64 {
	t.Helper()
	segs, _, _, err := a.List(context.Background(), segSize)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, e := range segs {
		if e.TLI != tli {
			continue
		}
		out = append(out, e.SegNo)
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

func controlBackupLSN(t *testing.T, tl *timeline.Timeline) wal.LSN {
	t.Helper()
	ctl, err := tl.Dir().ReadControl()
	if err != nil {
		t.Fatal(err)
	}
	return ctl.BackupLSN
}

func TestUploadsCompleteSegmentsOnce(t *testing.T) {
	ctx := context.Background()
	tl := newTimeline(t, 6, segSize/3) // segments 1..6 complete, 7 partial
	st := newHookStore(t)
	ar := newArchive(t, st, tl, archive.Zstd)
	o := offload.New(fastConfig(4), tl, ar, zap.NewNop(), nil)
	if s := o.Status(); s.State != offload.StateWaiting || s.Archive != ar.String() {
		t.Fatalf("status before Run: %+v", s)
	}
	if _, ok := o.ArchiveStart(); ok {
		t.Fatal("ArchiveStart known before anything was listed or uploaded")
	}
	start(t, o)
	end := wal.LSN(7 * segSize)
	waitFor(t, 10*time.Second, "backup_lsn to reach the end of segment 6", func() bool { return tl.BackupLSN() == end })
	waitFor(t, 10*time.Second, "state idle", func() bool { return o.Status().State == offload.StateIdle })

	if got := archived(t, ar); !slices.Equal(got, seq(1, 6)) {
		t.Fatalf("archived segments %v, want 1..6 (never the partial 7)", got)
	}
	for segno := uint64(1); segno <= 7; segno++ {
		want := 1
		if segno == 7 {
			want = 0
		}
		if n := st.createCalls(segKey(tl, ar, segno)); n != want {
			t.Errorf("segment %d: %d Create calls, want %d", segno, n, want)
		}
		if n := st.createCalls(strings.TrimSuffix(segKey(tl, ar, segno), archive.ZstdSuffix)); n != 0 {
			t.Errorf("segment %d: %d Create calls under the uncompressed name", segno, n)
		}
	}
	histKey := walPrefix(tl) + "00000002.history"
	if n := st.createCalls(histKey); n != 1 {
		t.Errorf("history file: %d Create calls, want 1", n)
	}
	if got, err := ar.GetHistory(ctx, tli, testID); err != nil || !bytes.Equal(got, history2) {
		t.Errorf("archived history %q, %v", got, err)
	}
	for segno := uint64(1); segno <= 6; segno++ {
		got, err := ar.GetSegment(ctx, tli, segno, testID)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, walBytes(wal.LSN(segno*segSize), segSize)) {
			t.Fatalf("archived segment %d differs from the local one", segno)
		}
	}
	if got := controlBackupLSN(t, tl); got != end {
		t.Errorf("control file backup_lsn %s, want %s", got, end)
	}
	if a, ok := o.ArchiveStart(); !ok || a != segSize {
		t.Errorf("ArchiveStart = %s, %v; want %s", a, ok, wal.LSN(segSize))
	}
	segs, hists, _, err := ar.List(ctx, segSize)
	if err != nil {
		t.Fatal(err)
	}
	var stored uint64
	for _, e := range append(segs, hists...) {
		stored += uint64(e.Size)
	}
	s := o.Status()
	if s.UploadedObjects != 7 || s.UploadedBytes != stored || s.UploadErrors != 0 || s.LastError != "" || s.LastErrorAt != nil || s.Conflict != "" {
		t.Errorf("status %+v; want 7 objects (6 segments + history), %d bytes, no errors", s, stored)
	}
	if o.Conflicted() {
		t.Error("Conflicted() without a conflict")
	}
}

func TestRetriesFailedUploads(t *testing.T) {
	tl := newTimeline(t, 6, 100)
	st := newHookStore(t)
	st.failCreates = 5
	ar := newArchive(t, st, tl, archive.None)
	o := offload.New(fastConfig(4), tl, ar, zap.NewNop(), nil)
	start(t, o)
	waitFor(t, 10*time.Second, "backup_lsn to reach the end of segment 6", func() bool { return tl.BackupLSN() == 7*segSize })
	waitFor(t, 10*time.Second, "state idle", func() bool { return o.Status().State == offload.StateIdle })
	s := o.Status()
	if s.UploadErrors != 5 {
		t.Errorf("UploadErrors = %d, want 5 (one per failed Create)", s.UploadErrors)
	}
	if !strings.Contains(s.LastError, errInjected.Error()) || s.LastErrorAt == nil {
		t.Errorf("LastError %q at %v, want the injected failure", s.LastError, s.LastErrorAt)
	}
	if got := archived(t, ar); !slices.Equal(got, seq(1, 6)) {
		t.Fatalf("archived %v, want 1..6", got)
	}
	if s.UploadedObjects != 7 {
		t.Errorf("UploadedObjects = %d, want 7", s.UploadedObjects)
	}
	if got := controlBackupLSN(t, tl); got != 7*segSize {
		t.Errorf("control file backup_lsn %s", got)
	}
}

// A slow segment holds backup_lsn back; later segments upload meanwhile.
func TestBackupLSNIsContiguousPrefix(t *testing.T) {
	tl := newTimeline(t, 6, 100)
	st := newHookStore(t)
	ar := newArchive(t, st, tl, archive.None)
	slow := segKey(tl, ar, 2)
	release := make(chan struct{})
	st.beforeCreate = func(ctx context.Context, key string) error {
		if key != slow {
			return nil
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	o := offload.New(fastConfig(4), tl, ar, zap.NewNop(), nil)

	// Watch backup_lsn on every change until the slow segment is released.
	var passed atomic.Uint64
	watchDone := make(chan struct{})
	var released atomic.Bool
	go func() {
		defer close(watchDone)
		for !released.Load() {
			ch := tl.Changed()
			if b := tl.BackupLSN(); b > 2*segSize && !released.Load() {
				passed.Store(uint64(b))
			}
			select {
			case <-ch:
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	start(t, o)
	waitFor(t, 10*time.Second, "segments 1, 3..6 to be uploaded", func() bool {
		return slices.Equal(archived(t, ar), []uint64{1, 3, 4, 5, 6}) && o.Status().UploadedObjects == 6 // + history
	})
	waitFor(t, 10*time.Second, "backup_lsn to reach the slow segment", func() bool { return tl.BackupLSN() == 2*segSize })
	if b := controlBackupLSN(t, tl); b != 2*segSize {
		t.Errorf("control file backup_lsn %s while segment 2 uploads, want %s", b, wal.LSN(2*segSize))
	}
	if s := o.Status(); s.State != offload.StateUploading {
		t.Errorf("state %q while segment 2 uploads", s.State)
	}
	released.Store(true)
	close(release)
	<-watchDone
	if p := passed.Load(); p != 0 {
		t.Fatalf("backup_lsn reached %s before segment 2 was archived", wal.LSN(p))
	}
	waitFor(t, 10*time.Second, "backup_lsn to reach the end", func() bool { return tl.BackupLSN() == 7*segSize })
	if got := archived(t, ar); !slices.Equal(got, seq(1, 6)) {
		t.Fatalf("archived %v", got)
	}
	if n := st.createCalls(slow); n != 1 {
		t.Errorf("slow segment: %d Create calls, want 1", n)
	}
}

// A different object under the name of the 3rd segment stops offloading
// for good: nothing is overwritten, backup_lsn stays at that segment,
// and Run keeps running until its context ends.
func TestConflictStopsOffloading(t *testing.T) {
	ctx := context.Background()
	tl := newTimeline(t, 6, 100)
	st := newHookStore(t)
	ar := newArchive(t, st, tl, archive.None)
	// Segment 3 (the third of the timeline) holds other bytes.
	other := walBytes(0, segSize)
	if _, err := ar.PutSegment(ctx, tli, 3, other, testID); err != nil {
		t.Fatal(err)
	}
	o := offload.New(fastConfig(1), tl, ar, zap.NewNop(), nil)
	conflicted := o.ConflictChanged()
	stop, done := start(t, o)
	select { // the cluster learns it without polling Conflicted
	case <-conflicted:
	case <-time.After(10 * time.Second):
		t.Fatal("ConflictChanged not closed within 10s")
	}
	if !o.Conflicted() {
		t.Fatal("ConflictChanged closed while Conflicted is false")
	}
	s := o.Status()
	name := wal.SegmentFileName(tli, 3, segSize)
	if s.State != offload.StateStopped || !strings.Contains(s.Conflict, name) || s.LastError == "" || s.LastErrorAt == nil {
		t.Errorf("status %+v; want state stopped and the conflict on %s", s, name)
	}
	if b := tl.BackupLSN(); b != 3*segSize {
		t.Errorf("backup_lsn %s, want the start of segment 3 (%s)", b, wal.LSN(3*segSize))
	}
	if b := controlBackupLSN(t, tl); b != 3*segSize {
		t.Errorf("control file backup_lsn %s, want %s", b, wal.LSN(3*segSize))
	}
	if got, err := ar.GetSegment(ctx, tli, 3, testID); err != nil || !bytes.Equal(got, other) {
		t.Errorf("conflicting object changed: %v", err)
	}
	if got := archived(t, ar); !slices.Equal(got, seq(1, 3)) {
		t.Errorf("archived %v, want 1..3 (nothing after the conflict)", got)
	}
	// New WAL does not restart offloading.
	appendWAL(t, tl, segSize)
	if s := o.Status(); s.State != offload.StateStopped {
		t.Errorf("state %q after new WAL, want stopped", s.State)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v after the conflict; it must run until cancelled", err)
	default:
	}
	stop()
}

// With parallel uploads, segments below the conflicting one that are still
// uploading when the conflict is found are not abandoned: they complete,
// and backup_lsn reaches the conflicting segment's start (the archived
// prefix is what retention may trust; stopping short of it keeps archived
// WAL locally until the next start).
func TestConflictStillCountsEarlierInflightSegments(t *testing.T) {
	ctx := context.Background()
	tl := newTimeline(t, 6, 100)
	st := newHookStore(t)
	ar := newArchive(t, st, tl, archive.None)
	if _, err := ar.PutSegment(ctx, tli, 3, walBytes(0, segSize), testID); err != nil {
		t.Fatal(err)
	}
	// Segments 1 and 2 are slow to upload (500ms, a slow link); the
	// conflict on segment 3 is found meanwhile.
	slow := map[string]bool{segKey(tl, ar, 1): true, segKey(tl, ar, 2): true}
	st.beforeCreate = func(ctx context.Context, key string) error {
		if !slow[key] {
			return nil
		}
		timer := time.NewTimer(500 * time.Millisecond)
		defer timer.Stop()
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	o := offload.New(fastConfig(4), tl, ar, zap.NewNop(), nil)
	start(t, o)
	waitFor(t, 10*time.Second, "the conflict to be reported", o.Conflicted)
	deadline := time.Now().Add(2 * time.Second)
	for tl.BackupLSN() != 3*segSize {
		if time.Now().After(deadline) {
			t.Fatalf("backup_lsn is %s with segments %v archived; want the start of the conflicting segment 3 (%s)",
				tl.BackupLSN(), archived(t, ar), wal.LSN(3*segSize))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if b := controlBackupLSN(t, tl); b != 3*segSize {
		t.Errorf("control file backup_lsn %s, want %s", b, wal.LSN(3*segSize))
	}
}

// ArchiveStart is the oldest segment in the archive, also one that was
// there before Run; objects already archived are not uploaded again.
func TestArchiveStartAndPreexistingObjects(t *testing.T) {
	ctx := context.Background()
	tl := newTimeline(t, 4, 100)
	st := newHookStore(t)
	ar := newArchive(t, st, tl, archive.None)
	// Segment 0 of timeline 1 (before this timeline's start), segment 1
	// as the offloader would upload it, and the history file.
	if _, err := ar.PutSegment(ctx, 1, 0, walBytes(0, segSize), testID); err != nil {
		t.Fatal(err)
	}
	if _, err := ar.PutSegment(ctx, tli, 1, walBytes(segSize, segSize), testID); err != nil {
		t.Fatal(err)
	}
	if _, err := ar.PutHistory(ctx, tli, history2, testID); err != nil {
		t.Fatal(err)
	}
	histKey := walPrefix(tl) + "00000002.history"
	st.mu.Lock()
	st.creates = map[string]int{}
	st.mu.Unlock()

	o := offload.New(fastConfig(2), tl, ar, zap.NewNop(), nil)
	start(t, o)
	waitFor(t, 10*time.Second, "backup_lsn to reach the end", func() bool { return tl.BackupLSN() == 5*segSize })
	if a, ok := o.ArchiveStart(); !ok || a != 0 {
		t.Errorf("ArchiveStart = %s, %v; want 0/0 (segment 0 was archived before)", a, ok)
	}
	if n := st.createCalls(histKey); n != 0 {
		t.Errorf("history file already archived: %d Create calls, want 0", n)
	}
	s := o.Status()
	if s.UploadedObjects != 3 || s.UploadErrors != 0 {
		t.Errorf("status %+v; want 3 new objects (segments 2..4), no errors", s)
	}
	if got := archived(t, ar); !slices.Equal(got, seq(1, 4)) {
		t.Errorf("archived %v, want 1..4", got)
	}
}

// Run waits for the timeline's first contact and uploads segments as they
// are completed later (woken by the timeline's Changed broadcast).
func TestUploadsSegmentsCompletedLater(t *testing.T) {
	tl := openTimeline(t)
	st := newHookStore(t)
	ar, err := archive.New(st, tl.ID().TenantID, tl.ID().TimelineID, archive.None)
	if err != nil {
		t.Fatal(err)
	}
	o := offload.New(fastConfig(4), tl, ar, zap.NewNop(), nil)
	start(t, o)
	if s := o.Status(); s.State != offload.StateWaiting {
		t.Errorf("state %q before first contact", s.State)
	}
	initialize(t, tl)
	appendWAL(t, tl, 2*segSize+10)
	waitFor(t, 10*time.Second, "segments 1..2", func() bool { return tl.BackupLSN() == 3*segSize })
	waitFor(t, 10*time.Second, "state idle", func() bool { return o.Status().State == offload.StateIdle })
	// Complete segment 3 and two more, in small steps.
	for i := 0; i < 12; i++ {
		appendWAL(t, tl, segSize/4)
	}
	waitFor(t, 10*time.Second, "segments 3..5", func() bool { return tl.BackupLSN() == 6*segSize })
	if got := archived(t, ar); !slices.Equal(got, seq(1, 5)) {
		t.Errorf("archived %v, want 1..5", got)
	}
	if got := controlBackupLSN(t, tl); got != 6*segSize {
		t.Errorf("control file backup_lsn %s", got)
	}
	for segno := uint64(1); segno <= 5; segno++ {
		if n := st.createCalls(segKey(tl, ar, segno)); n != 1 {
			t.Errorf("segment %d: %d Create calls, want 1", segno, n)
		}
	}
}

// dirTimeline is a real timeline whose directory can be made unreadable
// for the offloader (listing history files fails).
type dirTimeline struct {
	*timeline.Timeline
	broken   atomic.Bool
	failures atomic.Int64
}

func (d *dirTimeline) Dir() walstore.Dir {
	if d.broken.Load() {
		d.failures.Add(1)
		return walstore.Dir(filepath.Join(d.Timeline.Dir().Path(), "does-not-exist"))
	}
	return d.Timeline.Dir()
}

// A failure to list the timeline's history files is a failure like any
// other: retried with backoff and reported in the status, not retried in
// a busy loop without a trace.
func TestHistoryListingFailureIsRetriedWithBackoff(t *testing.T) {
	tl := &dirTimeline{Timeline: newTimeline(t, 2, 100)}
	tl.broken.Store(true)
	st := newHookStore(t)
	ar := newArchive(t, st, tl.Timeline, archive.None)
	o := offload.New(fastConfig(4), tl, ar, zap.NewNop(), nil)
	start(t, o)
	// With a 1ms minimum backoff, 2000 attempts take seconds.
	const spin = 2000
	waitFor(t, 10*time.Second, "the failure to be reported or retried in a loop", func() bool {
		return o.Status().LastError != "" || tl.failures.Load() >= spin
	})
	if n := tl.failures.Load(); n >= spin {
		t.Errorf("listing history files failed %d times without backoff", n)
	}
	if s := o.Status(); s.LastError == "" || s.UploadErrors == 0 {
		t.Errorf("status %+v; want the listing failure reported", s)
	}
	tl.broken.Store(false)
	waitFor(t, 10*time.Second, "backup_lsn to reach the end", func() bool { return tl.BackupLSN() == 3*segSize })
}

// backupFailTimeline is a real timeline whose first SetBackupLSN calls
// fail, as when the control file cannot be written for a moment.
type backupFailTimeline struct {
	*timeline.Timeline
	fail  atomic.Int32 // fail this many more calls
	calls atomic.Int32
}

func (b *backupFailTimeline) SetBackupLSN(lsn wal.LSN, tli uint32) error {
	b.calls.Add(1)
	if b.fail.Add(-1) >= 0 {
		return errors.New("persist backup position: injected: no space left on device")
	}
	return b.Timeline.SetBackupLSN(lsn, tli)
}

// A failure to record backup_lsn is retried with the next upload ("Not
// recorded: retention keeps the WAL; try again with the next upload"):
// once recording works again, backup_lsn covers every archived segment.
func TestBackupLSNRecordedAfterTransientFailure(t *testing.T) {
	tl := &backupFailTimeline{Timeline: newTimeline(t, 6, 100)}
	tl.fail.Store(1)
	st := newHookStore(t)
	ar := newArchive(t, st, tl.Timeline, archive.None)
	o := offload.New(fastConfig(1), tl, ar, zap.NewNop(), nil)
	start(t, o)
	waitFor(t, 10*time.Second, "segments 1..6 to be archived", func() bool {
		return slices.Equal(archived(t, ar), seq(1, 6)) && o.Status().UploadedObjects == 7 && o.Status().State == offload.StateIdle
	})
	// One more segment: another upload, another chance to record.
	appendWAL(t, tl.Timeline, segSize)
	waitFor(t, 10*time.Second, "segment 7 to be archived", func() bool {
		return slices.Equal(archived(t, ar), seq(1, 7)) && o.Status().UploadedObjects == 8 && o.Status().State == offload.StateIdle
	})
	deadline := time.Now().Add(2 * time.Second)
	for tl.BackupLSN() != 8*segSize {
		if time.Now().After(deadline) {
			t.Fatalf("backup_lsn stuck at %s after %d SetBackupLSN calls (the first failed) with segments 1..7 archived; want %s",
				tl.BackupLSN(), tl.calls.Load(), wal.LSN(8*segSize))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if b := controlBackupLSN(t, tl.Timeline); b != 8*segSize {
		t.Errorf("control file backup_lsn %s, want %s", b, wal.LSN(8*segSize))
	}
}
