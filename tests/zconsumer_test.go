package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// zconsumer is examples/zconsumer running against a safekeeper.
type zconsumer struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan error
}

// startZConsumer runs examples/zconsumer (built once per run, with the race
// detector) on the safekeeper's timeline, storing into dir.
func startZConsumer(t testing.TB, sk *SK, tenant, timeline, dir, app string, extra ...string) *zconsumer {
	t.Helper()
	bin := buildBinary(t, &zconsumerBinary, "-race")
	args := append([]string{
		"--conn", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable", sk.PGPort),
		"--tenant-id", tenant, "--timeline-id", timeline,
		"--dir", dir, "--application-name", app,
		"--feedback-interval", "200ms", "--log-level", "debug",
	}, extra...)
	cmd := exec.Command(bin, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start zconsumer: %v", err)
	}
	z := &zconsumer{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { z.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-z.done
		z.done <- nil
		if t.Failed() {
			t.Logf("zconsumer %s output:\n%s", app, out.String())
		}
	})
	return z
}

// stop sends SIGTERM and requires a clean exit (status 0).
func (z *zconsumer) stop(t testing.TB) {
	t.Helper()
	_ = z.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-z.done:
		z.done <- nil
		if err != nil {
			t.Fatalf("zconsumer exited with %v on SIGTERM:\n%s", err, z.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("zconsumer did not stop on SIGTERM:\n%s", z.out.String())
	}
}

// zStatus is the part of /v1/status this test reads.
type zStatus struct {
	archStatus
	Retention struct {
		HorizonLSN string `json:"horizon_lsn"`
		HeldBy     string `json:"held_by"`
	} `json:"retention"`
	Consumers []zConsumerStatus `json:"consumers"`
}

type zConsumerStatus struct {
	ApplicationName string `json:"application_name"`
	StartLSN        string `json:"start_lsn"`
	Pageserver      *struct {
		LastReceivedLSN     string `json:"last_received_lsn"`
		DiskConsistentLSN   string `json:"disk_consistent_lsn"`
		RemoteConsistentLSN string `json:"remote_consistent_lsn"`
	} `json:"pageserver_feedback"`
}

func (s *SK) zStatus(t testing.TB) zStatus {
	t.Helper()
	st, err := timelineStatus[zStatus](t, http.DefaultClient, s)
	if err != nil {
		t.Fatalf("GET /v1/status: %v", err)
	}
	return st
}

// consumer returns the connected consumer named app, or nil.
func (s zStatus) consumer(app string) *zConsumerStatus {
	for i := range s.Consumers {
		if s.Consumers[i].ApplicationName == app {
			return &s.Consumers[i]
		}
	}
	return nil
}

// zState reads the example's state file.
func zState(t testing.TB, dir string) (tli uint32, consistent wal.LSN) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "zconsumer.state"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		TLI           uint32 `json:"tli"`
		ConsistentLSN string `json:"consistent_lsn"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state file %s: %v", b, err)
	}
	lsn, err := wal.ParseLSN(st.ConsistentLSN)
	if err != nil {
		t.Fatalf("state file %s: %v", b, err)
	}
	return st.TLI, lsn
}

// Acceptance: a 'z' consumer holds local removal at its
// remote_consistent_lsn while connected; when it leaves, the horizon moves
// on. The consumer is examples/zconsumer with --hold-at pinned at the end
// of WAL when it starts; no archive and --wal-keep-size 0, so nothing else
// holds WAL. It also persists its durable position and resumes from it,
// and the WAL it stored across both runs is byte-identical to the
// primary's.
func TestZConsumerHoldsLocalWAL(t *testing.T) {
	const seg = 1 << 20
	const app = "zconsumer_test"
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := StartSK(t, primary.ConnString(), "--wal-keep-size", "0")
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	st := sk.zStatus(t)
	pin := st.lsn(t, st.FlushLSN)
	dir := filepath.Join(t.TempDir(), "zconsumer")

	z := startZConsumer(t, sk, st.TenantID, st.TimelineID, dir, app, "--hold-at", pin.String())
	pgtest.WaitFor(t, 30*time.Second, "the consumer's 'z' feedback with remote_consistent_lsn "+pin.String(), func() bool {
		c := sk.zStatus(t).consumer(app)
		return c != nil && c.Pageserver != nil && c.Pageserver.RemoteConsistentLSN == pin.String()
	})
	first := st.lsn(t, sk.zStatus(t).consumer(app).StartLSN)
	// A new consumer starts at the start of the segment holding the
	// server's end of WAL (pin, unless the primary wrote more meanwhile).
	if wal.SegmentOffset(first, seg) != 0 || first < wal.SegmentStart(pin, seg) {
		t.Fatalf("a new consumer started at %s, want the start of the segment holding the end of WAL (%s)", first, pin)
	}

	// Several segments later, retention would remove everything before the
	// segment holding the end of WAL, but the consumer holds it at pin.
	generateSegments(t, primary, 4)
	flush := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, flush, 60*time.Second)
	if wal.SegmentStart(flush, seg) <= wal.SegmentStart(pin, seg) {
		t.Fatalf("no new segment: flush %s, pin %s", flush, pin)
	}
	pgtest.WaitFor(t, 30*time.Second, "retention to name the consumer as holder", func() bool {
		return sk.zStatus(t).Retention.HeldBy == "pageserver:"+app
	})
	pgtest.WaitFor(t, 30*time.Second, "the consumer to make everything durable", func() bool {
		c := sk.zStatus(t).consumer(app)
		return c != nil && c.Pageserver != nil && st.lsn(t, c.Pageserver.DiskConsistentLSN) >= flush
	})
	st = sk.zStatus(t)
	c := st.consumer(app)
	if c.Pageserver.RemoteConsistentLSN != pin.String() || st.lsn(t, c.Pageserver.LastReceivedLSN) < flush {
		t.Fatalf("pageserver_feedback %+v; want remote_consistent_lsn %s and last_received_lsn >= %s", *c.Pageserver, pin, flush)
	}
	if st.Retention.HeldBy != "pageserver:"+app || st.Retention.HorizonLSN != pin.String() {
		t.Fatalf("retention held_by %q horizon %s; want pageserver:%s at %s", st.Retention.HeldBy, st.Retention.HorizonLSN, app, pin)
	}
	if ls := st.lsn(t, st.LocalStart); ls > wal.SegmentStart(pin, seg) {
		t.Fatalf("local start %s is past the segment of the consumer's remote_consistent_lsn %s", ls, pin)
	}
	checkLocalConsistent(t, sk, primary)
	held := st.lsn(t, st.LocalStart)

	// The consumer leaves: its hold goes with it.
	z.stop(t)
	tli, saved := zState(t, dir)
	if tli != 1 || saved < flush {
		t.Fatalf("state file after SIGTERM: tli %d consistent_lsn %s; want tli 1 and at least %s", tli, saved, flush)
	}
	if !strings.Contains(z.out.String(), "position saved") {
		t.Fatalf("no \"position saved\" in the consumer's output:\n%s", z.out.String())
	}
	pgtest.WaitFor(t, 30*time.Second, "local start to move past the released segments", func() bool {
		st := sk.zStatus(t)
		return st.consumer(app) == nil && st.lsn(t, st.LocalStart) >= wal.SegmentStart(flush, seg)
	})
	st = sk.zStatus(t)
	if st.Retention.HeldBy == "pageserver:"+app {
		t.Fatalf("retention still names the departed consumer: %+v", st.Retention)
	}
	checkLocalConsistent(t, sk, primary)
	t.Logf("consumer held local WAL at %s (local start %s); after it left the local start moved to %s",
		pin, held, st.LocalStart)

	// Restarted, it resumes from the saved position.
	z = startZConsumer(t, sk, st.TenantID, st.TimelineID, dir, app)
	pgtest.WaitFor(t, 30*time.Second, "the restarted consumer to stream", func() bool {
		return sk.zStatus(t).consumer(app) != nil
	})
	if got := sk.zStatus(t).consumer(app).StartLSN; got != saved.String() {
		t.Fatalf("restarted consumer started at %s, want its saved position %s", got, saved)
	}
	generateSegments(t, primary, 2)
	end := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, end, 60*time.Second)
	pgtest.WaitFor(t, 30*time.Second, "the restarted consumer to make everything durable", func() bool {
		c := sk.zStatus(t).consumer(app)
		return c != nil && c.Pageserver != nil && st.lsn(t, c.Pageserver.DiskConsistentLSN) >= end
	})
	z.stop(t)
	_, final := zState(t, dir)
	if final < end {
		t.Fatalf("saved position %s after the second run, want at least %s", final, end)
	}

	// Everything both runs stored, from the first segment to the saved
	// position, is the primary's WAL.
	names := completeSegments(t, dir)
	if want := int(wal.SegmentNo(final, seg) - wal.SegmentNo(first, seg)); len(names) != want {
		t.Fatalf("%d complete segments in %s, want %d (%s..%s)", len(names), dir, want, first, final)
	}
	for i, name := range names {
		if want := wal.SegmentFileName(1, wal.SegmentNo(first, seg)+uint64(i), seg); name != want {
			t.Fatalf("complete segment %d is %s, want %s", i, name, want)
		}
	}
	compareWithPrimary(t, primary, dir, names)
	partial, err := os.ReadFile(filepath.Join(dir, wal.SegmentFileName(1, wal.SegmentNo(final, seg), seg)+".partial"))
	if err != nil {
		t.Fatal(err)
	}
	if want := primaryBytes(t, primary, 1, seg, wal.SegmentStart(final, seg), final); !bytes.Equal(partial, want) {
		t.Fatalf("the partial segment (%d bytes) differs from the primary's first %d bytes", len(partial), len(want))
	}
	t.Logf("consumer stored %s..%s across two runs (%d complete segments), byte-identical to the primary", first, final, len(names))
}

// examples/zconsumer follows a timeline switch as pg_receivewal does: the
// old timeline's last segment stays .partial, the new timeline is stored
// from the start of the segment holding the switch point, and what it
// stored on both timelines is byte-identical to the primaries' WAL.
func TestZConsumerFollowsTimelineSwitch(t *testing.T) {
	const seg = 1 << 20
	const app = "zconsumer_switch"
	primary, sk := startPair(t, 1, nil)
	st := sk.zStatus(t)
	dir := filepath.Join(t.TempDir(), "zconsumer")
	z := startZConsumer(t, sk, st.TenantID, st.TimelineID, dir, app, "--reconnect-max", "500ms")
	pgtest.WaitFor(t, 30*time.Second, "the consumer to stream", func() bool {
		c := sk.zStatus(t).consumer(app)
		return c != nil && c.Pageserver != nil
	})
	first := st.lsn(t, sk.zStatus(t).consumer(app).StartLSN)
	promoted := pgtest.StartStandby(t, primary, primary.ConnString(), pgtest.Options{})
	generateSegments(t, primary, 2)
	end1 := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, end1, 60*time.Second)
	promoted.WaitForQuery(t, fmt.Sprintf("SELECT pg_last_wal_replay_lsn() >= '%s'", end1), "t", 60*time.Second)

	promoteAndRepoint(t, primary, promoted, sk)
	pgtest.WaitFor(t, 60*time.Second, "safekeeper on timeline 2", func() bool {
		return sk.Status(t).Timelines[0].TLI == 2
	})
	generateSegments(t, promoted, 2)
	end2 := flushLSNOfPrimary(t, promoted)
	sk.WaitFlush(t, end2, 60*time.Second)
	pgtest.WaitFor(t, 60*time.Second, "the consumer to store timeline 2 up to "+end2.String(), func() bool {
		c := sk.zStatus(t).consumer(app)
		return c != nil && c.Pageserver != nil && st.lsn(t, c.Pageserver.DiskConsistentLSN) >= end2
	})
	z.stop(t)
	tli, final := zState(t, dir)
	if tli != 2 || final < end2 {
		t.Fatalf("state after the switch: tli %d consistent_lsn %s; want tli 2 and at least %s", tli, final, end2)
	}
	if !strings.Contains(z.out.String(), "timeline switch") {
		t.Fatalf("the consumer did not log a timeline switch:\n%s", z.out.String())
	}
	hist, err := os.ReadFile(filepath.Join(promoted.WalDir(), "00000002.history"))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := wal.ParseLSN(strings.Fields(string(hist))[1])
	if err != nil {
		t.Fatalf("history %q: %v", hist, err)
	}

	// Complete segments: TLI 1 from the first segment to the one holding
	// the switch point, TLI 2 from that one to the one holding the end.
	tli1, tli2 := segmentsByTLI(t, dir)
	for _, c := range []struct {
		names    []string
		tli      uint32
		from, to uint64
	}{
		{tli1, 1, wal.SegmentNo(first, seg), wal.SegmentNo(sp, seg)},
		{tli2, 2, wal.SegmentNo(sp, seg), wal.SegmentNo(final, seg)},
	} {
		var want []string
		for n := c.from; n < c.to; n++ {
			want = append(want, wal.SegmentFileName(c.tli, n, seg))
		}
		if strings.Join(c.names, " ") != strings.Join(want, " ") {
			t.Fatalf("complete segments on TLI %d: %v, want %v", c.tli, c.names, want)
		}
	}
	if len(tli1) < 2 || len(tli2) < 2 {
		t.Fatalf("too few segments to show anything: TLI 1 %v, TLI 2 %v", tli1, tli2)
	}
	compareWithPrimary(t, primary, dir, tli1)
	compareWithPrimary(t, promoted, dir, tli2)
	for _, p := range []struct {
		c     *pgtest.Cluster
		tli   uint32
		until wal.LSN
	}{{primary, 1, sp}, {promoted, 2, final}} {
		if wal.SegmentOffset(p.until, seg) == 0 {
			continue
		}
		name := wal.SegmentFileName(p.tli, wal.SegmentNo(p.until, seg), seg) + ".partial"
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if want := primaryBytes(t, p.c, p.tli, seg, wal.SegmentStart(p.until, seg), p.until); !bytes.Equal(got, want) {
			t.Fatalf("%s (%d bytes) differs from the server's first %d bytes", name, len(got), len(want))
		}
	}
	t.Logf("switch at %s: TLI 1 %v + .partial, TLI 2 %v up to %s, byte-identical", sp, tli1, tli2, final)
}
