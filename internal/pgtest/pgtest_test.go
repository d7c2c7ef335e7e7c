package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRequire(t *testing.T) {
	t.Parallel()
	b := Require(t)
	if b.Major() < 13 {
		t.Fatalf("unexpected major version %d (%s)", b.Major(), b.Version())
	}
	b.Need(t, "pg_receivewal", "psql", "pg_waldump", "pg_controldata")
	for _, n := range []string{"pg_receivewal", "pg_basebackup"} {
		if !filepath.IsAbs(b.Path(n)) || !isExecutable(b.Path(n)) {
			t.Fatalf("Path(%q) = %q is not an absolute executable", n, b.Path(n))
		}
	}
	t.Logf("using PostgreSQL %s from %s", b.Version(), b.Dir)
}

func TestFreePortUnique(t *testing.T) {
	t.Parallel()
	seen := map[int]bool{}
	for i := 0; i < 50; i++ {
		p := FreePort(t)
		if p <= 0 || seen[p] {
			t.Fatalf("FreePort returned %d twice or invalid", p)
		}
		seen[p] = true
	}
}

func TestPrimaryWalSegmentSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mb   int
		want string
	}{
		{0, "16MB"}, // default
		{1, "1MB"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			t.Parallel()
			p := StartPrimary(t, Options{WalSegSizeMB: tc.mb})

			if got := p.QueryValue(t, "SHOW wal_segment_size"); got != tc.want {
				t.Fatalf("wal_segment_size = %q, want %q", got, tc.want)
			}
			for setting, want := range map[string]string{
				"wal_level":        "replica",
				"max_wal_senders":  "10",
				"listen_addresses": "127.0.0.1",
				"port":             strconv.Itoa(p.Port),
				"hot_standby":      "on",
			} {
				if got := p.QueryValue(t, "SHOW "+setting); got != want {
					t.Errorf("SHOW %s = %q, want %q", setting, got, want)
				}
			}

			p.Exec(t, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)")
			if got := p.QueryValue(t, "SELECT count(*) FROM t"); got != "2" {
				t.Fatalf("count = %q, want 2", got)
			}

			// A WAL segment file has the configured size.
			segBytes := int64(16 << 20)
			if tc.mb != 0 {
				segBytes = int64(tc.mb) << 20
			}
			entries, err := os.ReadDir(p.WalDir())
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, e := range entries {
				if len(e.Name()) == 24 && e.Type().IsRegular() {
					fi, err := e.Info()
					if err != nil {
						t.Fatal(err)
					}
					if fi.Size() != segBytes {
						t.Fatalf("segment %s has size %d, want %d", e.Name(), fi.Size(), segBytes)
					}
					found = true
				}
			}
			if !found {
				t.Fatalf("no WAL segment in %s", p.WalDir())
			}

			// The replication connection string works and agrees on the
			// system identifier.
			sysid := p.SystemID(t)
			if sysid == 0 {
				t.Fatal("system identifier is 0")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pgconn.Connect(ctx, p.ReplConnString())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			res, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if got := string(res[0].Rows[0][0]); got != strconv.FormatUint(sysid, 10) {
				t.Fatalf("IDENTIFY_SYSTEM systemid = %s, want %d", got, sysid)
			}
		})
	}
}

func TestSetConfAndRestart(t *testing.T) {
	t.Parallel()
	p := StartPrimary(t, Options{Conf: map[string]string{"work_mem": "5MB", "application_name": "it's quoted"}})
	if got := p.QueryValue(t, "SHOW work_mem"); got != "5MB" {
		t.Fatalf("work_mem = %q, want 5MB", got)
	}
	if got := p.QueryValue(t, "SHOW application_name"); got != "it's quoted" {
		t.Fatalf("application_name = %q", got)
	}
	p.SetConf(t, "work_mem", "7MB")
	if got := p.QueryValue(t, "SHOW work_mem"); got != "7MB" {
		t.Fatalf("after SetConf work_mem = %q, want 7MB", got)
	}

	port := p.Port
	p.Exec(t, "CREATE TABLE durable (v text); INSERT INTO durable VALUES ('kept')")
	p.Stop(t, "fast")
	if _, err := p.TryQueryValue(context.Background(), "SELECT 1"); err == nil {
		t.Fatal("query succeeded on a stopped server")
	}
	p.Start(t)
	if p.Port != port {
		t.Fatalf("port changed on restart: %d -> %d", port, p.Port)
	}
	if got := p.QueryValue(t, "SELECT v FROM durable"); got != "kept" {
		t.Fatalf("after restart got %q", got)
	}
	if got := p.QueryValue(t, "SHOW work_mem"); got != "7MB" {
		t.Fatalf("after restart work_mem = %q, want 7MB", got)
	}
}

func TestStandbyReplicatesAndPromotes(t *testing.T) {
	t.Parallel()
	p := StartPrimary(t, Options{WalSegSizeMB: 1})
	p.Exec(t, "CREATE TABLE r (id int PRIMARY KEY, v text); INSERT INTO r VALUES (1, 'before backup')")

	s := StartStandby(t, p, p.ConnString()+" application_name=pgtest_standby", Options{})
	if s.Port == p.Port || s.DataDir == p.DataDir {
		t.Fatalf("standby shares port/datadir with primary")
	}
	if got := s.QueryValue(t, "SELECT pg_is_in_recovery()"); got != "t" {
		t.Fatalf("standby pg_is_in_recovery = %q", got)
	}
	if got := s.QueryValue(t, "SHOW wal_segment_size"); got != "1MB" {
		t.Fatalf("standby wal_segment_size = %q, want 1MB", got)
	}
	if a, b := p.SystemID(t), s.SystemID(t); a != b {
		t.Fatalf("system identifiers differ: primary %d standby %d", a, b)
	}
	if got := s.QueryValue(t, "SELECT v FROM r WHERE id = 1"); got != "before backup" {
		t.Fatalf("standby row 1 = %q", got)
	}

	p.Exec(t, "INSERT INTO r VALUES (2, 'streamed')")
	s.WaitForQuery(t, "SELECT v FROM r WHERE id = 2", "streamed", 30*time.Second)

	// The primary sees the standby as a streaming walsender client.
	WaitFor(t, 30*time.Second, "standby to appear in pg_stat_replication", func() bool {
		v, err := p.TryQueryValue(context.Background(),
			"SELECT state FROM pg_stat_replication WHERE application_name = 'pgtest_standby'")
		return err == nil && v == "streaming"
	})

	// Generate a few segment switches and check the standby keeps up.
	for i := 3; i < 6; i++ {
		p.Exec(t, fmt.Sprintf("INSERT INTO r VALUES (%d, 'x'); SELECT pg_switch_wal()", i))
	}
	s.WaitForQuery(t, "SELECT count(*) FROM r", "5", 30*time.Second)

	s.Promote(t)
	if got := s.QueryValue(t, "SELECT pg_is_in_recovery()"); got != "f" {
		t.Fatalf("after promote pg_is_in_recovery = %q", got)
	}
	s.Exec(t, "INSERT INTO r VALUES (100, 'written on promoted standby')")
	if got := s.QueryValue(t, "SELECT count(*) FROM r"); got != "6" {
		t.Fatalf("after promote count = %q, want 6", got)
	}
}

func TestWaitForQueryNoRowsThenRow(t *testing.T) {
	t.Parallel()
	p := StartPrimary(t, Options{})
	p.Exec(t, "CREATE TABLE w (v text)")
	if _, err := p.TryQueryValue(context.Background(), "SELECT v FROM w"); err != ErrNoRows {
		t.Fatalf("TryQueryValue on empty table: err = %v, want ErrNoRows", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(300 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgconn.Connect(ctx, p.ConnString())
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		_, _ = conn.Exec(ctx, "INSERT INTO w VALUES ('late')").ReadAll()
	}()
	p.WaitForQuery(t, "SELECT v FROM w", "late", 30*time.Second)
	<-done
}

// recordTB captures Skipf/Fatalf instead of acting on them.
type recordTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordTB) Helper()                         {}
func (r *recordTB) Skipf(f string, a ...any)        { r.skipped = fmt.Sprintf(f, a...) }
func (r *recordTB) Fatalf(f string, a ...any)       { r.failed = fmt.Sprintf(f, a...) }
func (r *recordTB) Logf(format string, args ...any) {}

func TestUnavailablePolicy(t *testing.T) {
	for _, tc := range []struct {
		ci       string
		wantFail bool
	}{{"", false}, {"false", false}, {"true", true}, {"1", true}} {
		t.Setenv("CI", tc.ci)
		r := &recordTB{TB: t}
		unavailable(r, "no binaries")
		if tc.wantFail && (r.failed == "" || r.skipped != "") {
			t.Errorf("CI=%q: want failure, got skipped=%q failed=%q", tc.ci, r.skipped, r.failed)
		}
		if !tc.wantFail && (r.skipped == "" || r.failed != "") {
			t.Errorf("CI=%q: want skip, got skipped=%q failed=%q", tc.ci, r.skipped, r.failed)
		}
	}
}

func TestStartRetriesWhenPortTaken(t *testing.T) {
	t.Parallel()
	p := StartPrimary(t, Options{})
	p.Stop(t, "fast")
	old := p.Port
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", old))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p.start(t, true) // what StartPrimary/StartStandby do on first start
	if p.Port == old {
		t.Fatalf("port %d was taken but cluster claims to run on it", old)
	}
	if got := p.QueryValue(t, "SHOW port"); got != strconv.Itoa(p.Port) {
		t.Fatalf("SHOW port = %q, want %d", got, p.Port)
	}
}
