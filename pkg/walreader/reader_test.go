package walreader_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
)

const (
	segSize  = 1 << 20
	systemID = 4242
	tli      = 1
	partial  = 5000
)

var testID = archive.Identity{SystemID: systemID, SegSize: segSize}

// walBytes returns the n bytes the tests write at from.
func walBytes(from wal.LSN, n int) []byte { return waltest.Pattern(from, n) }

// tiers is a real timeline holding segments 1..segs complete and partial
// bytes of the next one, of which segments 1..archivedTo are archived and
// the local files start at localFrom.
type tiers struct {
	tl    *timeline.Timeline
	ar    *archive.Archive
	st    objstore.Store
	flush wal.LSN
}

func newTiers(t *testing.T, segs, archivedTo, localFrom uint64, c archive.Compression) *tiers {
	t.Helper()
	ctx := context.Background()
	id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tl, err := timeline.Open(filepath.Join(t.TempDir(), id.TenantID, id.TimelineID), id, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	if err := tl.Initialize(timeline.UpstreamInfo{SystemID: systemID, WalSegSize: segSize, TLI: tli}, segSize); err != nil {
		t.Fatal(err)
	}
	flushLSN := wal.LSN((segs+1)*segSize + partial)
	for pos := wal.LSN(segSize); pos < flushLSN; {
		n := min(segSize, int(flushLSN-pos))
		if err := tl.Append(pos, walBytes(pos, n)); err != nil {
			t.Fatal(err)
		}
		pos += wal.LSN(n)
	}
	if _, err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
	tl.WaitRefolds() // the tests evict and inspect the page cache
	st, err := objstore.Open(ctx, "file://"+t.TempDir(), objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := archive.New(st, id.TenantID, id.TimelineID, c)
	if err != nil {
		t.Fatal(err)
	}
	for segno := uint64(1); segno <= archivedTo; segno++ {
		if _, err := ar.PutSegment(ctx, tli, segno, walBytes(wal.LSN(segno*segSize), segSize), testID); err != nil {
			t.Fatal(err)
		}
	}
	if err := tl.SetBackupLSN(wal.LSN((archivedTo+1)*segSize), tli); err != nil {
		t.Fatal(err)
	}
	if _, err := tl.RemoveBefore(wal.LSN(localFrom * segSize)); err != nil {
		t.Fatal(err)
	}
	if got := tl.LocalStartLSN(); got != wal.LSN(localFrom*segSize) {
		t.Fatalf("local start %s", got)
	}
	return &tiers{tl: tl, ar: ar, st: st, flush: flushLSN}
}

// recArchive is the real archive with GetSegment calls recorded, and
// optionally held until released (or their context ends).
type recArchive struct {
	ar *archive.Archive

	mu       sync.Mutex
	started  []uint64
	finished map[uint64]error
	hold     map[uint64]chan struct{}
}

func newRec(ar *archive.Archive) *recArchive {
	return &recArchive{ar: ar, finished: map[uint64]error{}, hold: map[uint64]chan struct{}{}}
}

func (r *recArchive) GetSegment(ctx context.Context, tli uint32, segno uint64, id archive.Identity) ([]byte, error) {
	r.mu.Lock()
	r.started = append(r.started, segno)
	hold := r.hold[segno]
	r.mu.Unlock()
	var (
		data []byte
		err  error
	)
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err == nil {
		data, err = r.ar.GetSegment(ctx, tli, segno, id)
	}
	r.mu.Lock()
	r.finished[segno] = err
	r.mu.Unlock()
	return data, err
}

func (r *recArchive) calls() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64{}, r.started...)
}

func (r *recArchive) count(segno uint64) int {
	n := 0
	for _, s := range r.calls() {
		if s == segno {
			n++
		}
	}
	return n
}

func (r *recArchive) done(segno uint64) (error, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	err, ok := r.finished[segno]
	return err, ok
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

func (tr *tiers) reader(a walreader.Archive) (*walreader.Reader, *walreader.ArchiveTier) {
	at := walreader.NewArchiveTier(a, testID, tr.tl.LocalStartLSN)
	return walreader.New(segSize, walreader.NewLocalTier(tr.tl.Dir(), segSize), at), at
}

// readRange reads [from, to) in chunks of chunk bytes, as a sender does.
func readRange(t *testing.T, rd *walreader.Reader, from, to wal.LSN, chunk int) []byte {
	t.Helper()
	out := make([]byte, 0, int(to-from))
	buf := make([]byte, chunk)
	for lsn := from; lsn < to; {
		want := min(len(buf), int(to-lsn))
		n, err := rd.ReadAt(context.Background(), buf[:want], tli, lsn)
		if err != nil {
			t.Fatalf("ReadAt(%s, %d bytes): %d, %v", lsn, want, n, err)
		}
		if n == 0 {
			t.Fatalf("ReadAt(%s) read nothing", lsn)
		}
		if room := segSize - wal.SegmentOffset(lsn, segSize); n < want && uint64(n) != room {
			t.Fatalf("ReadAt(%s) read %d of %d bytes, not up to the segment end", lsn, n, want)
		}
		out = append(out, buf[:n]...)
		lsn += wal.LSN(n)
	}
	return out
}

// A read that starts in segments only the archive holds continues into
// local segments with exactly the bytes that were written.
func TestReadAcrossArchiveAndLocal(t *testing.T) {
	for _, c := range []archive.Compression{archive.None, archive.Zstd} {
		t.Run(string(c), func(t *testing.T) {
			tr := newTiers(t, 4, 3, 3, c) // archive: 1..3, local: 3..5 (partial)
			rec := newRec(tr.ar)
			rd, _ := tr.reader(rec)
			defer rd.Close()
			from, to := wal.LSN(segSize+1000), tr.flush
			got := readRange(t, rd, from, to, 100_003)
			if want := walBytes(from, int(to-from)); !bytes.Equal(got, want) {
				i := 0
				for i < len(got) && got[i] == want[i] {
					i++
				}
				t.Fatalf("read %d bytes, want %d; first difference at %s", len(got), len(want), from+wal.LSN(i))
			}
			// Segments 1..2 came from the archive, each fetched once;
			// segment 3 was read locally, never fetched.
			if calls := rec.calls(); !slices.Equal(calls, []uint64{1, 2}) {
				t.Errorf("archive fetches %v, want [1 2]", calls)
			}
		})
	}
}

func TestReadUnavailable(t *testing.T) {
	tr := newTiers(t, 4, 2, 4, archive.None) // archive 1..2, local 4..5: segment 3 nowhere
	rd, _ := tr.reader(tr.ar)
	defer rd.Close()
	buf := make([]byte, 100)
	for _, tc := range []struct {
		tli uint32
		lsn wal.LSN
	}{
		{tli, 3*segSize + 17},      // a hole between the tiers
		{tli, 100},                 // before anything held
		{tli, 0x1_0000_0000 + 512}, // far ahead, other log id
		{2, 4 * segSize},           // held locally, but for another TLI
	} {
		n, err := rd.ReadAt(context.Background(), buf, tc.tli, tc.lsn)
		if !errors.Is(err, walreader.ErrUnavailable) {
			t.Fatalf("ReadAt(%d, %s) = %d, %v; want ErrUnavailable", tc.tli, tc.lsn, n, err)
		}
		pe := pgerr.As(err)
		name := wal.SegmentFileName(tc.tli, wal.SegmentNo(tc.lsn, segSize), segSize)
		if pe == nil || pe.Code != "58P01" || pe.Message != "requested WAL segment "+name+" has already been removed" {
			t.Fatalf("ReadAt(%d, %s): PostgreSQL error %+v", tc.tli, tc.lsn, pe)
		}
	}
	// The neighbours are readable.
	for _, lsn := range []wal.LSN{2*segSize - 100, 4 * segSize} {
		n, err := rd.ReadAt(context.Background(), buf, tli, lsn)
		if err != nil || n != 100 || !bytes.Equal(buf, walBytes(lsn, 100)) {
			t.Fatalf("ReadAt(%s) = %d, %v", lsn, n, err)
		}
	}
}

// A corrupt archived segment is an error of its own, not "removed".
func TestReadCorruptArchivedSegment(t *testing.T) {
	tr := newTiers(t, 2, 0, 2, archive.None)
	name := wal.SegmentFileName(tli, 1, segSize)
	ctl := tr.tl.Control()
	key := archive.WALPrefix(ctl.TenantID, ctl.TimelineID) + name
	data := walBytes(segSize, segSize)
	data[100] ^= 0xff
	meta := map[string]string{
		archive.MetaSHA256: "00", archive.MetaSize: strconv.Itoa(segSize), archive.MetaSegSize: strconv.Itoa(segSize),
		archive.MetaSystemID: strconv.Itoa(systemID), archive.MetaCompression: "none",
	}
	if err := tr.st.Create(context.Background(), key, data, meta); err != nil {
		t.Fatal(err)
	}
	rd, _ := tr.reader(tr.ar)
	defer rd.Close()
	_, err := rd.ReadAt(context.Background(), make([]byte, 10), tli, segSize)
	if !errors.Is(err, archive.ErrCorrupt) || errors.Is(err, walreader.ErrUnavailable) {
		t.Fatalf("ReadAt of a corrupt archived segment: %v; want ErrCorrupt", err)
	}
}

// After segment N is read from the archive, N+1 is fetched in the
// background, and reading it waits for that fetch instead of starting
// another. The segment at the local start is not prefetched.
func TestPrefetchNextSegment(t *testing.T) {
	tr := newTiers(t, 3, 3, 3, archive.None) // archive 1..3, local 3..4
	rec := newRec(tr.ar)
	release := make(chan struct{})
	rec.hold[2] = release
	rd, _ := tr.reader(rec)
	defer rd.Close()

	got := readRange(t, rd, segSize, segSize+4096, 4096)
	if !bytes.Equal(got, walBytes(segSize, 4096)) {
		t.Fatal("segment 1 content differs")
	}
	// Segment 2 is being fetched while nobody reads it.
	waitFor(t, "the prefetch of segment 2 to start", func() bool { return rec.count(2) == 1 })
	if _, finished := rec.done(2); finished {
		t.Fatal("held fetch of segment 2 finished")
	}
	// The rest of segment 1 comes from memory, no fetch.
	got = readRange(t, rd, segSize+4096, 2*segSize, 65536)
	if !bytes.Equal(got, walBytes(segSize+4096, segSize-4096)) {
		t.Fatal("segment 1 content differs")
	}
	if calls := rec.calls(); !slices.Equal(calls, []uint64{1, 2}) {
		t.Fatalf("archive fetches %v while reading segment 1, want [1 2]", calls)
	}
	close(release)
	got = readRange(t, rd, 2*segSize, 4*segSize, 200_000)
	if !bytes.Equal(got, walBytes(2*segSize, 2*segSize)) {
		t.Fatal("segments 2..3 content differ")
	}
	// One fetch of segment 2 (the prefetch); segment 3 is local.
	if calls := rec.calls(); !slices.Equal(calls, []uint64{1, 2}) {
		t.Fatalf("archive fetches %v, want [1 2]", calls)
	}
}

// Close stops a prefetch in flight.
func TestCloseStopsPrefetch(t *testing.T) {
	tr := newTiers(t, 3, 3, 3, archive.None)
	rec := newRec(tr.ar)
	rec.hold[2] = make(chan struct{}) // never released
	rd, _ := tr.reader(rec)
	if _, err := rd.ReadAt(context.Background(), make([]byte, 10), tli, segSize); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the prefetch of segment 2 to start", func() bool { return rec.count(2) == 1 })
	if err := rd.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the prefetch to end after Close", func() bool { _, ok := rec.done(2); return ok })
	if err, _ := rec.done(2); !errors.Is(err, context.Canceled) {
		t.Fatalf("prefetch ended with %v, want context.Canceled", err)
	}
}
