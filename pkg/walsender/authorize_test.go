package walsender

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zaptest"

	"github.com/pgsafekeeper/safekeeper/pkg/auth"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// fakeTimeline answers Control, all that a connection's startup asks.
type fakeTimeline struct {
	Timeline // nil: any other call panics
	ctl      walstore.Control
}

func (f fakeTimeline) Control() walstore.Control { return f.ctl }

// fakeResolver hosts the given timelines and counts lookups.
type fakeResolver struct {
	mu      sync.Mutex
	tls     map[timeline.ID]Target
	lookups atomic.Int32
}

func newFakeResolver(ids ...timeline.ID) *fakeResolver {
	r := &fakeResolver{tls: map[timeline.ID]Target{}}
	for _, id := range ids {
		r.tls[id] = Target{WAL: fakeTimeline{ctl: walstore.Control{TenantID: id.TenantID, TimelineID: id.TimelineID, ServerVersion: "16.4"}}}
	}
	return r
}

func (r *fakeResolver) Lookup(id timeline.ID) (Target, bool) {
	r.lookups.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tls[id]
	return t, ok
}

func (r *fakeResolver) Only() (Target, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tls) != 1 {
		return Target{}, false
	}
	for _, t := range r.tls {
		return t, true
	}
	return Target{}, false
}

func (r *fakeResolver) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.tls)
}

// startAuthServer serves reg on loopback with cfg; it returns host=... port=...
func startAuthServer(t *testing.T, cfg Config, reg Resolver) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := New(cfg, reg, zaptest.NewLogger(t), metrics.New(nil))
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	})
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	return fmt.Sprintf("host=%s port=%s sslmode=disable", host, port)
}

func connectRepl(t *testing.T, conn string) error {
	t.Helper()
	cfg, err := pgconn.ParseConfig(conn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "true"
	cfg.ConnectTimeout = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err == nil {
		c.Close(ctx)
	}
	return err
}

func wantFatal(t *testing.T, err error, code, msg string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != code || pe.Message != msg {
		t.Fatalf("got %v, want FATAL %s %q", err, code, msg)
	}
	return pe
}

func token(t *testing.T, key ed25519.PrivateKey, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// opts names id in the startup options, with one -c per setting.
func opts(id timeline.ID) string {
	return fmt.Sprintf(" options='-c tenant_id=%s -c timeline_id=%s'", id.TenantID, id.TimelineID)
}

// A tenant token reaches its tenant's timelines only, and is refused for
// any other tenant before the lookup: it learns neither whether the other
// tenant's timeline exists nor, without options, the hosted tenant's id.
func TestTokenAuthorization(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewTokenVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{Tokens: v, MockSecret: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	mine := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	theirs := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	missing := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	tenantTok := token(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": mine.TenantID})
	allTok := token(t, priv, jwt.MapClaims{"scope": "safekeeperdata"})
	adminTok := token(t, priv, jwt.MapClaims{"scope": "admin"})

	reg := newFakeResolver(mine, theirs)
	base := startAuthServer(t, Config{Auth: a}, reg) + " user=compute"

	// Its own tenant, in either spelling of the options.
	if err := connectRepl(t, base+" password="+tenantTok+opts(mine)); err != nil {
		t.Fatalf("own tenant: %v", err)
	}
	if err := connectRepl(t, base+" password="+tenantTok+fmt.Sprintf(" options='-c ztenantid=%s -c ztimelineid=%s'", strings.ToUpper(mine.TenantID), mine.TimelineID)); err != nil {
		t.Fatalf("own tenant, legacy option names: %v", err)
	}
	// Its own tenant, a timeline not hosted: that it may learn.
	wantFatal(t, connectRepl(t, base+" password="+tenantTok+opts(timeline.ID{TenantID: mine.TenantID, TimelineID: missing.TimelineID})),
		"3D000", fmt.Sprintf("timeline %s/%s does not exist", mine.TenantID, missing.TimelineID))

	// Another tenant, hosted or not: the same refusal, and no lookup.
	before := reg.lookups.Load()
	for _, id := range []timeline.ID{theirs, missing} {
		wantFatal(t, connectRepl(t, base+" password="+tenantTok+opts(id)), "28000", "permission denied for tenant "+id.TenantID)
		wantFatal(t, connectRepl(t, base+" password="+adminTok+opts(id)), "28000", "permission denied for tenant "+id.TenantID)
	}
	if n := reg.lookups.Load() - before; n != 0 {
		t.Fatalf("%d lookups for refused tenants", n)
	}

	// safekeeperdata reaches every tenant; a missing one does not exist.
	for _, id := range []timeline.ID{mine, theirs} {
		if err := connectRepl(t, base+" password="+allTok+opts(id)); err != nil {
			t.Fatalf("safekeeperdata for %s: %v", id, err)
		}
	}
	wantFatal(t, connectRepl(t, base+" password="+allTok+opts(missing)), "3D000", fmt.Sprintf("timeline %s does not exist", missing))

	// Without options, a single hosted timeline of another tenant is
	// refused without naming its tenant; one of the token's own is served.
	only := startAuthServer(t, Config{Auth: a}, newFakeResolver(theirs)) + " user=compute"
	pe := wantFatal(t, connectRepl(t, only+" password="+tenantTok), "28000", "permission denied for the hosted timeline")
	if strings.Contains(pe.Message+pe.Detail+pe.Hint, theirs.TenantID) {
		t.Fatalf("the refusal names the hosted tenant: %+v", pe)
	}
	wantFatal(t, connectRepl(t, only+" password="+adminTok), "28000", "permission denied for the hosted timeline")
	if err := connectRepl(t, only+" password="+allTok); err != nil {
		t.Fatalf("safekeeperdata without options: %v", err)
	}
	own := startAuthServer(t, Config{Auth: a}, newFakeResolver(mine)) + " user=compute"
	if err := connectRepl(t, own+" password="+tenantTok); err != nil {
		t.Fatalf("tenant token, own single timeline without options: %v", err)
	}

	// Without token authentication nothing changes: trust reaches all.
	trusted := startAuthServer(t, Config{}, reg) + " user=compute"
	for _, id := range []timeline.ID{mine, theirs} {
		if err := connectRepl(t, trusted+opts(id)); err != nil {
			t.Fatalf("trusted %s: %v", id, err)
		}
	}
}
