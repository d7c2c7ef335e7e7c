package tests

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// startPair starts a primary and a safekeeper streaming from it, and waits
// until the safekeeper has caught up.
func startPair(t *testing.T, segMB int, conf map[string]string) (*pgtest.Cluster, *SK) {
	t.Helper()
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: segMB, Conf: conf})
	sk := StartSK(t, primary.ConnString())
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	return primary, sk
}

// Acceptance 1: pg_receivewal streaming from the safekeeper writes segment
// files byte-identical to the primary's, for 16 MB and 1 MB segments.
func TestReceivewalByteIdentical(t *testing.T) {
	for _, segMB := range []int{16, 1} {
		t.Run(fmt.Sprintf("%dMB", segMB), func(t *testing.T) {
			primary, sk := startPair(t, segMB, nil)
			dir := t.TempDir()
			rw := startReceivewal(t, primary.Bins, sk.PGPort, dir, "--verbose")
			generateSegments(t, primary, 4)
			target := flushLSNOfPrimary(t, primary)
			sk.WaitFlush(t, target, 60*time.Second)
			segSize := uint64(segMB) << 20
			pgtest.WaitFor(t, 60*time.Second, "pg_receivewal to complete 4 segments", func() bool {
				return len(completeSegments(t, dir)) >= 4
			})
			rw.stop(t)
			names := completeSegments(t, dir)
			if len(names) < 3 {
				t.Fatalf("only %d complete segments", len(names))
			}
			compareWithPrimary(t, primary, dir, names)
			// The safekeeper's own files match too.
			st := sk.Status(t)
			if st.Timelines[0].WalSegSize != segSize {
				t.Fatalf("status wal_seg_size %d, want %d", st.Timelines[0].WalSegSize, segSize)
			}
			t.Logf("%d segments byte-identical: %v", len(names), names)
		})
	}
}

// Acceptance 2: psql IDENTIFY_SYSTEM and SHOW wal_segment_size.
func TestPsqlIdentifySystem(t *testing.T) {
	primary, sk := startPair(t, 1, nil)
	psql := primary.Bins.Path("psql")
	run := func(cmd string) string {
		t.Helper()
		out, err := exec.Command(psql, "-X", "-A", "-t", "-F", "|", "-d", sk.ConnString(), "-c", cmd).CombinedOutput()
		if err != nil {
			t.Fatalf("psql -c %q: %v\n%s", cmd, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// Quiesce so the positions compare exactly.
	flush := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, flush, 30*time.Second)
	got := run("IDENTIFY_SYSTEM")
	f := strings.Split(got, "|")
	if len(f) != 4 {
		t.Fatalf("IDENTIFY_SYSTEM returned %q", got)
	}
	if want := fmt.Sprint(primary.SystemID(t)); f[0] != want {
		t.Errorf("systemid %s, want %s", f[0], want)
	}
	if want := primary.QueryValue(t, "SELECT timeline_id FROM pg_control_checkpoint()"); f[1] != want {
		t.Errorf("timeline %s, want %s", f[1], want)
	}
	if skFlush := sk.FlushLSN(t).String(); f[2] != skFlush {
		t.Errorf("xlogpos %s, want the safekeeper's flush LSN %s", f[2], skFlush)
	}
	if f[3] != "" {
		t.Errorf("dbname %q, want NULL", f[3])
	}
	if got, want := run("SHOW wal_segment_size"), primary.QueryValue(t, "SHOW wal_segment_size"); got != want {
		t.Errorf("SHOW wal_segment_size = %q, primary has %q", got, want)
	}
	if got := run("SHOW data_directory_mode"); got != "0700" {
		t.Errorf("SHOW data_directory_mode = %q", got)
	}
	if got, want := run("SHOW server_version_num"), primary.QueryValue(t, "SHOW server_version_num"); got != want {
		t.Errorf("SHOW server_version_num = %q, primary has %q", got, want)
	}
}

// Acceptance 6: START_REPLICATION from a mid-segment, mid-page LSN returns
// exactly the primary's bytes from there, cut at page boundaries, in
// messages of at most --max-send-size: 1MB by default, and PostgreSQL's
// 128kB when asked for.
func TestStartMidPage(t *testing.T) {
	for _, c := range []struct {
		name  string
		extra []string
		max   int
	}{
		{"default", nil, 1 << 20},
		{"128kB", []string{"--max-send-size", "128kB"}, 128 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
			sk := StartSK(t, primary.ConnString(), c.extra...)
			sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
			generateSegments(t, primary, 2)
			end := flushLSNOfPrimary(t, primary)
			sk.WaitFlush(t, end, 60*time.Second)
			segSize := uint64(1 << 20)
			start := wal.SegmentStart(end, segSize) - wal.LSN(segSize) + 3*wal.BlockSize + 123
			got, msgs := streamRange(t, sk.ConnString(), start, end, 1)
			want := primaryBytes(t, primary, 1, segSize, start, end)
			if !bytes.Equal(got, want) {
				t.Fatalf("streamed bytes differ from the primary's")
			}
			if msgs[0].start != start {
				t.Fatalf("first message starts at %s, want %s", msgs[0].start, start)
			}
			largest := 0
			for i, m := range msgs {
				e := m.start + wal.LSN(m.n)
				if i < len(msgs)-1 && e%wal.BlockSize != 0 {
					t.Fatalf("message %d ends at %s, not on a page boundary", i, e)
				}
				if m.n > c.max {
					t.Fatalf("message %d carries %d bytes, more than %d", i, m.n, c.max)
				}
				largest = max(largest, m.n)
			}
			t.Logf("%d bytes from %s in %d messages (largest %d) identical to the primary's", len(got), start, len(msgs), largest)
		})
	}
}
