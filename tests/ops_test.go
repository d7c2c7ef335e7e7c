package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
)

// Before its first contact with an upstream, a timeline named by the
// flags answers replication commands with a clear 55000 error; SHOW
// data_directory_mode still works. Without ids, the ids derive from the
// upstream's system identifier: until it answers, connections get
// PostgreSQL's "the database system is starting up" (57P03) and status
// lists no timeline.
func TestNoWALYet(t *testing.T) {
	pgtest.Require(t)
	down := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres connect_timeout=1", pgtest.FreePort(t))
	pending := StartSK(t, down)
	_, err := pgconn.Connect(ctxTimeout(t, 30*time.Second), pending.ConnString())
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P03" || pe.Message != "the database system is starting up" {
		t.Fatalf("connection before the timeline is known: want FATAL 57P03, got %v", err)
	}
	var st struct {
		Timelines []json.RawMessage `json:"timelines"`
	}
	resp, err := http.Get(pending.url("/v1/status"))
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || len(st.Timelines) != 0 {
		t.Fatalf("status before the timeline is known: %v, %d timelines", err, len(st.Timelines))
	}
	// ... and /readyz says why: the upstream's connection error.
	pgtest.WaitFor(t, 30*time.Second, "/readyz to say why no timeline is known yet", func() bool {
		code, reasons := pending.readyz(t)
		return code == 503 && len(reasons) == 1 && strings.Contains(reasons[0], "no timeline yet") &&
			strings.Contains(reasons[0], "connection refused")
	})
	pending.Stop() // exits 0 while still waiting for the upstream

	sk := StartSK(t, down, "--tenant-id", timeline.NewHexID(), "--timeline-id", timeline.NewHexID())
	ctx := ctxTimeout(t, 30*time.Second)
	conn, err := pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{"IDENTIFY_SYSTEM", "SHOW wal_segment_size", "START_REPLICATION 0/1000000 TIMELINE 1"} {
		_, err := conn.Exec(ctx, q).ReadAll()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55000" || pe.Message != "safekeeper holds no WAL yet" {
			t.Fatalf("%s: want 55000 safekeeper holds no WAL yet, got %v", q, err)
		}
	}
	if _, err := conn.Exec(ctx, "SHOW data_directory_mode").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if code, reasons := sk.readyz(t); code != 503 || len(reasons) != 1 || !strings.Contains(reasons[0], "upstream not connected") {
		t.Fatalf("/readyz with the upstream down: %d %q", code, reasons)
	}
	if lag := upstreamLag(t, sk); lag.LagBytes != nil || lag.WalEnd != nil {
		t.Fatalf("upstream down: lag %v and WAL end %v, want null (unknown)", lag.LagBytes, lag.WalEnd)
	}
	status := sk.Status(t)
	if status.Timelines[0].HasWAL || status.Timelines[0].Upstream.State == "streaming" {
		t.Fatalf("status claims WAL or streaming: %+v", status.Timelines[0])
	}
}

// upstreamStatus is the upstream part of /v1/status, nulls kept.
type upstreamStatus struct {
	WalEnd      *string    `json:"upstream_wal_end"`
	LagBytes    *uint64    `json:"lag_bytes"`
	LastMessage *time.Time `json:"last_message_at"`
}

func upstreamLag(t testing.TB, sk *SK) upstreamStatus {
	t.Helper()
	st, err := timelineStatus[struct {
		Upstream upstreamStatus `json:"upstream"`
	}](t, http.DefaultClient, sk)
	if err != nil {
		t.Fatal(err)
	}
	return st.Upstream
}

// metricWith is metric for the first sample whose line starts with prefix
// and contains part.
func (s *SK) metricWith(t testing.TB, prefix, part string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(s.url("/metrics"))
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, prefix) && strings.Contains(line, part) {
			f := strings.Fields(line)
			var v float64
			fmt.Sscan(f[len(f)-1], &v)
			return v, true
		}
	}
	return 0, false
}

// readyz fetches GET /readyz.
func (s *SK) readyz(t testing.TB) (int, []string) {
	t.Helper()
	resp, err := http.Get(s.url("/readyz"))
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Ready   bool     `json:"ready"`
		Reasons []string `json:"reasons"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decode /readyz: %v", err)
	}
	if body.Ready != (resp.StatusCode == 200) {
		t.Fatalf("/readyz: status %d with ready=%v", resp.StatusCode, body.Ready)
	}
	return resp.StatusCode, body.Reasons
}

// A lone safekeeper without a slot, stopped while the primary recycled the
// WAL it lacks, has no peer or archive to recover from: status and
// /readyz say it is behind and why, instead of retrying silently (the
// cluster tests show recovery when a peer or the archive has the WAL).
func TestBehindNotReady(t *testing.T) {
	primary, sk := startPair(t, 1, map[string]string{"wal_keep_size": "0", "max_wal_size": "32MB", "min_wal_size": "2MB"})
	if code, reasons := sk.readyz(t); code != 200 {
		t.Fatalf("/readyz of a healthy pair: %d %q", code, reasons)
	}
	if v, ok := sk.metric(t, "safekeeper_build_info{"); !ok || v != 1 {
		t.Fatalf("safekeeper_build_info: %v %v", v, ok)
	}
	// The metrics an operator watches, with a consumer connected.
	rw := startReceivewal(t, primary.Bins, sk.PGPort, t.TempDir(), "--status-interval=1")
	generateSegments(t, primary, 1)
	flush := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, flush, 30*time.Second)
	pgtest.WaitFor(t, 30*time.Second, "the consumer's flush lag to be exported", func() bool {
		_, ok := sk.metric(t, `safekeeper_consumer_lag_bytes{application_name="pg_receivewal"`)
		_, flushKind := sk.metricWith(t, "safekeeper_consumer_lag_bytes{", `kind="flush"`)
		return ok && flushKind
	})
	for name, min := range map[string]float64{
		"safekeeper_written_lsn{":                  float64(flush),
		"safekeeper_oldest_lsn{":                   1,
		"safekeeper_last_fsync_timestamp_seconds{": float64(time.Now().Add(-time.Hour).Unix()),
		"safekeeper_upstream_wal_end_lsn{":         float64(flush),
		"safekeeper_upstream_lag_bytes{":           0,
		"safekeeper_wal_mapped_bytes{":             0,
	} {
		if v, ok := sk.metric(t, name); !ok || v < min {
			t.Fatalf("%s: %v (exported %v), want at least %v", name, v, ok, min)
		}
	}
	rw.stop(t)
	stopped := sk.FlushLSN(t)
	sk.Stop()
	generateSegments(t, primary, 3)
	pgtest.WaitFor(t, 60*time.Second, "the primary to recycle the safekeeper's next segment", func() bool {
		primary.Exec(t, "SELECT pg_switch_wal()")
		primary.Exec(t, "CHECKPOINT")
		oldest := primary.QueryValue(t, "SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'")
		want := primary.QueryValue(t, fmt.Sprintf("SELECT pg_walfile_name('%s')", stopped))
		return oldest > want
	})
	sk.Start()
	pgtest.WaitFor(t, 30*time.Second, "status and /readyz to say the node is behind", func() bool {
		code, reasons := sk.readyz(t)
		return code == 503 && len(reasons) == 1 && strings.Contains(reasons[0], "the upstream removed WAL this node lacks")
	})
	st := sk.Status(t)
	if st.Timelines[0].Upstream.State != "behind: WAL removed upstream" {
		t.Fatalf("upstream state %q", st.Timelines[0].Upstream.State)
	}
	// The lag is the truth: the primary's end of WAL minus ours.
	lag := upstreamLag(t, sk)
	want := uint64(flushLSNOfPrimary(t, primary) - sk.FlushLSN(t))
	if lag.LagBytes == nil || *lag.LagBytes < want/2 || lag.WalEnd == nil || lag.LastMessage == nil {
		t.Fatalf("behind by about %d bytes: status says lag %v, WAL end %v, last contact %v", want, lag.LagBytes, lag.WalEnd, lag.LastMessage)
	}
}

// WAL from a cluster with another system identifier is refused and
// nothing is written.
func TestRefuseOtherCluster(t *testing.T) {
	primary, sk := startPair(t, 1, nil)
	before := sk.Status(t).Timelines[0]
	sk.Stop()
	tlDir := filepath.Join(sk.DataDir, before.TenantID, before.TimelineID)
	snapshot := dirListing(t, tlDir)

	other := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk.Upstream = other.ConnString()
	sk.Start()
	pgtest.WaitFor(t, 30*time.Second, "upstream state refused", func() bool {
		return sk.Status(t).Timelines[0].Upstream.State == "refused"
	})
	after := sk.Status(t).Timelines[0]
	if after.SystemID != before.SystemID || after.FlushLSN != before.FlushLSN {
		t.Fatalf("timeline changed: before %+v after %+v", before, after)
	}
	if got := dirListing(t, tlDir); got != snapshot {
		t.Fatalf("files changed:\nbefore %s\nafter  %s", snapshot, got)
	}
	_ = primary
}

func dirListing(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		if e.Name() == "safekeeper.control" {
			continue
		}
		fi, _ := e.Info()
		fmt.Fprintf(&b, "%s:%d ", e.Name(), fi.Size())
	}
	return b.String()
}

// startStream opens a replication connection and starts streaming at the
// safekeeper's flush position.
func startStream(t *testing.T, sk *SK) (*pgconn.PgConn, context.Context) {
	t.Helper()
	ctx := ctxTimeout(t, 60*time.Second)
	conn, err := pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	conn.Frontend().Send(&pgproto3.Query{String: fmt.Sprintf("START_REPLICATION %s TIMELINE 1", sk.FlushLSN(t))})
	if err := conn.Frontend().Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := conn.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := msg.(*pgproto3.CopyBothResponse); !ok {
		t.Fatalf("got %T, want CopyBothResponse", msg)
	}
	return conn, ctx
}

// A silent consumer gets one keepalive asking for a reply at half the
// timeout and is dropped, without an error message, at the full timeout.
func TestWalSenderTimeout(t *testing.T) {
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := StartSK(t, primary.ConnString(), "--wal-sender-timeout", "2s")
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	conn, ctx := startStream(t, sk)
	t0 := time.Now()
	var pingAt time.Duration
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			closedAt := time.Since(t0)
			if pingAt == 0 {
				t.Fatalf("connection closed after %s without a keepalive: %v", closedAt, err)
			}
			if closedAt < 1800*time.Millisecond || closedAt > 5*time.Second {
				t.Fatalf("closed after %s, want about 2s", closedAt)
			}
			t.Logf("keepalive at %s, closed at %s", pingAt, closedAt)
			return
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if m.Data[0] == 'k' && m.Data[17] == 1 && pingAt == 0 {
				pingAt = time.Since(t0)
				if pingAt < 800*time.Millisecond || pingAt > 1800*time.Millisecond {
					t.Fatalf("keepalive with reply requested at %s, want about 1s", pingAt)
				}
			}
		case *pgproto3.ErrorResponse:
			t.Fatalf("timeout sent an ErrorResponse: %s %s", m.Code, m.Message)
		}
	}
}

// SIGTERM: a streaming consumer gets PostgreSQL's shutdown sequence (a
// keepalive asking for a reply, then CommandComplete "COPY 0" and EOF), and
// the process exits 0.
//
// The SIGTERM is sent the moment CopyBothResponse arrives, when the
// stream may not have started yet; the sequence must not depend on that.
// (It did: a shutdown that won the race set the idle connection's read
// deadline on the stream's socket, so the consumer's reply was never read
// and COPY 0 never sent.) The scenario runs several times with restarts.
func TestShutdownSequence(t *testing.T) {
	_, sk := startPair(t, 1, nil)
	for i := 0; i < 12; i++ {
		if i > 0 {
			sk.Start()
		}
		if !t.Run(fmt.Sprint(i), func(t *testing.T) { shutdownSequence(t, sk) }) {
			break
		}
	}
}

func shutdownSequence(t *testing.T, sk *SK) {
	conn, ctx := startStream(t, sk)
	stopped := make(chan error, 1)
	go func() {
		// Not sk.Stop: t.Fatal may not be called from this goroutine.
		sk.signal(syscall.SIGTERM)
		stopped <- sk.wait(30 * time.Second)
	}()
	var seq []string
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			seq = append(seq, "EOF")
			break
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if m.Data[0] == 'k' && m.Data[17] == 1 {
				seq = append(seq, "k")
				// Confirm everything, as pg_receivewal does.
				reply := make([]byte, 34)
				reply[0] = 'r'
				copy(reply[1:9], m.Data[1:9])
				conn.Frontend().Send(&pgproto3.CopyData{Data: reply})
				conn.Frontend().Flush()
			}
		case *pgproto3.CommandComplete:
			seq = append(seq, "C "+string(m.CommandTag))
		case *pgproto3.ReadyForQuery:
			seq = append(seq, "Z")
		}
	}
	if err := <-stopped; err != nil {
		t.Fatalf("safekeeper did not shut down cleanly: %v", err)
	}
	if got := strings.Join(seq, ","); got != "k,C COPY 0,EOF" {
		t.Fatalf("shutdown sequence %q, want k,C COPY 0,EOF", got)
	}
}

// /metrics and /healthz answer; the metrics named in the design exist.
func TestHTTPEndpoints(t *testing.T) {
	_, sk := startPair(t, 1, nil)
	resp, err := http.Get(sk.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{
		"safekeeper_wal_received_bytes_total", "safekeeper_wal_sent_bytes_total", "safekeeper_flush_lsn",
		"safekeeper_wal_fsync_seconds_bucket", "safekeeper_consumers", "safekeeper_upstream_connected{",
	} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v, ok := sk.metric(t, "safekeeper_upstream_connected{"); !ok || v != 1 {
		t.Errorf("safekeeper_upstream_connected = %v (exported %v), want 1", v, ok)
	}
	st := sk.Status(t)
	tl := st.Timelines[0]
	if len(tl.TenantID) != 32 || len(tl.TimelineID) != 32 || tl.SystemID == "" || tl.PGVersion == "" || tl.TLI != 1 {
		t.Errorf("incomplete status: %+v", tl)
	}
}

// A multi-host upstream with target_session_attrs=read-write skips a dead
// host and a standby and streams from the primary. (pgconn checks this with
// SQL a walsender refuses; the receiver uses the ParameterStatus values
// instead, as libpq does.)
func TestMultiHostUpstream(t *testing.T) {
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	standby := pgtest.StartStandby(t, primary, primary.ConnString(), pgtest.Options{})
	dead := pgtest.FreePort(t)
	sk := StartSK(t, fmt.Sprintf("host=127.0.0.1,127.0.0.1,127.0.0.1 port=%d,%d,%d user=postgres target_session_attrs=read-write connect_timeout=2",
		dead, standby.Port, primary.Port))
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	// The flush position can reach the primary's before the state says
	// streaming (a new timeline starts at the segment holding it).
	pgtest.WaitFor(t, 30*time.Second, "the upstream state to be streaming", func() bool {
		return sk.Status(t).Timelines[0].Upstream.State == "streaming"
	})
	primary.WaitForQuery(t, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'safekeeper'", "1", 30*time.Second)
}

// A safekeeper that runs out of file descriptors keeps its replication
// port: connections wait in the backlog while the shortage lasts and are
// served once descriptors are free again, as PostgreSQL's postmaster
// does. (An accept error used to end the listener for good, leaving a
// process that ingested WAL but served nobody.)
func TestListenerOutlivesDescriptorShortage(t *testing.T) {
	pgtest.Require(t)
	down := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres connect_timeout=1", pgtest.FreePort(t))
	sk := StartSK(t, down, "--tenant-id", timeline.NewHexID(), "--timeline-id", timeline.NewHexID())
	ctx := ctxTimeout(t, 60*time.Second)
	// The process answers before the shortage.
	conn, err := pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	pid := sk.PID()
	openFDs := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	tight := unix.Rlimit{Cur: uint64(openFDs() + 4), Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &tight, nil); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()

	// Idle connections (no startup packet) take the descriptors left; the
	// ones after them cannot be accepted.
	var idle []net.Conn
	for i := 0; i < 16; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", sk.PGPort))
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	pgtest.WaitFor(t, 30*time.Second, "the safekeeper to use every descriptor it may", func() bool {
		return openFDs() >= int(tight.Cur)
	})
	for _, c := range idle {
		c.Close()
	}
	restore()

	conn, err = pgconn.Connect(ctxTimeout(t, 20*time.Second), sk.ConnString())
	if err != nil {
		t.Fatalf("connecting after the shortage: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SHOW data_directory_mode").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if n, ok := sk.metric(t, "safekeeper_accept_errors_total"); !ok || n < 1 {
		t.Fatalf("safekeeper_accept_errors_total = %v (found %v), want at least 1: the shortage was not reached", n, ok)
	}
}
