package walverify

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
)

const (
	segSize  = 1 << 20
	tenant   = "0123456789abcdef0123456789abcdef"
	timeline = "fedcba9876543210fedcba9876543210"
)

func TestVerify(t *testing.T) {
	ctx := context.Background()
	store, err := objstore.Open(ctx, "file://"+t.TempDir(), objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := archive.New(store, tenant, timeline, archive.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	id := archive.Identity{SystemID: 11, SegSize: segSize}
	seg := bytes.Repeat([]byte{7}, segSize)
	// Timeline 1: segments 2, 3, 7 (4..6 missing); timeline 2: 8, 9 with
	// no history file, 10 from another cluster, and 11 of another segment
	// size (segment 11 of 2 MB has the name of segment 11 of 1 MB).
	for _, s := range []struct {
		tli   uint32
		segno uint64
	}{{1, 2}, {1, 3}, {1, 7}, {2, 8}, {2, 9}} {
		if _, err := ar.PutSegment(ctx, s.tli, s.segno, seg, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ar.PutSegment(ctx, 2, 10, seg, archive.Identity{SystemID: 12, SegSize: segSize}); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{7}, 2*segSize)
	if _, err := ar.PutSegment(ctx, 2, 11, big, archive.Identity{SystemID: 11, SegSize: 2 * segSize}); err != nil {
		t.Fatal(err)
	}
	if _, err := ar.PutHistory(ctx, 3, []byte("garbage\n"), id); err != nil {
		t.Fatal(err)
	}

	r, err := Verify(ctx, store, tenant, timeline, Options{Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	r.Write(&out)
	t.Log("\n" + out.String())
	if r.SystemID != 11 || r.SegSize != segSize || r.Segments != 7 || r.First != "000000010000000000000002" || r.Last != "00000002000000000000000B" {
		t.Errorf("summary %+v", r)
	}
	if len(r.Gaps) != 1 || r.Gaps[0] != (Gap{From: 4, To: 6, TLI: 1}) {
		t.Errorf("gaps %+v", r.Gaps)
	}
	if len(r.MissingHistory) != 1 || r.MissingHistory[0] != 2 {
		t.Errorf("missing history %v", r.MissingHistory)
	}
	failed := map[string]bool{}
	for _, f := range r.Failed {
		if !errors.Is(f.Err, archive.ErrCorrupt) {
			t.Errorf("%s: %v", f.Key, f.Err)
		}
		failed[f.Key[strings.LastIndex(f.Key, "/")+1:]] = true
	}
	if !failed["00000002000000000000000A.zst"] || !failed["00000002000000000000000B.zst"] || !failed["00000003.history"] || len(r.Failed) != 3 {
		t.Errorf("failed %v", r.Failed)
	}
	if !strings.Contains(out.String(), "missing 000000010000000000000004 .. 000000010000000000000006 (3 segments, WAL 0/400000 .. 0/700000)") {
		t.Error("gap not described")
	}
}
