package tests

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/internal/testenv"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// tempFiles lists files named *.tmp under dir.
func tempFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(d.Name(), ".tmp") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A disk that fills up pauses ingest instead of killing the process: the
// node stays up and serves its durable WAL, /readyz, status and a metric
// say why, a restart on the full disk comes up and serves, no temp file
// is left behind, and ingest resumes by itself once space frees; the WAL
// it then holds is byte-identical to the primary's.
func TestDiskFull(t *testing.T) {
	pgtest.Require(t)
	small := testenv.SmallFS(t, 12<<20, 0)
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1, Conf: map[string]string{"wal_keep_size": "1GB"}})
	sk := newSK(t, "safekeeper", primary.ConnString(), nil)
	sk.DataDir = filepath.Join(small, "data")
	sk.Start()
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	st := sk.Status(t)
	tl := st.Timelines[0]
	start, err := wal.ParseLSN(tl.FlushLSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sk.DataDir, walstore.ReserveFileName)); err != nil {
		t.Fatalf("no emergency reserve: %v", err)
	}
	// 12 MiB: 1 MiB of reserve, 5 MiB of ballast the test frees later,
	// 6 MiB for WAL; the primary writes 9 MiB.
	ballast := filepath.Join(small, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 5<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	pid := sk.PID()

	generateSegments(t, primary, 8)
	pgtest.WaitFor(t, 60*time.Second, "/readyz to report the full disk", func() bool {
		code, reasons := sk.readyz(t)
		return code == 503 && len(reasons) == 1 && strings.Contains(reasons[0], "storage full") &&
			strings.Contains(reasons[0], "no space left on device")
	})
	if v, ok := sk.metric(t, "safekeeper_wal_storage_full"); !ok || v != 1 {
		t.Fatalf("safekeeper_wal_storage_full = %v (exported %v), want 1", v, ok)
	}
	if state := sk.Status(t).Timelines[0].Upstream.State; state != "paused: disk full" {
		t.Fatalf("upstream state %q, want paused: disk full", state)
	}
	if sk.PID() != pid {
		t.Fatal("the safekeeper restarted")
	}
	full := sk.FlushLSN(t)
	if full <= start || full >= flushLSNOfPrimary(t, primary) {
		t.Fatalf("durable end %s on the full disk: want between %s and the primary's %s", full, start, flushLSNOfPrimary(t, primary))
	}
	// The durable WAL is served, byte-identical.
	got, _ := streamRange(t, sk.ConnString(), start, full, 1)
	if !bytes.Equal(got, primaryBytes(t, primary, 1, 1<<20, start, full)) {
		t.Fatal("WAL served on the full disk differs from the primary's")
	}
	if tmps := tempFiles(t, sk.DataDir); len(tmps) > 0 {
		t.Fatalf("temp files on the full disk: %v", tmps)
	}

	// A restart on the full disk comes up, serves what it has, and
	// leaves no temp file.
	sk.Kill()
	sk.Start()
	pgtest.WaitFor(t, 60*time.Second, "/readyz to report the full disk after the restart", func() bool {
		code, reasons := sk.readyz(t)
		return code == 503 && len(reasons) == 1 && strings.Contains(reasons[0], "storage full")
	})
	again := sk.FlushLSN(t)
	if again < full {
		t.Fatalf("durable end %s after the restart, before %s", again, full)
	}
	got, _ = streamRange(t, sk.ConnString(), start, again, 1)
	if !bytes.Equal(got, primaryBytes(t, primary, 1, 1<<20, start, again)) {
		t.Fatal("WAL served after the restart on the full disk differs from the primary's")
	}
	if tmps := tempFiles(t, sk.DataDir); len(tmps) > 0 {
		t.Fatalf("temp files after the restart on the full disk: %v", tmps)
	}

	// Space frees: ingest resumes by itself and catches up.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	primary.Exec(t, "INSERT INTO filler(payload) VALUES ('after the disk had room again')")
	end := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, end, 60*time.Second)
	pgtest.WaitFor(t, 30*time.Second, "/readyz to be ready again", func() bool {
		code, _ := sk.readyz(t)
		return code == 200
	})
	if v, ok := sk.metric(t, "safekeeper_wal_storage_full"); !ok || v != 0 {
		t.Fatalf("safekeeper_wal_storage_full = %v (exported %v) after space freed, want 0", v, ok)
	}
	if _, err := os.Stat(filepath.Join(sk.DataDir, walstore.ReserveFileName)); err != nil {
		t.Fatalf("the emergency reserve was not put back: %v", err)
	}
	got, _ = streamRange(t, sk.ConnString(), start, end, 1)
	if !bytes.Equal(got, primaryBytes(t, primary, 1, 1<<20, start, end)) {
		t.Fatal("WAL after the disk-full episode differs from the primary's")
	}
	log, _ := os.ReadFile(sk.logPath)
	for _, line := range []string{"disk full: WAL ingest paused", "space available again: resuming WAL ingest"} {
		if !bytes.Contains(log, []byte(line)) {
			t.Errorf("log lacks %q", line)
		}
	}
}
