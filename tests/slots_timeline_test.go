package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// replQuery runs a replication command on the safekeeper and returns the
// first row (nil values are NULL).
func replQuery(t *testing.T, sk *SK, q string) []*string {
	t.Helper()
	ctx := ctxTimeout(t, 30*time.Second)
	conn, err := pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, q).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		t.Fatalf("%s: want one row, got %+v", q, res)
	}
	out := make([]*string, len(res[0].Rows[0]))
	for i, v := range res[0].Rows[0] {
		if v != nil {
			s := string(v)
			out[i] = &s
		}
	}
	return out
}

func str(p *string) string {
	if p == nil {
		return "NULL"
	}
	return *p
}

// Issue 3 acceptance 1: pg_receivewal --create-slot, streaming with the
// slot, stopped and restarted, resumes where the slot says; --drop-slot
// removes it; READ_REPLICATION_SLOT shows restart LSN and TLI.
func TestSlotWithReceivewal(t *testing.T) {
	primary, sk := startPair(t, 1, nil)
	bins := primary.Bins
	if out, err := runReceivewal(t, bins, sk.PGPort, t.TempDir(), "--slot", "s", "--create-slot"); err != nil {
		t.Fatalf("--create-slot: %v\n%s", err, out)
	}
	if row := replQuery(t, sk, "READ_REPLICATION_SLOT s"); str(row[0]) != "physical" || row[1] != nil || row[2] != nil {
		t.Fatalf("new slot reads %s %s %s, want physical NULL NULL", str(row[0]), str(row[1]), str(row[2]))
	}
	dir := t.TempDir()
	rw := startReceivewal(t, bins, sk.PGPort, dir, "--slot", "s", "--verbose")
	generateSegments(t, primary, 3)
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	pgtest.WaitFor(t, 60*time.Second, "slot restart_lsn to advance", func() bool {
		row := replQuery(t, sk, "READ_REPLICATION_SLOT s")
		return row[1] != nil
	})
	rw.stop(t)
	row := replQuery(t, sk, "READ_REPLICATION_SLOT s")
	if str(row[0]) != "physical" || row[1] == nil || str(row[2]) != "1" {
		t.Fatalf("slot reads %s %s %s", str(row[0]), str(row[1]), str(row[2]))
	}
	restart, err := wal.ParseLSN(*row[1])
	if err != nil {
		t.Fatal(err)
	}
	// Restarted into an empty directory, pg_receivewal asks the slot
	// where to start.
	dir2 := t.TempDir()
	rw2 := startReceivewal(t, bins, sk.PGPort, dir2, "--slot", "s", "--verbose")
	want := fmt.Sprintf("starting log streaming at %s (timeline 1)", wal.SegmentStart(restart, 1<<20))
	pgtest.WaitFor(t, 30*time.Second, "pg_receivewal to report its start", func() bool {
		return strings.Contains(rw2.out.String(), "starting log streaming at")
	})
	if !strings.Contains(rw2.out.String(), want) {
		t.Fatalf("pg_receivewal output %q lacks %q", rw2.out.String(), want)
	}
	// The slot is active now: dropping it fails with PostgreSQL's error.
	ctx := ctxTimeout(t, 10*time.Second)
	conn, err := pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "DROP_REPLICATION_SLOT s").ReadAll()
	conn.Close(ctx)
	if err == nil || !regexp.MustCompile(`replication slot "s" is active for PID \d+`).MatchString(err.Error()) {
		t.Fatalf("dropping an active slot: %v", err)
	}
	rw2.stop(t)

	// Slots survive a restart of the safekeeper.
	sk.Stop()
	sk.Start()
	if row := replQuery(t, sk, "READ_REPLICATION_SLOT s"); str(row[0]) != "physical" || row[1] == nil {
		t.Fatalf("after restart the slot reads %s %s", str(row[0]), str(row[1]))
	}
	if out, err := runReceivewal(t, bins, sk.PGPort, t.TempDir(), "--slot", "s", "--drop-slot"); err != nil {
		t.Fatalf("--drop-slot: %v\n%s", err, out)
	}
	if row := replQuery(t, sk, "READ_REPLICATION_SLOT s"); row[0] != nil {
		t.Fatalf("dropped slot still reads %s", str(row[0]))
	}
	// PostgreSQL's errors for names and duplicates.
	ctx = ctxTimeout(t, 10*time.Second)
	conn, err = pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for q, want := range map[string]string{
		`CREATE_REPLICATION_SLOT "Bad" PHYSICAL`:       `42602 replication slot name "Bad" contains invalid character`,
		"DROP_REPLICATION_SLOT nosuch":                 `42704 replication slot "nosuch" does not exist`,
		"START_REPLICATION SLOT nosuch 0/0 TIMELINE 1": `42704 replication slot "nosuch" does not exist`,
	} {
		_, err := conn.Exec(ctx, q).ReadAll()
		pe, ok := err.(*pgconn.PgError)
		if !ok || pe.Code+" "+pe.Message != want {
			t.Errorf("%s: got %v, want %s", q, err, want)
		}
	}
	if _, err := conn.Exec(ctx, "CREATE_REPLICATION_SLOT dup PHYSICAL (RESERVE_WAL)").ReadAll(); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "CREATE_REPLICATION_SLOT dup PHYSICAL RESERVE_WAL").ReadAll()
	if pe, ok := err.(*pgconn.PgError); !ok || pe.Code != "42710" {
		t.Fatalf("duplicate slot: %v", err)
	}
}

// Issue 3 acceptance 2: promote a standby of the primary (TLI 2) and
// point the safekeeper's upstream at it; the safekeeper continues on TLI 2;
// a pg_receivewal and a hot standby streaming from the safekeeper across the
// switch both end on TLI 2 with byte-identical WAL and the history file,
// and rows written after the promotion reach the standby.
func TestTimelineSwitch(t *testing.T) {
	primary, sk := startPair(t, 1, nil)
	primary.Exec(t, "CREATE TABLE tl(id int primary key, note text)")
	primary.Exec(t, "INSERT INTO tl SELECT g, 'before' FROM generate_series(1, 100) g")
	firstSeg := wal.SegmentNo(sk.FlushLSN(t), 1<<20)
	promoted := pgtest.StartStandby(t, primary, primary.ConnString(), pgtest.Options{})
	hot := pgtest.StartStandby(t, primary, skConninfo(sk), pgtest.Options{Conf: map[string]string{"recovery_target_timeline": "latest"}})
	generateSegments(t, primary, 2)
	end1 := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, end1, 60*time.Second)
	promoted.WaitForQuery(t, fmt.Sprintf("SELECT pg_last_wal_replay_lsn() >= '%s'", end1), "t", 60*time.Second)
	hot.WaitForQuery(t, "SELECT count(*) FROM tl", "100", 60*time.Second)

	// The old primary goes away; the standby is promoted to TLI 2 and the
	// safekeeper is pointed at it.
	promoteAndRepoint(t, primary, promoted, sk)
	pgtest.WaitFor(t, 60*time.Second, "safekeeper on timeline 2", func() bool {
		return sk.Status(t).Timelines[0].TLI == 2
	})
	// Nothing diverged (the safekeeper ended where the promoted standby
	// did): no old-timeline file is set aside as diverged.
	st0 := sk.Status(t).Timelines[0]
	if ents, err := os.ReadDir(filepath.Join(sk.DataDir, st0.TenantID, st0.TimelineID, "diverged")); err == nil {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("nothing diverged, yet these were set aside: %v", names)
	}
	promoted.Exec(t, "INSERT INTO tl SELECT g, 'after' FROM generate_series(101, 150) g")
	generateSegments(t, promoted, 3)
	endpos := flushLSNOfPrimary(t, promoted)
	promoted.Exec(t, "INSERT INTO tl VALUES (1000, 'beyond')")
	sk.WaitFlush(t, flushLSNOfPrimary(t, promoted), 60*time.Second)

	// The hot standby follows through the safekeeper.
	hot.WaitForQuery(t, "SELECT count(*) FROM tl WHERE note = 'after'", "50", 90*time.Second)
	hot.WaitForQuery(t, "SELECT timeline_id FROM pg_control_checkpoint() WHERE timeline_id = 2 UNION ALL SELECT 2 LIMIT 1", "2", 10*time.Second)

	// IDENTIFY_SYSTEM reports TLI 2; TIMELINE_HISTORY serves the file.
	if row := replQuery(t, sk, "IDENTIFY_SYSTEM"); str(row[1]) != "2" {
		t.Fatalf("IDENTIFY_SYSTEM timeline %s, want 2", str(row[1]))
	}
	want, err := os.ReadFile(filepath.Join(promoted.WalDir(), "00000002.history"))
	if err != nil {
		t.Fatal(err)
	}
	if row := replQuery(t, sk, "TIMELINE_HISTORY 2"); str(row[0]) != "00000002.history" || str(row[1]) != string(want) {
		t.Fatalf("TIMELINE_HISTORY 2 = %s %q, want %q", str(row[0]), str(row[1]), want)
	}

	// A start point past the end of TLI 1 is not in this server's history.
	hist := strings.Fields(string(want))
	sp, err := wal.ParseLSN(hist[1])
	if err != nil {
		t.Fatalf("history %q: %v", want, err)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	rc, err := pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	_, err = rc.Exec(ctx, fmt.Sprintf("START_REPLICATION %s TIMELINE 1", sp+wal.BlockSize)).ReadAll()
	rc.Close(ctx)
	pe, ok := err.(*pgconn.PgError)
	wantMsg := fmt.Sprintf("requested starting point %s on timeline 1 is not in this server's history", sp+wal.BlockSize)
	wantDetail := fmt.Sprintf("This server's history forked from timeline 1 at %s.", sp)
	if !ok || pe.Code != "XX000" || pe.Message != wantMsg || pe.Detail != wantDetail {
		t.Fatalf("start past the switch point on TLI 1: got %v, want XX000 %q / %q", err, wantMsg, wantDetail)
	}

	// pg_receivewal from the first segment on TLI 1 crosses the switch.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, wal.SegmentFileName(1, firstSeg, 1<<20)+".partial"), nil, 0o600)
	out, err := runReceivewal(t, primary.Bins, sk.PGPort, dir, "--endpos", endpos.String(), "--verbose")
	if err != nil {
		t.Fatalf("pg_receivewal across the switch: %v\n%s", err, out)
	}
	if !strings.Contains(out, "switched to timeline 2") {
		t.Fatalf("pg_receivewal did not switch timelines:\n%s", out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "00000002.history"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("history file %q (%v), want %q", got, err, want)
	}
	tli1, tli2 := segmentsByTLI(t, dir)
	if len(tli1) < 2 || len(tli2) < 2 {
		t.Fatalf("complete segments: TLI 1 %v, TLI 2 %v", tli1, tli2)
	}
	compareWithPrimary(t, primary, dir, tli1)
	compareWithPrimary(t, promoted, dir, tli2)
	t.Logf("byte-identical: TLI 1 %v, TLI 2 %v", tli1, tli2)

	// Once retention removed the segment holding the switch point, a
	// request on TLI 1 inside it gets PostgreSQL's 58P01 naming the
	// segment as the walsender reads it: the new timeline's file.
	sk.Stop()
	sk.Extra = append(sk.Extra, "--wal-keep-size", "0")
	sk.Start()
	switchSeg := wal.SegmentNo(sp, 1<<20)
	generateSegments(t, promoted, 2)
	pgtest.WaitFor(t, 60*time.Second, "retention to remove the switch segment", func() bool {
		st, err := timelineStatus[struct {
			LocalStart string `json:"local_start_lsn"`
		}](t, http.DefaultClient, sk)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := wal.ParseLSN(st.LocalStart)
		return err == nil && wal.SegmentNo(ls, 1<<20) > switchSeg
	})
	ctx = ctxTimeout(t, 10*time.Second)
	rc, err = pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	_, err = rc.Exec(ctx, fmt.Sprintf("START_REPLICATION %s TIMELINE 1", wal.SegmentStart(sp, 1<<20))).ReadAll()
	rc.Close(ctx)
	wantGone := fmt.Sprintf("requested WAL segment %s has already been removed", wal.SegmentFileName(2, switchSeg, 1<<20))
	if pe, ok := err.(*pgconn.PgError); !ok || pe.Code != "58P01" || pe.Message != wantGone {
		t.Fatalf("START_REPLICATION on TLI 1 in the removed switch segment: %v; want 58P01 %q", err, wantGone)
	}
}

// Issue 3 acceptance 4: a standby streaming from the safekeeper with
// hot_standby_feedback=on runs a long query while the rows it reads are
// deleted and vacuumed on the primary: the query is not cancelled, and the
// primary shows the forwarded xmin.
func TestHotStandbyFeedbackForwarded(t *testing.T) {
	primary, sk := startPair(t, 1, nil)
	primary.Exec(t, "CREATE TABLE hs(id int primary key, pad text)")
	primary.Exec(t, "INSERT INTO hs SELECT g, repeat('x', 100) FROM generate_series(1, 10000) g")
	standby := pgtest.StartStandby(t, primary, skConninfo(sk), pgtest.Options{Conf: map[string]string{
		"hot_standby_feedback":         "on",
		"wal_receiver_status_interval": "1s",
		"max_standby_streaming_delay":  "1s",
	}})
	standby.WaitForQuery(t, "SELECT count(*) FROM hs", "10000", 60*time.Second)
	defer func() {
		if t.Failed() {
			st := sk.Status(t)
			t.Logf("consumers: %+v", st.Timelines[0].Consumers)
			for _, c := range st.Timelines[0].Consumers {
				if c.HotStandby != nil {
					t.Logf("consumer %s hot standby xmin %d", c.ApplicationName, c.HotStandby.Xmin)
				}
			}
		}
	}()
	pgtest.WaitFor(t, 60*time.Second, "the primary to see the forwarded xmin", func() bool {
		v, err := primary.TryQueryValue(context.Background(),
			"SELECT backend_xmin IS NOT NULL FROM pg_stat_replication WHERE application_name = 'safekeeper'")
		return err == nil && v == "t"
	})

	// A long-running transaction on the standby holds a snapshot.
	ctx := ctxTimeout(t, 120*time.Second)
	conn, err := pgconn.Connect(ctx, standby.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM hs").ReadAll(); err != nil {
		t.Fatal(err)
	}
	primary.Exec(t, "DELETE FROM hs")
	primary.Exec(t, "VACUUM hs")
	lsn := flushLSNOfPrimary(t, primary)
	standby.WaitForQuery(t, fmt.Sprintf("SELECT pg_last_wal_replay_lsn() >= '%s'", lsn), "t", 60*time.Second)
	time.Sleep(3 * time.Second) // past max_standby_streaming_delay
	res, err := conn.Exec(ctx, "SELECT count(*) FROM hs").ReadAll()
	if err != nil {
		t.Fatalf("the standby's query was cancelled: %v", err)
	}
	if got := string(res[0].Rows[0][0]); got != "10000" {
		t.Fatalf("the snapshot sees %s rows, want 10000", got)
	}
	conn.Exec(ctx, "COMMIT").ReadAll()
	// Once the standby leaves, its feedback is dropped.
	standby.Stop(t, "fast")
	pgtest.WaitFor(t, 60*time.Second, "the forwarded xmin to be released", func() bool {
		v, err := primary.TryQueryValue(context.Background(),
			"SELECT backend_xmin IS NULL FROM pg_stat_replication WHERE application_name = 'safekeeper'")
		return err == nil && v == "t"
	})
}

// A slot further behind than --max-slot-wal-keep-size is reported lost in
// /v1/status and in the metrics, not silently kept or dropped.
func TestSlotLostIsReported(t *testing.T) {
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := StartSK(t, primary.ConnString(), "--max-slot-wal-keep-size", "2MB")
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	replQuery(t, sk, "CREATE_REPLICATION_SLOT lagging PHYSICAL (RESERVE_WAL)")
	slotState := func() string {
		resp, err := http.Get(sk.url("/v1/status"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct {
			Timelines []struct {
				Slots []struct {
					Name      string `json:"slot_name"`
					WALStatus string `json:"wal_status"`
				} `json:"replication_slots"`
			} `json:"timelines"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Timelines[0].Slots {
			if s.Name == "lagging" {
				return s.WALStatus
			}
		}
		return "missing"
	}
	if got := slotState(); got != "reserved" {
		t.Fatalf("fresh slot wal_status %q, want reserved", got)
	}
	generateSegments(t, primary, 4)
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	if got := slotState(); got != "lost" {
		t.Fatalf("slot 4 segments behind a 2MB cap: wal_status %q, want lost", got)
	}
	if v, ok := sk.metricWith(t, "safekeeper_slot_lost{", `slot="lagging"`); !ok || v != 1 {
		t.Fatalf("/metrics does not report the lost slot: %v %v", v, ok)
	}
	if _, ok := sk.metricWith(t, "safekeeper_slot_lost{", `tenant_id="`); !ok {
		t.Fatal("safekeeper_slot_lost lacks the timeline's labels")
	}
}
