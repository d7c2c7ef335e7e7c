package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
)

// runCluster runs "safekeeper cluster <args>" and returns its exit status
// and output.
func runCluster(t testing.TB, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, safekeeperBinary(t), append([]string{"cluster"}, args...)...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("safekeeper cluster %v: %v\n%s", args, err, out)
	}
	return 0, string(out)
}

// Issue 8, zero-loss primary failover, the README's procedure as a test:
// clients commit synchronously (ANY 2 of three safekeepers) and record
// what was acknowledged; the primary and one safekeeper are killed at the
// same moment; "safekeeper cluster status" finds the most advanced
// safekeeper among the two left (a quorum); the standby, which streams
// through the safekeepers, is pointed at it; "cluster wait-replayed"
// waits until it has replayed that position; it is promoted; the
// safekeepers follow it onto the new timeline, the killed one rejoins,
// and synchronous replication is back. Every acknowledged commit is on the
// promoted standby. Five times.
func TestZeroLossFailover(t *testing.T) {
	for run := 1; run <= 5; run++ {
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) { failoverOnce(t, run) })
	}
}

func failoverOnce(t *testing.T, run int) {
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1, Conf: map[string]string{
		"synchronous_standby_names": "ANY 2 (sk1, sk2, sk3)",
	}})
	var sks []*SK
	var addrs []string
	for i := 1; i <= 3; i++ {
		sk := StartSKNamed(t, fmt.Sprintf("sk%d", i), primary.ConnString(), nil, "--upstream-slot", "")
		sks = append(sks, sk)
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", sk.PGPort))
	}
	primary.Exec(t, "CREATE TABLE acked(id int primary key)")
	flush := flushLSNOfPrimary(t, primary)
	for _, sk := range sks {
		sk.WaitFlush(t, flush, 60*time.Second)
	}
	// The standby streams through the safekeepers (any of them).
	ports := make([]string, len(sks))
	for i, sk := range sks {
		ports[i] = strconv.Itoa(sk.PGPort)
	}
	multi := fmt.Sprintf("host=127.0.0.1,127.0.0.1,127.0.0.1 port=%s user=postgres application_name=standby", strings.Join(ports, ","))
	standby := pgtest.StartStandby(t, primary, multi, pgtest.Options{})
	standby.WaitForQuery(t, "SELECT count(*) FROM pg_class WHERE relname = 'acked'", "1", 60*time.Second)

	cm := startCommitters(t, primary, 8, "INSERT INTO acked VALUES (%d)", 30*time.Second, false)
	pgtest.WaitFor(t, 30*time.Second, "commits to flow", func() bool {
		acked, _ := cm.Acked()
		return len(acked) >= 200+100*run
	})
	// The primary and sk1 die at the same moment.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); primary.Kill9(t) }()
	go func() { defer wg.Done(); sks[0].Kill() }()
	wg.Wait()
	cm.Stop()
	acked, _ := cm.Acked()

	// 1. The most advanced safekeeper among those that answer, and
	// whether they are a quorum.
	code, out := runCluster(t, "status", "--safekeepers", strings.Join(addrs, ","), "--sync-count", "2", "--json")
	if code != 0 {
		t.Fatalf("cluster status: exit %d\n%s", code, out)
	}
	var st struct {
		HighestNode string `json:"highest_node"`
		Highest     string `json:"highest_flush_lsn"`
		Answered    int    `json:"answered"`
		Quorum      bool   `json:"quorum"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Quorum || st.Answered != 2 {
		t.Fatalf("cluster status: %v %+v\n%s", err, st, out)
	}
	// 2. Point the standby at it, 3. wait until it has replayed that.
	standby.SetConf(t, "primary_conninfo", fmt.Sprintf("host=127.0.0.1 port=%s user=postgres application_name=standby",
		strings.TrimPrefix(st.HighestNode, "127.0.0.1:")))
	code, out = runCluster(t, "wait-replayed", "--standby", standby.ConnString(),
		"--safekeepers", strings.Join(addrs, ","), "--sync-count", "2", "--timeout", "90s")
	if code != 0 {
		t.Fatalf("cluster wait-replayed: exit %d\n%s", code, out)
	}
	// 4. Promote.
	standby.Promote(t)
	standby.WaitForQuery(t, "SELECT pg_is_in_recovery()", "f", 60*time.Second)

	// Nothing acknowledged is lost.
	got := map[int]bool{}
	rows := standby.QueryValue(t, "SELECT coalesce(string_agg(id::text, ','), '') FROM acked")
	for _, f := range strings.Split(rows, ",") {
		if id, err := strconv.Atoi(f); err == nil {
			got[id] = true
		}
	}
	var lost []int
	for _, id := range acked {
		if !got[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged commits are missing on the promoted standby: %v", len(lost), len(acked), lost)
	}

	// 5. The safekeepers follow the new primary onto its timeline (the
	// killed one too), 6. synchronous replication is back.
	for _, sk := range sks {
		if sk.PID() != 0 {
			sk.Stop()
		}
		sk.Upstream = standby.ConnString()
		sk.Start()
	}
	standby.SetConf(t, "synchronous_standby_names", "ANY 2 (sk1, sk2, sk3)")
	ctx := ctxTimeout(t, 60*time.Second)
	if err := execOn(ctx, standby, "INSERT INTO acked VALUES (-1)"); err != nil {
		t.Fatalf("synchronous commit on the new primary: %v", err)
	}
	newFlush := flushLSNOfPrimary(t, standby)
	for _, sk := range sks {
		sk.WaitFlush(t, newFlush, 60*time.Second)
		if tli := sk.Status(t).Timelines[0].TLI; tli != 2 {
			t.Fatalf("%s is on timeline %d after the failover, want 2", sk.Name, tli)
		}
	}
	t.Logf("run %d: %d acknowledged commits, all on the promoted standby; status picked %s at %s; the three safekeepers follow timeline 2",
		run, len(acked), st.HighestNode, st.Highest)
}
