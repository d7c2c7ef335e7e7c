package manager

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/supervisor"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
)

// newManager returns a started manager over dir whose opener fails while
// failures > 0 (decrementing it).
func newManager(t *testing.T, dir string, failures *atomic.Int32) (*Manager, *supervisor.Registry) {
	t.Helper()
	m := metrics.New(nil)
	open := func(def Definition, tlDir string) (*supervisor.Supervisor, error) {
		if failures != nil && failures.Add(-1) >= 0 {
			return nil, errors.New("injected open failure")
		}
		return supervisor.Open(supervisor.Config{Dir: tlDir, ID: def.ID(), NodeName: "test"}, zap.NewNop(), m)
	}
	reg := supervisor.NewRegistry()
	mgr := New(Config{DataDir: dir, Open: open, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, reg, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	defs, err := mgr.Scan()
	if err != nil {
		t.Fatal(err)
	}
	mgr.Start(ctx, defs, nil)
	t.Cleanup(func() { cancel(); mgr.Stop() })
	return mgr, reg
}

func waitState(t *testing.T, mgr *Manager, id timeline.ID, state string) Info {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, ok := mgr.Get(id)
		if ok && info.State == state {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("timeline %s: state %q (%v), want %q", id, info.State, ok, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newID() timeline.ID {
	return timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
}

func TestLifecycle(t *testing.T) {
	dir := t.TempDir()
	mgr, reg := newManager(t, dir, nil)
	a, b := newID(), newID()
	for _, id := range []timeline.ID{a, b} {
		if _, err := mgr.Create(Definition{TenantID: id.TenantID, TimelineID: id.TimelineID}); err != nil {
			t.Fatal(err)
		}
		waitState(t, mgr, id, StateActive)
	}
	if _, err := mgr.Create(Definition{TenantID: a.TenantID, TimelineID: a.TimelineID}); !errors.Is(err, ErrExists) {
		t.Fatalf("create again: %v", err)
	}
	if _, err := mgr.Create(Definition{TenantID: "zz", TimelineID: a.TimelineID}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad tenant id: %v", err)
	}
	if _, err := mgr.Create(Definition{TenantID: newID().TenantID, TimelineID: a.TimelineID, Upstream: &Upstream{ConnInfo: "host=x", StartLSN: "nope"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad start LSN: %v", err)
	}
	if n := len(mgr.List("")); n != 2 {
		t.Fatalf("List: %d timelines", n)
	}
	if l := mgr.List(a.TenantID); len(l) != 1 || l[0].Definition.ID() != a {
		t.Fatalf("List(tenant): %+v", l)
	}

	// Detach keeps the data and unpublishes; Create attaches it again.
	if _, err := mgr.Detach(a); err != nil {
		t.Fatal(err)
	}
	waitState(t, mgr, a, StateDetached)
	if _, ok := reg.Get(a); ok {
		t.Fatal("a detached timeline is still published")
	}
	if d, ok, err := readDefinition(mgr.Dir(a)); err != nil || !ok || !d.Detached {
		t.Fatalf("definition after detach: %+v %v %v", d, ok, err)
	}
	if _, err := mgr.Create(Definition{TenantID: a.TenantID, TimelineID: a.TimelineID}); err != nil {
		t.Fatalf("attach: %v", err)
	}
	waitState(t, mgr, a, StateActive)

	// A new upstream is persisted, and redacted in answers.
	info, err := mgr.SetUpstream(b, &Upstream{ConnInfo: "host=pg password=secret user=r", Slot: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Definition.Upstream.ConnInfo; got != "host=pg password=xxxxx user=r" {
		t.Fatalf("redacted conninfo %q", got)
	}
	if d, _, _ := readDefinition(mgr.Dir(b)); d.Upstream == nil || d.Upstream.ConnInfo != "host=pg password=secret user=r" {
		t.Fatalf("stored definition: %+v", d.Upstream)
	}

	// Delete removes the directory; the other timeline is untouched.
	if err := mgr.Delete(context.Background(), a, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mgr.Dir(a)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted directory: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(mgr.Dir(a))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty tenant directory left: %v", err)
	}
	if err := mgr.Delete(context.Background(), a, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
	if err := mgr.Delete(context.Background(), b, true); !errors.Is(err, ErrInvalid) {
		t.Fatalf("delete with archive, none configured: %v", err)
	}

	// A second manager over the same directory finds what is left.
	defs, err := mgr.Scan()
	if err != nil || len(defs) != 1 || defs[0].ID() != b || defs[0].Upstream == nil {
		t.Fatalf("Scan: %+v %v", defs, err)
	}
}

// A timeline that fails to open is retried alone until it opens.
func TestFailedTimelineIsRetried(t *testing.T) {
	var failures atomic.Int32
	mgr, reg := newManager(t, t.TempDir(), &failures)
	ok := newID()
	if _, err := mgr.Create(Definition{TenantID: ok.TenantID, TimelineID: ok.TimelineID}); err != nil {
		t.Fatal(err)
	}
	waitState(t, mgr, ok, StateActive)
	failures.Store(3)
	bad := newID()
	if _, err := mgr.Create(Definition{TenantID: bad.TenantID, TimelineID: bad.TimelineID}); err != nil {
		t.Fatal(err)
	}
	info := waitState(t, mgr, bad, StateFailed)
	if info.Error != "injected open failure" {
		t.Fatalf("error %q", info.Error)
	}
	if _, ok := reg.Get(ok); !ok {
		t.Fatal("the healthy timeline was unpublished")
	}
	waitState(t, mgr, bad, StateActive)
}

func TestRedactConnInfo(t *testing.T) {
	for in, want := range map[string]string{
		"host=a password=s3cret user=u":           "host=a password=xxxxx user=u",
		"host=a password='s e c' user=u":          "host=a password=xxxxx user=u",
		"postgres://u:s3cret@h:5432/db?sslmode=x": "postgres://u:xxxxx@h:5432/db?sslmode=x",
		"postgresql://u@h/db?password=s3cret":     "postgresql://u@h/db?password=xxxxx",
		"host=a user=u":                           "host=a user=u",
	} {
		if got := RedactConnInfo(in); got != want {
			t.Errorf("RedactConnInfo(%q) = %q, want %q", in, got, want)
		}
	}
}
