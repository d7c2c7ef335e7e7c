package tests

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
)

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'" }

// Issue 6 acceptance 7, zero-loss point-in-time recovery: a base backup;
// clients commit synchronously through the safekeeper (ANY 1 of it) and
// record every acknowledged id; the primary is killed with SIGKILL and its
// data directory deleted; the base backup is restored with
// restore_command = 'safekeeper wal-fetch --archive ... --safekeepers ...'
// (archived segments from S3, the last, partial one from the safekeeper,
// padded with zeros); the recovered cluster holds every acknowledged id.
func TestZeroLossPITR(t *testing.T) {
	const seg = 1 << 20
	ae, _ := s3Archive(t)
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1, Conf: map[string]string{"synchronous_standby_names": "safekeeper"}})
	args := append([]string{"--archive", ae.url, "--wal-keep-size", "0"}, ae.extra...)
	sk := StartSKEnv(t, primary.ConnString(), ae.env, args...)
	primary.WaitForQuery(t, "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'safekeeper'", "sync", 30*time.Second)
	primary.Exec(t, "CREATE TABLE acked(id int primary key, pad text)")
	primary.Exec(t, "ALTER TABLE acked ALTER COLUMN pad SET STORAGE PLAIN")
	backup := pgtest.BaseBackup(t, primary, "restored")
	start := sk.archStatus(t).lsn(t, sk.archStatus(t).BackupLSN)

	load := startCommitters(t, primary, 3, "INSERT INTO acked SELECT %d, string_agg(md5(random()::text), '') FROM generate_series(1, 60)", 20*time.Second, false)
	// Long enough for several segments to be archived and removed locally,
	// then a crash in the middle of a segment.
	pgtest.WaitFor(t, 120*time.Second, "3 segments archived under load", func() bool {
		st := sk.archStatus(t)
		return st.lsn(t, st.BackupLSN) >= start+3*seg
	})
	primary.Kill9(t)
	load.Stop()
	if err := os.RemoveAll(primary.DataDir); err != nil {
		t.Fatal(err)
	}
	acked, _ := load.Acked()
	ids := make([]string, len(acked))
	for i, id := range acked {
		ids[i] = fmt.Sprint(id)
	}
	st := sk.archStatus(t)
	t.Logf("%d acknowledged commits; primary killed; safekeeper flush %s, archived up to %s", len(ids), st.FlushLSN, st.BackupLSN)

	var env []string
	for _, kv := range ae.env {
		env = append(env, shellQuote(kv))
	}
	restore := fmt.Sprintf("env %s %s wal-fetch --archive %s --archive-s3-path-style --safekeepers 127.0.0.1:%d --tenant-id %s --timeline-id %s %%f %%p",
		strings.Join(env, " "), shellQuote(safekeeperBinary(t)), shellQuote(ae.url), sk.PGPort, st.TenantID, st.TimelineID)
	backup.StartRecovery(t, restore, pgtest.Options{Conf: map[string]string{"synchronous_standby_names": ""}})
	backup.WaitForQuery(t, "SELECT pg_is_in_recovery()", "f", 180*time.Second)
	got := backup.QueryValue(t, fmt.Sprintf("SELECT count(*) FROM acked WHERE id IN (%s)", strings.Join(ids, ",")))
	if got != fmt.Sprint(len(ids)) {
		t.Fatalf("the recovered cluster holds %s of the %d acknowledged ids", got, len(ids))
	}
	t.Logf("recovered from the base backup with wal-fetch: all %d acknowledged ids present (timeline %s)",
		len(ids), backup.QueryValue(t, "SELECT timeline_id FROM pg_control_checkpoint()"))
}
