package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// apiCall sends a JSON request to the safekeeper's HTTP API and decodes
// the answer into out (when not nil); it returns the status code.
func (s *SK) apiCall(t testing.TB, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	if s.HTTPToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.HTTPToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

// timelineInfo is the subset of GET /v1/tenant/{t}/timeline/{l} the tests read.
type timelineInfo struct {
	State  string `json:"state"`
	Error  string `json:"error"`
	Status *struct {
		FlushLSN string `json:"flush_lsn"`
		Upstream struct {
			State     string `json:"state"`
			LastError string `json:"last_error"`
		} `json:"upstream"`
	} `json:"status"`
}

func (s *SK) timelineFlush(t testing.TB, id timeline.ID) wal.LSN {
	t.Helper()
	var info timelineInfo
	if code := s.apiCall(t, "GET", "/v1/tenant/"+id.TenantID+"/timeline/"+id.TimelineID, nil, &info); code != 200 {
		t.Fatalf("GET timeline %s: %d", id, code)
	}
	if info.Status == nil {
		return 0
	}
	lsn, _ := wal.ParseLSN(info.Status.FlushLSN)
	return lsn
}

func (s *SK) waitTimelineFlush(t testing.TB, id timeline.ID, lsn wal.LSN, timeout time.Duration) {
	t.Helper()
	pgtest.WaitFor(t, timeout, fmt.Sprintf("timeline %s to reach %s", id, lsn), func() bool {
		return s.timelineFlush(t, id) >= lsn
	})
}

// optionsFor is the startup option that chooses timeline id.
func optionsFor(id timeline.ID) string {
	return fmt.Sprintf("options='-c tenant_id=%s timeline_id=%s'", id.TenantID, id.TimelineID)
}

// Issue 9, acceptance 1 and 2: two primaries with different system
// identifiers attached to one safekeeper through the API; pg_receivewal
// for each, choosing its timeline with startup options, gets segments
// byte-identical to its own primary's; a consumer naming no timeline gets
// the error with the HINT; a restart brings both back; deleting one
// removes its directory and leaves the other streaming.
func TestManyTimelinesThroughTheAPI(t *testing.T) {
	pgtest.Require(t)
	p1 := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	p2 := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	if sysID(t, p1) == sysID(t, p2) {
		t.Fatal("the two primaries share a system identifier")
	}
	sk := StartSK(t, "")
	if code, reasons := sk.readyz(t); code != 200 {
		t.Fatalf("/readyz of a node hosting no timeline (none asked for): %d %q", code, reasons)
	}
	ids := []timeline.ID{
		{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()},
		{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()},
	}
	prims := []*pgtest.Cluster{p1, p2}
	for i, id := range ids {
		body := map[string]any{"timeline_id": id.TimelineID, "upstream": map[string]string{"conninfo": prims[i].ConnString(), "slot": "none"}}
		var info timelineInfo
		if code := sk.apiCall(t, "POST", "/v1/tenant/"+id.TenantID+"/timeline", body, &info); code != 201 {
			t.Fatalf("create timeline %d: %d %+v", i, code, info)
		}
		if code := sk.apiCall(t, "POST", "/v1/tenant/"+id.TenantID+"/timeline", body, nil); code != 409 {
			t.Fatalf("create timeline %d again: %d, want 409", i, code)
		}
	}
	var list []json.RawMessage
	if code := sk.apiCall(t, "GET", "/v1/timeline", nil, &list); code != 200 || len(list) != 2 {
		t.Fatalf("list: %d, %d timelines", code, len(list))
	}
	for i, id := range ids {
		sk.waitTimelineFlush(t, id, flushLSNOfPrimary(t, prims[i]), 60*time.Second)
	}

	// Without options: PostgreSQL's FATAL with a HINT naming them.
	ctx := ctxTimeout(t, 10*time.Second)
	_, err := pgconn.Connect(ctx, sk.ConnString())
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != "22023" || pe.Hint == "" {
		t.Fatalf("consumer without options: %v; want FATAL 22023 with a HINT", err)
	}

	dirs := make([]string, 2)
	rws := make([]*receivewal, 2)
	for i, id := range ids {
		dirs[i] = t.TempDir()
		rws[i] = startReceivewal(t, prims[i].Bins, sk.PGPort, dirs[i], "-d", optionsFor(id))
	}
	for i := range ids {
		generateSegments(t, prims[i], 3)
	}
	for i, id := range ids {
		sk.waitTimelineFlush(t, id, flushLSNOfPrimary(t, prims[i]), 60*time.Second)
	}
	for i := range ids {
		pgtest.WaitFor(t, 60*time.Second, "pg_receivewal to complete 3 segments", func() bool {
			return len(completeSegments(t, dirs[i])) >= 3
		})
		rws[i].stop(t)
		compareWithPrimary(t, prims[i], dirs[i], completeSegments(t, dirs[i]))
	}

	// A restart brings both back, and both continue.
	sk.Stop()
	sk.Start()
	for i, id := range ids {
		prims[i].Exec(t, "INSERT INTO filler(payload) VALUES ('after the restart')")
		sk.waitTimelineFlush(t, id, flushLSNOfPrimary(t, prims[i]), 60*time.Second)
	}

	// Delete the first: its consumer's stream ends, its directory goes,
	// the second goes on.
	gone := filepath.Join(sk.DataDir, ids[0].TenantID, ids[0].TimelineID)
	if _, err := os.Stat(gone); err != nil {
		t.Fatal(err)
	}
	follower := startReceivewal(t, p1.Bins, sk.PGPort, t.TempDir(), "-d", optionsFor(ids[0]))
	pgtest.WaitFor(t, 30*time.Second, "pg_receivewal to stream the first timeline", func() bool {
		var info struct {
			Status *struct {
				Consumers []json.RawMessage `json:"consumers"`
			} `json:"status"`
		}
		sk.apiCall(t, "GET", "/v1/tenant/"+ids[0].TenantID+"/timeline/"+ids[0].TimelineID, nil, &info)
		return info.Status != nil && len(info.Status.Consumers) == 1
	})
	if code := sk.apiCall(t, "DELETE", "/v1/tenant/"+ids[0].TenantID+"/timeline/"+ids[0].TimelineID, nil, nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	select {
	case <-follower.done:
		follower.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatalf("pg_receivewal still streams the deleted timeline:\n%s", follower.out.String())
	}
	if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted timeline's directory: %v", err)
	}
	if code := sk.apiCall(t, "GET", "/v1/tenant/"+ids[0].TenantID+"/timeline/"+ids[0].TimelineID, nil, nil); code != 404 {
		t.Fatalf("GET deleted timeline: %d, want 404", code)
	}
	generateSegments(t, p2, 1)
	sk.waitTimelineFlush(t, ids[1], flushLSNOfPrimary(t, p2), 60*time.Second)
	// With one timeline left, a consumer without options gets it.
	conn, err := pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		t.Fatalf("consumer without options with one timeline hosted: %v", err)
	}
	conn.Close(ctx)
	sk.Stop()
	sk.Start()
	if code := sk.apiCall(t, "GET", "/v1/timeline", nil, &list); code != 200 || len(list) != 1 {
		t.Fatalf("after the restart: %d, %d timelines; want 1", code, len(list))
	}
}

func sysID(t testing.TB, c *pgtest.Cluster) string {
	t.Helper()
	return c.QueryValue(t, "SELECT system_identifier FROM pg_control_system()")
}

// Issue 9, acceptance 3: with tokens on both ports and two timelines fed
// by two primaries, a tenant token reaches its own timeline and is refused
// on the other's (replication: FATAL 28000; HTTP: 403, the same whether
// the timeline exists or not); a safekeeperdata token reaches both and
// manages timelines; expired or foreign-signed tokens are refused (28P01,
// 401); probes and metrics need no token.
func TestTokensAcrossTimelines(t *testing.T) {
	pgtest.Require(t)
	key, pub := jwtKey(t)
	other, _ := jwtKey(t)
	p1 := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	p2 := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := StartSK(t, "", "--pg-auth-public-key", pub, "--http-auth-public-key", pub)
	exp := time.Now().Add(time.Hour).Unix()
	admin := jwtSign(t, key, map[string]any{"scope": "safekeeperdata", "exp": exp})
	ids := []timeline.ID{
		{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()},
		{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()},
	}
	tenantTok := []string{
		jwtSign(t, key, map[string]any{"scope": "tenant", "tenant_id": ids[0].TenantID, "exp": exp}),
		jwtSign(t, key, map[string]any{"scope": "tenant", "tenant_id": ids[1].TenantID, "exp": exp}),
	}
	expired := jwtSign(t, key, map[string]any{"scope": "safekeeperdata", "exp": time.Now().Add(-time.Hour).Unix()})
	foreign := jwtSign(t, other, map[string]any{"scope": "safekeeperdata", "exp": exp})

	prims := []*pgtest.Cluster{p1, p2}
	for i, id := range ids {
		body := map[string]any{"timeline_id": id.TimelineID, "upstream": map[string]string{"conninfo": prims[i].ConnString(), "slot": "none"}}
		sk.HTTPToken = tenantTok[i]
		if code := sk.apiCall(t, "POST", "/v1/tenant/"+id.TenantID+"/timeline", body, nil); code != 403 {
			t.Fatalf("create with a tenant token: %d, want 403", code)
		}
		sk.HTTPToken = admin
		if code := sk.apiCall(t, "POST", "/v1/tenant/"+id.TenantID+"/timeline", body, nil); code != 201 {
			t.Fatalf("create with a safekeeperdata token: %d", code)
		}
	}
	for i, id := range ids {
		sk.waitTimelineFlush(t, id, flushLSNOfPrimary(t, prims[i]), 60*time.Second)
	}

	// HTTP.
	path := func(id timeline.ID) string { return "/v1/tenant/" + id.TenantID + "/timeline/" + id.TimelineID }
	missing := timeline.ID{TenantID: ids[1].TenantID, TimelineID: timeline.NewHexID()}
	for _, c := range []struct {
		token, method, path string
		want                int
	}{
		{"", "GET", "/v1/status", 401},
		{"", "GET", path(ids[0]), 401},
		{expired, "GET", path(ids[0]), 401},
		{foreign, "GET", path(ids[0]), 401},
		{"", "GET", "/healthz", 200},
		{"", "GET", "/metrics", 200},
		{tenantTok[0], "GET", path(ids[0]), 200},
		{tenantTok[0], "GET", "/v1/tenant/" + ids[0].TenantID + "/timeline", 200},
		{tenantTok[0], "GET", path(ids[1]), 403},
		{tenantTok[0], "GET", path(missing), 403}, // same answer: nothing leaks
		{tenantTok[0], "GET", "/v1/status", 403},
		{tenantTok[0], "GET", "/v1/timeline", 403},
		{tenantTok[0], "DELETE", path(ids[0]), 403},
		{tenantTok[0], "POST", path(ids[0]) + "/detach", 403},
		{admin, "GET", path(ids[1]), 200},
		{admin, "GET", path(missing), 404},
		{admin, "GET", "/v1/status", 200},
	} {
		sk.HTTPToken = c.token
		if code := sk.apiCall(t, c.method, c.path, nil, nil); code != c.want {
			t.Errorf("%s %s with token %.12s…: %d, want %d", c.method, c.path, c.token, code, c.want)
		}
	}
	if code, _ := sk.readyz(t); code != 200 {
		t.Errorf("/readyz without a token: %d, want 200", code)
	}

	// Replication.
	base := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable", sk.PGPort)
	conn := func(token string, id timeline.ID) string {
		return base + " password=" + token + jwtOptions(id.TenantID, id.TimelineID)
	}
	for i, id := range ids {
		want := sysID(t, prims[i])
		if got, err := jwtIdentify(t, conn(tenantTok[i], id)); err != nil || got != want {
			t.Errorf("tenant token on its own timeline %d: %q, %v; want system %s", i, got, err, want)
		}
		if got, err := jwtIdentify(t, conn(admin, id)); err != nil || got != want {
			t.Errorf("safekeeperdata token on timeline %d: %q, %v; want system %s", i, got, err, want)
		}
		_, err := jwtIdentify(t, conn(tenantTok[1-i], id))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != "28000" {
			t.Errorf("tenant token on another tenant's timeline %d: %v; want FATAL 28000", i, err)
		}
	}
	for _, tok := range []string{expired, foreign} {
		_, err := jwtIdentify(t, conn(tok, ids[0]))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "28P01" {
			t.Errorf("bad token: %v; want 28P01", err)
		}
	}
}

// Issue 9, acceptance 6: a timeline whose upstream refuses to
// authenticate it, and one whose directory is taken away while it
// streams, disturb neither the process nor a third timeline streaming at
// the same time; the second comes back by itself once its directory does.
func TestTimelineIsolation(t *testing.T) {
	pgtest.Require(t)
	p1 := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	p2 := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	p3 := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := StartSK(t, "")
	pid := sk.PID()
	refused := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	broken := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	healthy := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	for _, c := range []struct {
		id   timeline.ID
		conn string
	}{
		{refused, p1.ConnString() + " user=no_such_role"},
		{broken, p2.ConnString()},
		{healthy, p3.ConnString()},
	} {
		body := map[string]any{"timeline_id": c.id.TimelineID, "upstream": map[string]string{"conninfo": c.conn, "slot": "none"}}
		if code := sk.apiCall(t, "POST", "/v1/tenant/"+c.id.TenantID+"/timeline", body, nil); code != 201 {
			t.Fatalf("create: %d", code)
		}
	}
	sk.waitTimelineFlush(t, broken, flushLSNOfPrimary(t, p2), 60*time.Second)
	sk.waitTimelineFlush(t, healthy, flushLSNOfPrimary(t, p3), 60*time.Second)
	dir := t.TempDir()
	rw := startReceivewal(t, p3.Bins, sk.PGPort, dir, "-d", optionsFor(healthy))
	pgtest.WaitFor(t, 30*time.Second, "the refused timeline to say why", func() bool {
		var info timelineInfo
		sk.apiCall(t, "GET", "/v1/tenant/"+refused.TenantID+"/timeline/"+refused.TimelineID, nil, &info)
		return info.Status != nil && info.Status.Upstream.State != "streaming" && info.Status.Upstream.LastError != "" &&
			strings.Contains(info.Status.Upstream.LastError, "no_such_role")
	})

	// Take the second timeline's directory away: its next segment cannot
	// be created, the timeline fails and is retried alone.
	bdir := filepath.Join(sk.DataDir, broken.TenantID, broken.TimelineID)
	if err := os.Rename(bdir, bdir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bdir, []byte("not a directory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	generateSegments(t, p2, 2)
	generateSegments(t, p3, 3)
	var failed timelineInfo
	pgtest.WaitFor(t, 60*time.Second, "the broken timeline to be reported failed", func() bool {
		sk.apiCall(t, "GET", "/v1/tenant/"+broken.TenantID+"/timeline/"+broken.TimelineID, nil, &failed)
		return failed.State == "failed" && failed.Error != ""
	})
	t.Logf("the broken timeline failed: %s", failed.Error)
	code, reasons := sk.readyz(t)
	if code != 503 || !slices.ContainsFunc(reasons, func(r string) bool {
		return strings.HasPrefix(r, broken.TenantID+"/"+broken.TimelineID+": failed")
	}) {
		t.Fatalf("/readyz with a failed timeline: %d %q", code, reasons)
	}
	sk.waitTimelineFlush(t, healthy, flushLSNOfPrimary(t, p3), 60*time.Second)
	pgtest.WaitFor(t, 60*time.Second, "pg_receivewal to complete 3 segments of the healthy timeline", func() bool {
		return len(completeSegments(t, dir)) >= 3
	})
	rw.stop(t)
	compareWithPrimary(t, p3, dir, completeSegments(t, dir))
	var info timelineInfo
	sk.apiCall(t, "GET", "/v1/tenant/"+healthy.TenantID+"/timeline/"+healthy.TimelineID, nil, &info)
	if info.State != "active" || info.Status == nil || info.Status.Upstream.State != "streaming" {
		t.Fatalf("the healthy timeline: %+v", info)
	}
	if sk.PID() != pid {
		t.Fatal("the safekeeper process restarted")
	}

	// The directory comes back: the timeline reopens by itself and
	// catches up.
	if err := os.Remove(bdir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bdir+".away", bdir); err != nil {
		t.Fatal(err)
	}
	sk.waitTimelineFlush(t, broken, flushLSNOfPrimary(t, p2), 90*time.Second)
}

// Deleting a timeline keeps its archive unless asked: with archive=true
// its archived WAL goes too, and another timeline's archive is untouched.
func TestDeleteTimelineArchive(t *testing.T) {
	pgtest.Require(t)
	ae := fileArchive(t)
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := StartSK(t, "", "--archive", ae.url)
	a := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	b := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
	for _, id := range []timeline.ID{a, b} {
		body := map[string]any{"timeline_id": id.TimelineID, "upstream": map[string]string{"conninfo": primary.ConnString(), "slot": "none"}}
		if code := sk.apiCall(t, "POST", "/v1/tenant/"+id.TenantID+"/timeline", body, nil); code != 201 {
			t.Fatalf("create: %d", code)
		}
		sk.waitTimelineFlush(t, id, flushLSNOfPrimary(t, primary), 60*time.Second)
	}
	generateSegments(t, primary, 3)
	objects := func(id timeline.ID) int {
		list, err := ae.store.List(context.Background(), id.TenantID+"/"+id.TimelineID+"/")
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	for _, id := range []timeline.ID{a, b} {
		pgtest.WaitFor(t, 60*time.Second, "3 segments archived", func() bool { return objects(id) >= 3 })
	}
	nb := objects(b)
	if code := sk.apiCall(t, "DELETE", "/v1/tenant/"+a.TenantID+"/timeline/"+a.TimelineID+"?archive=yes-please", nil, nil); code != 400 {
		t.Fatalf("DELETE with a bad archive value: %d, want 400", code)
	}
	if code := sk.apiCall(t, "DELETE", "/v1/tenant/"+a.TenantID+"/timeline/"+a.TimelineID+"?archive=true", nil, nil); code != 200 {
		t.Fatalf("DELETE ?archive=true: %d", code)
	}
	if n := objects(a); n != 0 {
		t.Fatalf("%d archive objects left after DELETE ?archive=true", n)
	}
	if n := objects(b); n < nb {
		t.Fatalf("the other timeline's archive lost objects: %d, had %d", n, nb)
	}
	if code := sk.apiCall(t, "DELETE", "/v1/tenant/"+b.TenantID+"/timeline/"+b.TimelineID, nil, nil); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	if n := objects(b); n < nb {
		t.Fatalf("DELETE without archive=true removed archive objects: %d, had %d", n, nb)
	}
}
