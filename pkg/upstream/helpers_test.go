package upstream

import (
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// newTestTimeline opens a timeline in a temporary directory, initialized
// as system 7 on TLI 1 with segments of seg bytes and its WAL starting at
// the second segment (LSN seg). The caller closes it.
func newTestTimeline(tb testing.TB, seg uint64) *timeline.Timeline {
	tb.Helper()
	id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tl, err := timeline.Open(filepath.Join(tb.TempDir(), id.TenantID, id.TimelineID), id, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	if err := tl.Initialize(timeline.UpstreamInfo{SystemID: 7, WalSegSize: seg, TLI: 1}, wal.LSN(seg)); err != nil {
		tl.Close()
		tb.Fatal(err)
	}
	return tl
}
