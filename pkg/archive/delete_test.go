package archive_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// fillArchive archives segments under both compressions, history files
// and a few objects the archive does not recognise, and returns every key
// it stored, sorted.
func fillArchive(t *testing.T, st objstore.Store, tenant, timeline string, seed uint64) []string {
	t.Helper()
	ctx := context.Background()
	az, err := archive.New(st, tenant, timeline, archive.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	an, err := archive.New(st, tenant, timeline, archive.None)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range []struct {
		a     *archive.Archive
		tli   uint32
		segno uint64
	}{{az, 1, 1}, {an, 1, 2}, {az, 2, 2}, {an, 2, 3}, {az, 1, 0x100}} {
		r, err := p.a.PutSegment(ctx, p.tli, p.segno, segmentData(seed, p.segno), testID)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, r.Key)
	}
	for _, tli := range []uint32{2, 3} {
		r, err := az.PutHistory(ctx, tli, []byte(fmt.Sprintf("history %d of %s", tli, timeline)), testID)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, r.Key)
	}
	p := archive.WALPrefix(tenant, timeline)
	for _, k := range []string{p + "000000010000000000000009.partial", p + "README", p + "sub/dir/x"} {
		if err := st.Create(ctx, k, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestDeleteAll: the archive goes entirely, in one call, and nothing else
// in the store does: not another timeline of the tenant, not the same
// timeline id under another tenant, not objects of the timeline outside
// its wal/ prefix.
func TestDeleteAll(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	const otherTimeline = "fedcba9876543210fedcba9876543211" // differs in the last digit
	const otherTenant = "0123456789abcdef0123456789abcdee"
	mine := fillArchive(t, st, tenantID, timelineID, 21)
	survivors := fillArchive(t, st, tenantID, otherTimeline, 22)
	survivors = append(survivors, fillArchive(t, st, otherTenant, timelineID, 23)...)
	for _, k := range []string{
		tenantID + "/" + timelineID + "/notes",  // the timeline's, but not its WAL
		tenantID + "/" + timelineID + "/walx/y", // shares the string prefix but for "/"
		tenantID + "/readme",
		"top",
	} {
		if err := st.Create(ctx, k, []byte("keep "+k), nil); err != nil {
			t.Fatal(err)
		}
		survivors = append(survivors, k)
	}
	slices.Sort(survivors)

	a := newArchive(t, st, archive.Zstd)
	n, err := a.DeleteAll(ctx)
	if err != nil || n != len(mine) {
		t.Fatalf("DeleteAll = %d, %v; want %d, nil", n, err, len(mine))
	}
	if got := keys(t, st); !reflect.DeepEqual(got, survivors) {
		t.Fatalf("after DeleteAll the store holds\n%v\nwant\n%v", got, survivors)
	}
	segs, hists, others, err := a.List(ctx, segSize)
	if err != nil || len(segs)+len(hists)+len(others) != 0 {
		t.Fatalf("List after DeleteAll: %v %v %v %v", segs, hists, others, err)
	}
	if _, err := a.GetSegment(ctx, 1, 1, testID); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("GetSegment after DeleteAll: %v, want ErrNotFound", err)
	}
	if _, err := a.GetHistory(ctx, 2, testID); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("GetHistory after DeleteAll: %v, want ErrNotFound", err)
	}
	// The other timeline's WAL still reads back and verifies.
	other, err := archive.New(st, tenantID, otherTimeline, archive.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	for segno := uint64(1); segno <= 2; segno++ {
		if got, err := other.GetSegment(ctx, 1, segno, testID); err != nil || sha(got) != sha(segmentData(22, segno)) {
			t.Fatalf("other timeline's segment %d after DeleteAll: %v", segno, err)
		}
	}
	if _, err := other.GetHistory(ctx, 3, testID); err != nil {
		t.Fatalf("other timeline's history after DeleteAll: %v", err)
	}

	// Again: nothing left, nothing to do.
	if n, err := a.DeleteAll(ctx); err != nil || n != 0 {
		t.Fatalf("second DeleteAll = %d, %v; want 0, nil", n, err)
	}
	// The timeline can be archived afresh (other content under the same
	// names is no conflict any more).
	if _, err := a.PutSegment(ctx, 1, 1, segmentData(24, 1), testID); err != nil {
		t.Fatalf("PutSegment after DeleteAll: %v", err)
	}
	if got, err := a.GetSegment(ctx, 1, 1, testID); err != nil || sha(got) != sha(segmentData(24, 1)) {
		t.Fatalf("GetSegment of the re-archived segment: %v", err)
	}
}

// TestDeleteAllEmpty: an archive that never held anything, in a store
// whose root does not exist yet, deletes nothing without error.
func TestDeleteAllEmpty(t *testing.T) {
	st, err := objstore.Open(context.Background(), "file://"+t.TempDir()+"/not/yet", objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := newArchive(t, st, archive.Zstd).DeleteAll(context.Background()); err != nil || n != 0 {
		t.Fatalf("DeleteAll of an empty archive = %d, %v", n, err)
	}
}

var errInjected = errors.New("injected delete failure")

// deleteStore records Delete calls and fails the one numbered failAt
// (from 1; 0: none). listExtra is added to every List answer.
type deleteStore struct {
	objstore.Store
	mu        sync.Mutex
	deletes   []string
	failAt    int
	listExtra []objstore.Info
}

func (s *deleteStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	s.deletes = append(s.deletes, key)
	fail := len(s.deletes) == s.failAt
	s.mu.Unlock()
	if fail {
		return fmt.Errorf("delete %s: %w", key, errInjected)
	}
	return s.Store.Delete(ctx, key)
}

func (s *deleteStore) List(ctx context.Context, prefix string) ([]objstore.Info, error) {
	infos, err := s.Store.List(ctx, prefix)
	return append(infos, s.listExtra...), err
}

// TestDeleteAllStopsAtFirstError: objects go in key order; the first
// failure ends the call, which says how many went, and the rest are still
// there for a retry to finish.
func TestDeleteAllStopsAtFirstError(t *testing.T) {
	ctx := context.Background()
	fs, _ := newStore(t)
	mine := fillArchive(t, fs, tenantID, timelineID, 25)
	st := &deleteStore{Store: fs, failAt: 4}
	a := newArchive(t, st, archive.Zstd)

	n, err := a.DeleteAll(ctx)
	if !errors.Is(err, errInjected) || n != 3 {
		t.Fatalf("DeleteAll = %d, %v; want 3 and the injected error", n, err)
	}
	if !reflect.DeepEqual(st.deletes, mine[:4]) {
		t.Fatalf("Delete calls %v\nwant (key order, stopping at the failure) %v", st.deletes, mine[:4])
	}
	if got := keys(t, fs); !reflect.DeepEqual(got, mine[3:]) {
		t.Fatalf("after the failure the store holds %v, want %v", got, mine[3:])
	}

	st.failAt = 0
	st.deletes = nil
	if n, err := a.DeleteAll(ctx); err != nil || n != len(mine)-3 {
		t.Fatalf("retried DeleteAll = %d, %v; want %d, nil", n, err, len(mine)-3)
	}
	if !reflect.DeepEqual(st.deletes, mine[3:]) {
		t.Fatalf("retry's Delete calls %v, want %v", st.deletes, mine[3:])
	}
	if got := keys(t, fs); len(got) != 0 {
		t.Fatalf("after the retry the store holds %v", got)
	}
}

// TestDeleteAllNeverOutside: a store whose List answers with a key
// outside the archive makes DeleteAll refuse before deleting anything,
// and a canceled context deletes nothing either.
func TestDeleteAllNeverOutside(t *testing.T) {
	ctx := context.Background()
	fs, _ := newStore(t)
	mine := fillArchive(t, fs, tenantID, timelineID, 26)
	otherKey := archive.WALPrefix(tenantID, "fedcba9876543210fedcba9876543211") + wal.SegmentFileName(1, 1, segSize)
	if err := fs.Create(ctx, otherKey, []byte("other timeline"), nil); err != nil {
		t.Fatal(err)
	}
	st := &deleteStore{Store: fs, listExtra: []objstore.Info{{Key: otherKey}}}
	a := newArchive(t, st, archive.Zstd)
	if n, err := a.DeleteAll(ctx); err == nil || n != 0 || len(st.deletes) != 0 {
		t.Fatalf("DeleteAll with a bad listing = %d, %v after %d Delete calls; want a refusal before any", n, err, len(st.deletes))
	}
	want := append(slices.Clone(mine), otherKey)
	slices.Sort(want)
	if got := keys(t, fs); !reflect.DeepEqual(got, want) {
		t.Fatalf("store holds %v, want %v", got, want)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if n, err := newArchive(t, fs, archive.Zstd).DeleteAll(canceled); !errors.Is(err, context.Canceled) || n != 0 {
		t.Fatalf("DeleteAll with a canceled context = %d, %v", n, err)
	}
	if got := keys(t, fs); !reflect.DeepEqual(got, want) {
		t.Fatalf("a canceled DeleteAll deleted something: %v", got)
	}
}
