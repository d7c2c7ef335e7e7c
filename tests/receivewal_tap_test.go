package tests

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// TestReceivewalTAP replays PostgreSQL's
// src/bin/pg_basebackup/t/020_pg_receivewal.pl (protocol.md §6, steps 1-20)
// with the real pg_receivewal against a safekeeper instead of the primary.
// The steps run in the TAP test's order on one primary (1 MB segments) and
// one safekeeper streaming from it, because later steps build on the files
// and WAL of earlier ones; each step is a subtest named after its number.
// A step whose prerequisite failed fails with "blocked by step N" rather
// than being skipped.
//
// Differences from the TAP test, all dictated by the server being a
// safekeeper (protocol.md §6 "Notes for replaying these against a custom
// server"):
//   - pg_receivewal connects to the safekeeper; WAL is generated on the
//     safekeeper's upstream, and before every --endpos run the test checks
//     that the safekeeper holds WAL beyond endpos.
//   - Slots are inspected with READ_REPLICATION_SLOT on the safekeeper
//     instead of pg_replication_slots.
//   - Step 16 creates archive_slot with CREATE_REPLICATION_SLOT ...
//     (RESERVE_WAL) on the safekeeper instead of SQL on the primary.
//   - Steps 19/20: the TAP test promotes a standby and runs pg_receivewal
//     against it. Here the old primary is stopped, the standby promoted
//     (timeline 2) and the same safekeeper repointed at it; archive_slot is
//     created on the safekeeper before the promotion and pg_receivewal
//     streams through the timeline switch from the safekeeper.
func TestReceivewalTAP(t *testing.T) {
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	bins := primary.Bins
	bins.Need(t, "pg_receivewal")
	sk := StartSK(t, primary.ConnString())
	sk.WaitFlush(t, tapQueryLSN(t, primary, "SELECT pg_current_wal_flush_lsn()"), 60*time.Second)
	t.Logf("pg_receivewal %s; primary on port %d; safekeeper on port %d", bins.Version(), primary.Port, sk.PGPort)

	base := t.TempDir()
	streamDir := tapMkdir(t, base, "archive_wal")
	run := func(args ...string) tapResult { return tapReceivewal(bins, sk.PGPort, args...) }
	// passed records which steps passed, for "blocked by" messages.
	passed := map[int]bool{}
	step := func(n int, name string, fn func(t *testing.T)) {
		passed[n] = t.Run(fmt.Sprintf("%02d_%s", n, name), fn)
	}
	requireStep := func(t *testing.T, n int, why string) {
		t.Helper()
		if !passed[n] {
			t.Fatalf("blocked by step %d, which failed: %s", n, why)
		}
	}

	// ---- 1-8: option handling, client-only (never connects) ----

	step(1, "help", func(t *testing.T) {
		// program_help_ok: exit 0, output on stdout, nothing on stderr.
		r := run("--help")
		if r.code != 0 || strings.TrimSpace(r.stdout) == "" || r.stderr != "" {
			t.Fatalf("want exit 0, non-empty stdout, empty stderr:\n%s", r)
		}
	})
	step(2, "version", func(t *testing.T) {
		// program_version_ok: exit 0, output on stdout, nothing on stderr.
		r := run("--version")
		if r.code != 0 || strings.TrimSpace(r.stdout) == "" || r.stderr != "" {
			t.Fatalf("want exit 0, non-empty stdout, empty stderr:\n%s", r)
		}
	})
	step(3, "invalid_option", func(t *testing.T) {
		// program_options_handling_ok: fails, and says why on stderr.
		r := run("--not-a-valid-option")
		if tapCommandFails(t, "invalid option", r) && strings.TrimSpace(r.stderr) == "" {
			t.Fatalf("invalid option printed no error message:\n%s", r)
		}
	})
	clientOnly := []struct {
		n    int
		name string
		args []string
		want string
	}{
		{4, "no_target_directory", nil,
			"pg_receivewal: error: no target directory specified"},
		{5, "create_slot_with_drop_slot", []string{"-D", streamDir, "--create-slot", "--drop-slot"},
			"pg_receivewal: error: cannot use --create-slot together with --drop-slot"},
		{6, "create_slot_without_slot", []string{"-D", streamDir, "--create-slot"},
			"pg_receivewal: error: --create-slot needs a slot to be specified using --slot"},
		{7, "synchronous_with_no_sync", []string{"-D", streamDir, "--synchronous", "--no-sync"},
			"pg_receivewal: error: cannot use --synchronous together with --no-sync"},
		{8, "compress_none_with_level", []string{"-D", streamDir, "--compress", "none:1"},
			`pg_receivewal: error: invalid compression specification: compression algorithm "none" does not accept a compression level`},
	}
	for _, c := range clientOnly {
		step(c.n, c.name, func(t *testing.T) {
			r := run(c.args...)
			if !tapCommandFails(t, c.name, r) {
				return
			}
			// Step 8 is command_fails_like in the TAP test; for 4-7 the
			// message (protocol.md §4.1) is an extra check.
			if !strings.Contains(r.stderr, c.want) {
				t.Errorf("stderr does not contain %q:\n%s", c.want, r)
			}
			if ls := tapGlob(t, streamDir, "*"); len(ls) != 0 {
				t.Errorf("a client-only failure wrote into the target directory: %v", ls)
			}
		})
	}

	// ---- 9-10: slot creation and drop with pg_receivewal ----

	step(9, "create_slot", func(t *testing.T) {
		r := run("--slot", "test", "--create-slot")
		if !tapCommandOK(t, "creating a replication slot", r) {
			t.FailNow()
		}
		// TAP: slot_type physical, restart_lsn NULL (no RESERVE_WAL).
		s, err := tapReadSlot(sk, "test")
		if err != nil {
			t.Fatal(err)
		}
		if s.Type == nil || *s.Type != "physical" || s.RestartLSN != nil || s.RestartTLI != nil {
			t.Fatalf("after --create-slot, READ_REPLICATION_SLOT test = %s; want ('physical', NULL, NULL): "+
				"a physical replication slot was created without reserved WAL", s)
		}
	})
	step(10, "drop_slot", func(t *testing.T) {
		r := run("--slot", "test", "--drop-slot")
		if !tapCommandOK(t, "dropping a replication slot", r) {
			t.FailNow()
		}
		s, err := tapReadSlot(sk, "test")
		if err != nil {
			t.Fatal(err)
		}
		if s.Type != nil || s.RestartLSN != nil || s.RestartTLI != nil {
			t.Fatalf("after --drop-slot, READ_REPLICATION_SLOT test = %s; want (NULL, NULL, NULL): the slot was not removed", s)
		}
	})

	// ---- 11-15: streaming into stream_dir, resuming from .partial ----

	// partialWals is the TAP test's @partial_wals: the one partial segment
	// the latest run left, whose base name the next run must complete.
	var partialWals []string
	step(11, "stream_synchronous", func(t *testing.T) {
		// "Switch to the next segment first so that subsequent restarts of
		// pg_receivewal will see this segment as full."
		primary.Exec(t, "CREATE TABLE test_table(x integer PRIMARY KEY)")
		nextlsn, flushed := tapSwitchAndInsert(t, primary, 1)
		tapRequireBeyond(t, sk, nextlsn, flushed, 60*time.Second)
		// With an empty directory pg_receivewal starts at the segment of
		// IDENTIFY_SYSTEM's xlogpos (the safekeeper's flush LSN, in the
		// segment that nextlsn opened), so endpos >= startpos and it
		// streams that segment up to past nextlsn, leaving it .partial.
		r := run("-D", streamDir, "--verbose", "--endpos", nextlsn.String(), "--synchronous", "--no-loop")
		if !tapCommandOK(t, "streaming some WAL with --synchronous", r) {
			t.FailNow()
		}
		partialWals = tapGlob(t, streamDir, "*.partial")
		if len(partialWals) != 1 {
			t.Fatalf("one partial WAL segment was created: found %d *.partial in %s: %s", len(partialWals), streamDir, tapListing(streamDir))
		}
		if want := wal.SegmentFileName(1, wal.SegmentNo(nextlsn, tapSegSize), tapSegSize) + ".partial"; partialWals[0] != want {
			t.Errorf("the partial segment is %s, want %s (the segment holding nextlsn %s, where the stream started)", partialWals[0], want, nextlsn)
		}
	})

	compressed := []struct {
		n        int
		name     string
		spec     string // --compress value
		ext      string
		value    int
		prevExt  *regexp.Regexp
		checkCmd []string // integrity check program and its option
	}{
		{12, "compress_gzip", "gzip:1", ".gz", 2, regexp.MustCompile(`\.partial$`), []string{"gzip", "--test"}},
		{13, "compress_lz4", "lz4", ".lz4", 3, regexp.MustCompile(`(\.gz)?\.partial$`), []string{"lz4", "-t"}},
	}
	for _, c := range compressed {
		step(c.n, c.name, func(t *testing.T) {
			ok, evidence := tapCompression(t, bins, c.spec)
			if !ok {
				// The TAP test skips this step when PostgreSQL was built
				// without the library; that is a property of the client
				// build, not of the server, so the step is reported as not
				// applicable (and passes) instead of being skipped.
				t.Logf("NOT APPLICABLE (TAP step %d): this pg_receivewal cannot write --compress %s: %s", c.n, c.spec, evidence)
				return
			}
			requireStep(t, 11, "no partial segment to resume from")
			if len(partialWals) != 1 {
				t.Fatalf("blocked: the previous step left %d partial segments (%v), want 1", len(partialWals), partialWals)
			}
			nextlsn, flushed := tapSwitchAndInsert(t, primary, c.value)
			tapRequireBeyond(t, sk, nextlsn, flushed, 60*time.Second)
			args := []string{"-D", streamDir, "--verbose", "--endpos", nextlsn.String(), "--compress", c.spec, "--no-loop"}
			if c.n == 13 { // the TAP test's argument order for lz4
				args = []string{"-D", streamDir, "--verbose", "--endpos", nextlsn.String(), "--no-loop", "--compress", c.spec}
			}
			r := run(args...)
			if !tapCommandOK(t, "streaming some WAL using --compress "+c.spec, r) {
				t.FailNow()
			}
			done := tapGlob(t, streamDir, "*"+c.ext)
			partial := tapGlob(t, streamDir, "*"+c.ext+".partial")
			if len(done) != 1 || len(partial) != 1 {
				t.Fatalf("want one *%s and one *%s.partial, found %v and %v in %s", c.ext, c.ext, done, partial, tapListing(streamDir))
			}
			// "The name of the previous partial, now-completed WAL segment
			// is updated, keeping its base number."
			if want := c.prevExt.ReplaceAllString(partialWals[0], c.ext); done[0] != want {
				t.Errorf("the completed segment is %s, want %s: pg_receivewal did not resume at the previous partial segment %s", done[0], want, partialWals[0])
			}
			partialWals = partial
			prog, err := exec.LookPath(c.checkCmd[0])
			if err != nil {
				t.Logf("NOT APPLICABLE: integrity check with %s (program not found)", c.checkCmd[0])
				return
			}
			if out, err := exec.Command(prog, c.checkCmd[1], filepath.Join(streamDir, done[0])).CombinedOutput(); err != nil {
				t.Errorf("%s %s %s: %v\n%s", c.checkCmd[0], c.checkCmd[1], done[0], err, out)
			}
		})
	}

	step(14, "resume_uncompressed", func(t *testing.T) {
		requireStep(t, 11, "no partial segment to resume from")
		if len(partialWals) != 1 {
			t.Fatalf("blocked: steps 11-13 left %d partial segments (%v), want 1", len(partialWals), partialWals)
		}
		nextlsn, flushed := tapSwitchAndInsert(t, primary, 4)
		tapRequireBeyond(t, sk, nextlsn, flushed, 60*time.Second)
		r := run("-D", streamDir, "--verbose", "--endpos", nextlsn.String(), "--no-loop")
		if !tapCommandOK(t, "streaming some WAL", r) {
			t.FailNow()
		}
		name := regexp.MustCompile(`(\.gz|\.lz4)?\.partial$`).ReplaceAllString(partialWals[0], "")
		if !tapExists(streamDir, name) {
			t.Fatalf("previously partial WAL %s is not complete: no %s in %s", partialWals[0], name, tapListing(streamDir))
		}
		// Extra: the completed segment is the primary's, byte for byte.
		tapSameAsServer(t, primary, streamDir, name)
	})

	step(15, "permissions", func(t *testing.T) {
		// data_directory_mode 0700 -> directories 0700, files 0600.
		if bad := tapModeViolations(streamDir, 0o700, 0o600); len(bad) != 0 {
			t.Fatalf("stream dir permissions:\n%s", strings.Join(bad, "\n"))
		}
	})

	// ---- 16-18: a slot as the starting point ----

	slotDir := tapMkdir(t, base, "slot_wal")
	var (
		slotNextLSN     wal.LSN
		slotRestart     wal.LSN
		slotTLI         uint32
		walfileStreamed string
		slotCreated     bool
	)
	step(16, "slot_setup", func(t *testing.T) {
		primary.Exec(t, "CHECKPOINT")
		// TAP: SELECT pg_create_physical_replication_slot('archive_slot', true)
		// on the primary, i.e. a physical slot with WAL reserved at creation.
		if err := tapCreateReservedSlot(sk, "archive_slot"); err != nil {
			t.Errorf("creating archive_slot with reserved WAL on the safekeeper: %v", err)
		} else if s, err := tapReadSlot(sk, "archive_slot"); err != nil {
			t.Error(err)
		} else if s.Type == nil || *s.Type != "physical" || s.RestartLSN == nil || s.RestartTLI == nil {
			t.Errorf("READ_REPLICATION_SLOT archive_slot = %s; want ('physical', <restart_lsn>, <restart_tli>) for a slot created with RESERVE_WAL", s)
		} else {
			lsn, err1 := wal.ParseLSN(*s.RestartLSN)
			tli, err2 := strconv.ParseUint(*s.RestartTLI, 10, 32)
			switch {
			case err1 != nil || err2 != nil || tli == 0:
				t.Errorf("READ_REPLICATION_SLOT archive_slot = %s: unparsable restart position", s)
			case lsn > sk.FlushLSN(t):
				t.Errorf("archive_slot's restart_lsn %s is beyond the safekeeper's flush LSN %s", lsn, sk.FlushLSN(t))
			default:
				slotRestart, slotTLI, slotCreated = lsn, uint32(tli), true
				walfileStreamed = wal.SegmentFileName(slotTLI, wal.SegmentNo(lsn, tapSegSize), tapSegSize)
				// The TAP test names the file with pg_walfile_name on its
				// server. pg_walfile_name names the segment of the byte
				// *before* its argument (XLByteToPrevSeg), which differs
				// from pg_receivewal's start segment when restart_lsn is a
				// segment boundary (PostgreSQL's redo pointer never is; a
				// safekeeper's restart_lsn may be), hence the + 1.
				if want := primary.QueryValue(t, fmt.Sprintf("SELECT pg_walfile_name('%s'::pg_lsn + 1)", lsn)); want != walfileStreamed {
					t.Errorf("segment of restart_lsn %s on timeline %d is %s, but pg_walfile_name says %s", lsn, tli, walfileStreamed, want)
				}
				t.Logf("archive_slot: %s -> walfile_streamed %s", s, walfileStreamed)
			}
		}
		// "Switch to a new segment, to make sure that the segment retained
		// by the slot is still streamed."
		tapEnsureTable(t, primary)
		primary.Exec(t, "INSERT INTO test_table VALUES (5)")
		var flushed wal.LSN
		slotNextLSN, flushed = tapSwitchAndInsert(t, primary, 6)
		tapRequireBeyond(t, sk, slotNextLSN, flushed, 60*time.Second)
	})

	step(17, "nonexistent_slot", func(t *testing.T) {
		if slotNextLSN == 0 {
			t.Fatal("blocked by step 16: no WAL was generated")
		}
		r := run("-D", slotDir, "--slot", "nonexistentslot", "-n", "--no-sync", "--verbose", "--endpos", slotNextLSN.String())
		if !tapCommandFails(t, "pg_receivewal fails with non-existing slot", r) {
			return
		}
		if re := regexp.MustCompile(`pg_receivewal: error: replication slot "nonexistentslot" does not exist`); !re.MatchString(r.stderr) {
			t.Errorf("stderr does not match %s:\n%s", re, r)
		}
		// Extra (§6 step 17): what the step relies on, a server_version
		// of 15 or later (else pg_receivewal never sends
		// READ_REPLICATION_SLOT) and an all-NULL row for a missing slot.
		if v, err := tapServerVersion(sk); err != nil {
			t.Error(err)
		} else if v < 15 {
			t.Errorf("the safekeeper reports server_version major %d; pg_receivewal reads slots only from 15 on", v)
		}
		if s, err := tapReadSlot(sk, "nonexistentslot"); err != nil {
			t.Error(err)
		} else if s.Type != nil || s.RestartLSN != nil || s.RestartTLI != nil {
			t.Errorf("READ_REPLICATION_SLOT nonexistentslot = %s; want (NULL, NULL, NULL)", s)
		}
	})

	step(18, "stream_from_slot", func(t *testing.T) {
		if !slotCreated {
			t.Fatal("blocked by step 16: archive_slot with reserved WAL could not be created on the safekeeper")
		}
		r := run("-D", slotDir, "--slot", "archive_slot", "-n", "--no-sync", "--verbose", "--endpos", slotNextLSN.String())
		if !tapCommandOK(t, "WAL streamed from the slot's restart_lsn", r) {
			t.FailNow()
		}
		if !tapExists(slotDir, walfileStreamed) {
			t.Errorf("WAL from the slot's restart_lsn has not been archived: no %s in %s", walfileStreamed, tapListing(slotDir))
		}
		// Extra: streaming started at the segment of restart_lsn, on restart_tli.
		want := fmt.Sprintf("starting log streaming at %s (timeline %d)", wal.SegmentStart(slotRestart, tapSegSize), slotTLI)
		if !strings.Contains(r.stderr, want) {
			t.Errorf("pg_receivewal did not report %q (start at the slot's restart position):\n%s", want, r)
		}
		// Extra (§3.5): the slot survived the session, and its restart_lsn
		// follows the flush positions pg_receivewal reported, which lie
		// between its start (the segment start of the old restart_lsn: as
		// in PostgreSQL the slot may move back to it) and where it stopped.
		start := wal.SegmentStart(slotRestart, tapSegSize)
		stop := start
		if m := regexp.MustCompile(`stopped log streaming at ([0-9A-F]+/[0-9A-F]+)`).FindStringSubmatch(r.stderr); m != nil {
			stop, _ = wal.ParseLSN(m[1])
		}
		if s, err := tapReadSlot(sk, "archive_slot"); err != nil {
			t.Error(err)
		} else if s.Type == nil || *s.Type != "physical" || s.RestartLSN == nil {
			t.Errorf("after streaming with it, READ_REPLICATION_SLOT archive_slot = %s; want ('physical', <restart_lsn>, <tli>)", s)
		} else if lsn, err := wal.ParseLSN(*s.RestartLSN); err != nil || lsn < start || lsn > stop {
			t.Errorf("after streaming with it, archive_slot's restart_lsn is %s; want a flush position pg_receivewal reported, in [%s, %s]", *s.RestartLSN, start, stop)
		} else {
			t.Logf("archive_slot after streaming: %s", s)
		}
	})

	// ---- 19-20: timeline switch ----

	var (
		standby          *pgtest.Cluster
		tlNextLSN        wal.LSN
		tlSlotRestart    wal.LSN
		walfileBefore    string
		walfileAfter     string
		tlSlotCreated    bool
		switchpoint      wal.LSN
		standbyHistory   []byte
		skFollowedSwitch bool
	)
	// The standby must outlive step 19 (pgtest stops and removes a cluster
	// when the test that started it ends), so the parent test starts it:
	// "base backup, then a standby with streaming".
	standby = pgtest.StartStandby(t, primary,
		fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=tap_standby", primary.Port), pgtest.Options{})
	step(19, "timeline_switch_setup", func(t *testing.T) {
		tapWithSKTest(sk, t, func() {
			// The TAP test creates archive_slot on the standby, a server of
			// its own; here it lives on the safekeeper, which still holds
			// step 16's archive_slot, so that one is dropped first.
			if _, err := tapReplExec(sk, "DROP_REPLICATION_SLOT archive_slot"); err != nil {
				var pe *pgconn.PgError
				if !(errors.As(err, &pe) && pe.Code == "42704") {
					t.Errorf("DROP_REPLICATION_SLOT archive_slot: %v", err)
				}
			}
			if err := tapCreateReservedSlot(sk, "archive_slot"); err != nil {
				t.Errorf("creating archive_slot with reserved WAL on the safekeeper before the promotion: %v", err)
			} else if s, err := tapReadSlot(sk, "archive_slot"); err != nil {
				t.Error(err)
			} else if s.Type == nil || *s.Type != "physical" || s.RestartLSN == nil || s.RestartTLI == nil || *s.RestartTLI != "1" {
				t.Errorf("READ_REPLICATION_SLOT archive_slot = %s; want ('physical', <restart_lsn>, 1)", s)
			} else if lsn, err := wal.ParseLSN(*s.RestartLSN); err != nil {
				t.Errorf("READ_REPLICATION_SLOT archive_slot = %s: %v", s, err)
			} else {
				tlSlotRestart, tlSlotCreated = lsn, true
				// pg_walfile_name() on the primary: the TLI-1 name (+ 1:
				// see step 16).
				walfileBefore = primary.QueryValue(t, fmt.Sprintf("SELECT pg_walfile_name('%s'::pg_lsn + 1)", lsn))
				if want := wal.SegmentFileName(1, wal.SegmentNo(lsn, tapSegSize), tapSegSize); walfileBefore != want {
					t.Errorf("pg_walfile_name says %s for restart_lsn %s, want %s", walfileBefore, lsn, want)
				}
				t.Logf("archive_slot before promotion: %s -> walfile_before_promotion %s", s, walfileBefore)
			}
			// In the TAP test the slot's restart_lsn (the standby's redo
			// pointer) lies in a segment the base backup completed; switch
			// here so that walfile_before_promotion is likewise a complete
			// TLI-1 segment, not the one the promotion cuts.
			tapEnsureTable(t, primary)
			primary.Exec(t, "INSERT INTO test_table VALUES (100)")
			primary.Exec(t, "SELECT pg_switch_wal()")

			// wait_for_catchup
			flush := tapQueryLSN(t, primary, "SELECT pg_current_wal_flush_lsn()")
			standby.WaitForQuery(t, fmt.Sprintf("SELECT pg_last_wal_replay_lsn() >= '%s'::pg_lsn", flush), "t", 90*time.Second)
			sk.WaitFlush(t, flush, 60*time.Second)

			// Only the promoted standby may write from here on: stop the
			// old primary (fast: its walsenders ship the shutdown
			// checkpoint to the standby and the safekeeper first).
			primary.Stop(t, "fast")
			recv := func() wal.LSN {
				v := standby.QueryValue(t, "SELECT pg_last_wal_receive_lsn()")
				lsn, err := wal.ParseLSN(v)
				if err != nil {
					t.Fatalf("standby receive LSN %q: %v", v, err)
				}
				return lsn
			}
			deadline := time.Now().Add(30 * time.Second)
			for sk.FlushLSN(t) < recv() && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("end of timeline 1: safekeeper flush %s, standby received %s", sk.FlushLSN(t), recv())

			// Repoint the same safekeeper at the promoted standby.
			sk.Stop()
			standby.Promote(t)
			standby.WaitForQuery(t, "SELECT pg_is_in_recovery()", "f", 60*time.Second)
			sk.Upstream = standby.ConnString()
			sk.Start()

			walfileAfter = standby.QueryValue(t, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
			standby.Exec(t, "INSERT INTO test_table VALUES (7)")
			var flushed wal.LSN
			tlNextLSN, flushed = tapSwitchAndInsert(t, standby, 8)
			t.Logf("walfile_after_promotion %s; nextlsn %s", walfileAfter, tlNextLSN)

			var err error
			standbyHistory, err = os.ReadFile(filepath.Join(standby.WalDir(), "00000002.history"))
			if err != nil {
				t.Fatalf("promoted standby's history file: %v", err)
			}
			hist, err := wal.ParseHistory(standbyHistory, 2)
			if err != nil || len(hist) != 2 {
				t.Fatalf("promoted standby's 00000002.history %q: %v", standbyHistory, err)
			}
			switchpoint = hist[0].End

			// The safekeeper follows its upstream onto timeline 2 and has
			// WAL beyond nextlsn on it.
			for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				tl := sk.Status(t).Timelines[0]
				lsn, err := wal.ParseLSN(tl.FlushLSN)
				if err == nil && tl.TLI == 2 && lsn >= flushed {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the safekeeper did not follow its promoted upstream within 90s: /v1/status has tli %d, flush_lsn %s, upstream state %q; "+
						"want tli 2 and flush_lsn >= %s (beyond nextlsn %s on the new timeline, switch point %s)",
						tl.TLI, tl.FlushLSN, tl.Upstream.State, flushed, tlNextLSN, switchpoint)
				}
			}
			skFollowedSwitch = true

			// Extra: the slot persisted across the safekeeper's restart,
			// and restart_tli comes from the new history (§2.6, §3.5).
			if tlSlotCreated {
				if s, err := tapReadSlot(sk, "archive_slot"); err != nil {
					t.Error(err)
				} else if s.Type == nil || s.RestartLSN == nil || *s.RestartLSN != tlSlotRestart.String() || s.RestartTLI == nil || *s.RestartTLI != "1" {
					t.Errorf("after the safekeeper's restart and the switch to timeline 2, READ_REPLICATION_SLOT archive_slot = %s; want ('physical', %q, 1)", s, tlSlotRestart)
				}
			}
			// Extra: TIMELINE_HISTORY 2 serves the upstream's history file.
			if res, err := tapReplExec(sk, "TIMELINE_HISTORY 2"); err != nil {
				t.Errorf("TIMELINE_HISTORY 2 on the safekeeper: %v", err)
			} else if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 2 ||
				string(res[0].Rows[0][0]) != "00000002.history" || !bytes.Equal(res[0].Rows[0][1], standbyHistory) {
				t.Errorf("TIMELINE_HISTORY 2 on the safekeeper returned %s; want (\"00000002.history\", %q)", tapDescribe(res), standbyHistory)
			}
		})
	})

	step(20, "timeline_switch_stream", func(t *testing.T) {
		if !skFollowedSwitch {
			t.Fatal("blocked by step 19: the safekeeper does not hold timeline-2 WAL past nextlsn")
		}
		if !tlSlotCreated {
			t.Fatal("blocked by step 19: archive_slot with reserved WAL could not be created on the safekeeper")
		}
		timelineDir := tapMkdir(t, base, "timeline_wal")
		r := run("-D", timelineDir, "--verbose", "--endpos", tlNextLSN.String(), "--slot", "archive_slot", "--no-sync", "-n")
		if !tapCommandOK(t, "Stream some wal after promoting, resuming from the slot's position", r) {
			t.FailNow()
		}
		ls := tapListing(timelineDir)
		// walfile_before_promotion: a complete TLI-1 segment, unless it
		// is the segment the switch cut, which pg_receivewal leaves .partial.
		switchSegTLI1 := wal.SegmentFileName(1, wal.SegmentNo(switchpoint, tapSegSize), tapSegSize)
		if walfileBefore == switchSegTLI1 {
			if !tapExists(timelineDir, walfileBefore+".partial") {
				t.Errorf("WAL segment %s (slot restart segment = switch segment) not archived as .partial after timeline jump: %s", walfileBefore, ls)
			}
		} else if !tapExists(timelineDir, walfileBefore) {
			t.Errorf("WAL segment %s not archived after timeline jump: %s", walfileBefore, ls)
		}
		if !tapExists(timelineDir, walfileAfter) {
			t.Errorf("WAL segment %s not archived after timeline jump: %s", walfileAfter, ls)
		}
		if got, err := os.ReadFile(filepath.Join(timelineDir, "00000002.history")); err != nil {
			t.Errorf("timeline history file not archived after timeline jump: %v; files: %s", err, ls)
		} else if !bytes.Equal(got, standbyHistory) {
			t.Errorf("archived 00000002.history is %q, the upstream's is %q", got, standbyHistory)
		}
		// Extra (§6 step 20 wire notes): the TLI-1 switch segment stays
		// .partial, and pg_receivewal followed the switch at the switchpoint.
		if !tapExists(timelineDir, switchSegTLI1+".partial") {
			t.Errorf("the timeline-1 segment cut by the switch at %s was not left as %s.partial: %s", switchpoint, switchSegTLI1, ls)
		}
		if want := fmt.Sprintf("switched to timeline 2 at %s", switchpoint); !strings.Contains(r.stderr, want) {
			t.Errorf("pg_receivewal did not report %q:\n%s", want, r)
		}
		// Extra: the complete segments are the upstreams' bytes.
		if walfileBefore != switchSegTLI1 {
			tapSameAsServer(t, primary, timelineDir, walfileBefore)
		}
		tapSameAsServer(t, standby, timelineDir, walfileAfter)
	})
}
