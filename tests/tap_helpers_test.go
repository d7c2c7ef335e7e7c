package tests

// Helpers for receivewal_tap_test.go, the replay of PostgreSQL's
// src/bin/pg_basebackup/t/020_pg_receivewal.pl against a safekeeper
// (protocol.md §6). Every identifier starts with "tap" so that it cannot
// collide with helpers of other test files in this package.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// tapSegSize is the WAL segment size of the TAP test's primary
// (init extra => ['--wal-segsize=1']).
const tapSegSize = 1 << 20

// tapRunTimeout bounds one pg_receivewal run. Every streaming run has
// --endpos and -n/--no-loop, so a correct server lets it finish in seconds;
// the bound turns a hang (e.g. a server that never sends WAL past --endpos)
// into a failure instead of a stuck test.
const tapRunTimeout = 2 * time.Minute

// tapResult is the outcome of one pg_receivewal run.
type tapResult struct {
	args     []string
	stdout   string
	stderr   string
	code     int // exit status; -1 if it did not exit normally
	timedOut bool
	startErr error
}

func (r tapResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pg_receivewal %s\n", strings.Join(r.args, " "))
	switch {
	case r.startErr != nil:
		fmt.Fprintf(&b, "  could not run: %v\n", r.startErr)
	case r.timedOut:
		fmt.Fprintf(&b, "  killed after %v without exiting\n", tapRunTimeout)
	default:
		fmt.Fprintf(&b, "  exit status %d\n", r.code)
	}
	fmt.Fprintf(&b, "  stdout:\n%s  stderr:\n%s", tapIndent(r.stdout), tapIndent(r.stderr))
	return b.String()
}

func tapIndent(s string) string {
	if s == "" {
		return "    (empty)\n"
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// tapEnv is the environment pg_receivewal runs with: the test process's
// environment without PG*, LANG and LC_* variables, plus PGHOST/PGPORT/PGUSER
// naming the server (the TAP test's command_ok/command_fails do the same:
// the connection comes from the environment, not from options), and the C
// locale so that messages are the untranslated ones the TAP test matches.
func tapEnv(port int) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LANG") || strings.HasPrefix(kv, "LC_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"PGHOST=127.0.0.1",
		"PGPORT="+strconv.Itoa(port),
		"PGUSER=postgres",
		"PGCONNECT_TIMEOUT=20",
		"LC_ALL=C", "LANG=C",
	)
}

// tapReceivewal runs pg_receivewal with exactly args (no connection
// options: the server is named by PGHOST/PGPORT, see tapEnv), standard input
// closed, and returns its exit status and output. It never fails the test.
func tapReceivewal(bins *pgtest.Bins, port int, args ...string) tapResult {
	ctx, cancel := context.WithTimeout(context.Background(), tapRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.Path("pg_receivewal"), args...)
	cmd.Env = tapEnv(port)
	cmd.WaitDelay = 5 * time.Second
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := tapResult{args: args, stdout: so.String(), stderr: se.String(), code: -1}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.timedOut = true
	case err == nil:
		r.code = 0
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		r.startErr = err
	}
	return r
}

// tapCommandOK is the TAP test's command_ok: the run must exit 0.
func tapCommandOK(t *testing.T, what string, r tapResult) bool {
	t.Helper()
	if r.code != 0 {
		t.Errorf("%s: pg_receivewal did not exit 0 (TAP command_ok):\n%s", what, r)
		return false
	}
	t.Logf("%s: ok\n%s", what, r)
	return true
}

// tapCommandFails is the TAP test's command_fails: the run must exit with a
// non-zero status (not be killed on timeout, not fail to start).
func tapCommandFails(t *testing.T, what string, r tapResult) bool {
	t.Helper()
	if r.code <= 0 {
		t.Errorf("%s: pg_receivewal was expected to fail with a non-zero exit status (TAP command_fails):\n%s", what, r)
		return false
	}
	return true
}

// tapCompression reports whether this pg_receivewal build can write WAL
// compressed with spec ("gzip:1", "lz4"). pg_receivewal refuses a method its
// build lacks before it connects ("this build does not support compression
// with %s"; zstd: "compression with %s is not yet supported"), so it is run
// against a port nobody listens on: a supported method gets as far as the
// connection attempt. The second result is the evidence for the log.
func tapCompression(t *testing.T, bins *pgtest.Bins, spec string) (bool, string) {
	t.Helper()
	dir := tapMkdir(t, t.TempDir(), "probe")
	r := tapReceivewal(bins, pgtest.FreePort(t), "-D", dir, "--compress", spec, "-n")
	switch {
	case strings.Contains(r.stderr, "does not support compression"),
		strings.Contains(r.stderr, "not yet supported"),
		strings.Contains(r.stderr, "unrecognized compression algorithm"):
		return false, strings.TrimSpace(r.stderr)
	case r.code != 0 && strings.Contains(r.stderr, "connection to server"):
		return true, strings.TrimSpace(r.stderr)
	}
	t.Fatalf("cannot tell whether pg_receivewal supports --compress %s:\n%s", spec, r)
	return false, ""
}

// tapMkdir creates parent/name with mode 0700, as the TAP test's mkdir under
// umask 0077 does (step 15 checks the directory's own mode too).
func tapMkdir(t *testing.T, parent, name string) string {
	t.Helper()
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tapGlob returns the base names in dir matching pattern, sorted.
func tapGlob(t *testing.T, dir, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(m))
	for i, p := range m {
		out[i] = filepath.Base(p)
	}
	sort.Strings(out)
	return out
}

// tapListing describes dir's files for failure messages.
func tapListing(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	if len(ents) == 0 {
		return "(empty)"
	}
	var parts []string
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			parts = append(parts, fmt.Sprintf("%s (%d bytes, %v)", e.Name(), fi.Size(), fi.Mode().Perm()))
		}
	}
	return strings.Join(parts, ", ")
}

// tapExists reports whether dir/name exists.
func tapExists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// tapModeViolations is check_mode_recursive(dir, dirMode, fileMode): every
// directory (dir included) must have dirMode and every file fileMode.
func tapModeViolations(dir string, dirMode, fileMode fs.FileMode) []string {
	var bad []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fileMode
		if d.IsDir() {
			want = dirMode
		}
		if fi.Mode().Perm() != want {
			bad = append(bad, fmt.Sprintf("%s has mode %04o, want %04o", path, fi.Mode().Perm(), want))
		}
		return nil
	})
	if err != nil {
		bad = append(bad, err.Error())
	}
	return bad
}

// tapSwitchAndInsert is the TAP test's WAL generator on cluster c:
// "SELECT pg_switch_wal()"; nextlsn = pg_current_wal_insert_lsn();
// "INSERT INTO test_table VALUES (v)". It returns nextlsn and c's flush
// position after the INSERT, which lies beyond nextlsn: the WAL a server must
// be able to send past --endpos nextlsn (§4.1) for pg_receivewal to stop.
func tapSwitchAndInsert(t *testing.T, c *pgtest.Cluster, v int) (nextlsn, flushed wal.LSN) {
	t.Helper()
	tapEnsureTable(t, c)
	c.Exec(t, "SELECT pg_switch_wal()")
	nextlsn = tapQueryLSN(t, c, "SELECT pg_current_wal_insert_lsn()")
	c.Exec(t, fmt.Sprintf("INSERT INTO test_table VALUES (%d)", v))
	flushed = tapQueryLSN(t, c, "SELECT pg_current_wal_flush_lsn()")
	if flushed <= nextlsn {
		t.Fatalf("%s: flush position %s after INSERT (%d) is not past nextlsn %s", c.Name, flushed, v, nextlsn)
	}
	return nextlsn, flushed
}

// tapRequireBeyond is the scenario-level check of protocol.md §6 ("Notes for
// replaying these against a custom server"): before pg_receivewal runs with
// --endpos endpos, the safekeeper must hold durable WAL up to flushed, which
// is beyond endpos, or pg_receivewal could never stop.
func tapRequireBeyond(t *testing.T, sk *SK, endpos, flushed wal.LSN, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := sk.FlushLSN(t)
		if got >= flushed && got > endpos {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("safekeeper's flush LSN is %s after %v; it must reach the upstream's %s, beyond --endpos %s, "+
				"before pg_receivewal can stop at endpos (protocol.md §4.1/§6): the safekeeper is not ingesting the upstream's WAL",
				got, timeout, flushed, endpos)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tapReplExec runs one replication command on a new replication connection
// to the safekeeper (simple query protocol).
func tapReplExec(sk *SK, sql string) ([]*pgconn.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		return nil, fmt.Errorf("connect to the safekeeper: %w", err)
	}
	defer conn.Close(context.Background())
	return conn.Exec(ctx, sql).ReadAll()
}

// tapSlot is a READ_REPLICATION_SLOT row; nil fields are NULL.
type tapSlot struct {
	Type, RestartLSN, RestartTLI *string
}

func tapNullable(p *string) string {
	if p == nil {
		return "NULL"
	}
	return strconv.Quote(*p)
}

func (s tapSlot) String() string {
	return fmt.Sprintf("(slot_type=%s, restart_lsn=%s, restart_tli=%s)",
		tapNullable(s.Type), tapNullable(s.RestartLSN), tapNullable(s.RestartTLI))
}

// tapReadSlot runs READ_REPLICATION_SLOT name on the safekeeper and checks
// the result's shape (protocol.md §2.6: always one row of slot_type text,
// restart_lsn text, restart_tli int8).
func tapReadSlot(sk *SK, name string) (tapSlot, error) {
	cmd := "READ_REPLICATION_SLOT " + name
	res, err := tapReplExec(sk, cmd)
	if err != nil {
		return tapSlot{}, fmt.Errorf("%s: %w", cmd, err)
	}
	if len(res) != 1 {
		return tapSlot{}, fmt.Errorf("%s: %d results, want 1", cmd, len(res))
	}
	r := res[0]
	type col struct {
		name string
		oid  uint32
	}
	want := []col{{"slot_type", 25}, {"restart_lsn", 25}, {"restart_tli", 20}}
	if len(r.FieldDescriptions) != len(want) {
		return tapSlot{}, fmt.Errorf("%s: %d columns, want 3 (slot_type, restart_lsn, restart_tli)", cmd, len(r.FieldDescriptions))
	}
	for i, w := range want {
		if fd := r.FieldDescriptions[i]; fd.Name != w.name || fd.DataTypeOID != w.oid {
			return tapSlot{}, fmt.Errorf("%s: column %d is %q (type OID %d), want %q (type OID %d)", cmd, i+1, fd.Name, fd.DataTypeOID, w.name, w.oid)
		}
	}
	if len(r.Rows) != 1 {
		return tapSlot{}, fmt.Errorf("%s: %d rows, want exactly 1 (a row of NULLs for a missing slot)", cmd, len(r.Rows))
	}
	var s tapSlot
	for i, p := range []**string{&s.Type, &s.RestartLSN, &s.RestartTLI} {
		if v := r.Rows[0][i]; v != nil {
			str := string(v)
			*p = &str
		}
	}
	return s, nil
}

// tapCreateReservedSlot runs CREATE_REPLICATION_SLOT name PHYSICAL
// (RESERVE_WAL) on the safekeeper, as the TAP test does on its standby, and
// checks the reply (§2.7: one row (name, '0/0', NULL, NULL)).
func tapCreateReservedSlot(sk *SK, name string) error {
	cmd := "CREATE_REPLICATION_SLOT " + name + " PHYSICAL (RESERVE_WAL)"
	res, err := tapReplExec(sk, cmd)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if len(res) != 1 || len(res[0].FieldDescriptions) != 4 || len(res[0].Rows) != 1 {
		return fmt.Errorf("%s: want one result with 1 row and 4 columns, got %s", cmd, tapDescribe(res))
	}
	row := res[0].Rows[0]
	if string(row[0]) != name || string(row[1]) != "0/0" || row[2] != nil || row[3] != nil {
		return fmt.Errorf("%s: row is %s, want (%q, \"0/0\", NULL, NULL)", cmd, tapDescribe(res), name)
	}
	return nil
}

// tapDescribe renders results for messages.
func tapDescribe(res []*pgconn.Result) string {
	var parts []string
	for _, r := range res {
		var cols []string
		for _, fd := range r.FieldDescriptions {
			cols = append(cols, fd.Name)
		}
		var rows []string
		for _, row := range r.Rows {
			var vals []string
			for _, v := range row {
				if v == nil {
					vals = append(vals, "NULL")
				} else {
					vals = append(vals, strconv.Quote(string(v)))
				}
			}
			rows = append(rows, "("+strings.Join(vals, ", ")+")")
		}
		parts = append(parts, fmt.Sprintf("[%s: columns (%s) rows %s]", r.CommandTag, strings.Join(cols, ", "), strings.Join(rows, " ")))
	}
	if len(parts) == 0 {
		return "no results"
	}
	return strings.Join(parts, " ")
}

// tapWithSKTest runs fn with sk reporting its failures (Start/Stop use
// t.Fatal) to t, the running subtest, instead of the test that started it:
// FailNow must be called from the goroutine of the test it belongs to.
func tapWithSKTest(sk *SK, t *testing.T, fn func()) {
	old := sk.t
	sk.t = t
	defer func() { sk.t = old }()
	fn()
}

// tapQueryLSN runs a query returning one pg_lsn on c.
func tapQueryLSN(t *testing.T, c *pgtest.Cluster, sql string) wal.LSN {
	t.Helper()
	v := c.QueryValue(t, sql)
	lsn, err := wal.ParseLSN(v)
	if err != nil {
		t.Fatalf("%s: %q: %v", sql, v, err)
	}
	return lsn
}

// tapSameAsServer requires dir/name to be byte-identical to the file of the
// same name in c's pg_wal.
func tapSameAsServer(t *testing.T, c *pgtest.Cluster, dir, name string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	want, err := os.ReadFile(filepath.Join(c.WalDir(), name))
	if err != nil {
		t.Errorf("%s's own copy of %s: %v", c.Name, name, err)
		return
	}
	if !bytes.Equal(got, want) {
		off := 0
		for off < len(got) && off < len(want) && got[off] == want[off] {
			off++
		}
		t.Errorf("%s differs from %s's pg_wal/%s at offset %d (sizes %d and %d)", name, c.Name, name, off, len(got), len(want))
	}
}

// tapServerVersion returns the major version in the server_version
// ParameterStatus the safekeeper sends on a replication connection.
func tapServerVersion(sk *SK) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, sk.ConnString())
	if err != nil {
		return 0, fmt.Errorf("connect to the safekeeper: %w", err)
	}
	defer conn.Close(context.Background())
	v := conn.ParameterStatus("server_version")
	major, err := strconv.Atoi(strings.SplitN(strings.SplitN(v, ".", 2)[0], " ", 2)[0])
	if err != nil {
		return 0, fmt.Errorf("server_version ParameterStatus %q: %v", v, err)
	}
	return major, nil
}

// tapEnsureTable creates step 11's test_table if step 11 did not get that
// far, so that a failure there does not cascade into unrelated steps.
func tapEnsureTable(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	c.Exec(t, "CREATE TABLE IF NOT EXISTS test_table(x integer PRIMARY KEY)")
}
