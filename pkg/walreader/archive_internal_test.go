package walreader

import (
	"context"
	"sync"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// countingArchive counts GetSegment calls per segment.
type countingArchive struct {
	ar *archive.Archive
	mu sync.Mutex
	n  map[uint64]int
}

func (c *countingArchive) GetSegment(ctx context.Context, tli uint32, segno uint64, id archive.Identity) ([]byte, error) {
	c.mu.Lock()
	c.n[segno]++
	c.mu.Unlock()
	return c.ar.GetSegment(ctx, tli, segno, id)
}

// The tier prefetches segment N+1 exactly when it lies below the local
// start: the decision is made inside ReadAt, so it is checked right after.
func TestPrefetchOnlyBelowLocalStart(t *testing.T) {
	const segSize = 1 << 20
	ctx := context.Background()
	id := archive.Identity{SystemID: 5, SegSize: segSize}
	st, err := objstore.Open(ctx, "file://"+t.TempDir(), objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := archive.New(st, "tenant", "timeline", archive.None)
	if err != nil {
		t.Fatal(err)
	}
	for segno := uint64(1); segno <= 4; segno++ {
		data := make([]byte, segSize)
		data[0] = byte(segno)
		if _, err := ar.PutSegment(ctx, 1, segno, data, id); err != nil {
			t.Fatal(err)
		}
	}
	var localStart wal.LSN = 3 * segSize
	ca := &countingArchive{ar: ar, n: map[uint64]int{}}
	at := NewArchiveTier(ca, id, func() wal.LSN { return localStart })
	defer at.Close()
	p := make([]byte, 1)

	if n, err := at.ReadAt(context.Background(), p, 1, segSize); err != nil || n != 1 || p[0] != 1 {
		t.Fatalf("ReadAt(segment 1) = %d, %v, %v", n, err, p)
	}
	if at.pf == nil || at.pf.segno != 2 {
		t.Fatalf("after reading segment 1 (local start %s): prefetch %+v, want segment 2", localStart, at.pf)
	}
	if n, err := at.ReadAt(context.Background(), p, 1, 2*segSize); err != nil || n != 1 || p[0] != 2 {
		t.Fatalf("ReadAt(segment 2) = %d, %v, %v", n, err, p)
	}
	if at.pf != nil {
		t.Fatalf("segment 3 is at the local start (%s) but was prefetched", localStart)
	}
	// The local start moves on (retention): segment 3 is archive-only now,
	// and reading it prefetches nothing at/after the new start either.
	localStart = 4 * segSize
	if n, err := at.ReadAt(context.Background(), p, 1, 3*segSize); err != nil || n != 1 || p[0] != 3 {
		t.Fatalf("ReadAt(segment 3) = %d, %v, %v", n, err, p)
	}
	if at.pf != nil {
		t.Fatalf("segment 4 is at the local start (%s) but was prefetched", localStart)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.n[1] != 1 || ca.n[2] != 1 || ca.n[3] != 1 || ca.n[4] != 0 {
		t.Fatalf("GetSegment calls per segment %v, want one each for 1..3", ca.n)
	}
}

// blockingArchive never answers until its context ends.
type blockingArchive struct{ started chan struct{} }

func (b *blockingArchive) GetSegment(ctx context.Context, tli uint32, segno uint64, id archive.Identity) ([]byte, error) {
	select {
	case b.started <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// A read waiting on the archive ends with the caller's context (a
// shutdown, a consumer that left), not after the fetch timeout.
func TestArchiveReadHonoursContext(t *testing.T) {
	id := archive.Identity{SystemID: 5, SegSize: 1 << 20}
	b := &blockingArchive{started: make(chan struct{}, 1)}
	at := NewArchiveTier(b, id, func() wal.LSN { return 10 << 20 })
	defer at.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := at.ReadAt(ctx, make([]byte, 8), 1, 1<<20)
		errc <- err
	}()
	<-b.started
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Fatalf("ReadAt after cancel = %v, want context.Canceled", err)
	}
}

// When the local files take over, the reader tells the archive tier to
// drop the segment it holds.
func TestReleaseWhenLocalTakesOver(t *testing.T) {
	const segSize = 1 << 20
	ctx := context.Background()
	id := archive.Identity{SystemID: 5, SegSize: segSize}
	st, err := objstore.Open(ctx, "file://"+t.TempDir(), objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := archive.New(st, "tenant", "timeline", archive.None)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ar.PutSegment(ctx, 1, 1, make([]byte, segSize), id); err != nil {
		t.Fatal(err)
	}
	at := NewArchiveTier(ar, id, func() wal.LSN { return 2 * segSize })
	local := &fixedTier{from: 2 * segSize}
	rd := New(segSize, local, at)
	defer rd.Close()
	if _, err := rd.ReadAt(ctx, make([]byte, 8), 1, segSize); err != nil {
		t.Fatal(err)
	}
	if at.cur == nil {
		t.Fatal("the archive tier holds no segment after serving a read")
	}
	if _, err := rd.ReadAt(ctx, make([]byte, 8), 1, 2*segSize); err != nil {
		t.Fatal(err)
	}
	if at.cur != nil || at.pf != nil {
		t.Fatal("the archive tier still holds segments after the local tier took over")
	}
}

// fixedTier holds every position from from on (zeros).
type fixedTier struct{ from wal.LSN }

func (f *fixedTier) ReadAt(_ context.Context, p []byte, _ uint32, lsn wal.LSN) (int, error) {
	if lsn < f.from {
		return 0, ErrNotInTier
	}
	clear(p)
	return len(p), nil
}

func (f *fixedTier) Close() error { return nil }
