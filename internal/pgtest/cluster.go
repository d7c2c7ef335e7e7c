package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// pgCtlWait is passed to pg_ctl -t (seconds).
	pgCtlWait = 60
	// cmdTimeout bounds every external command we run.
	cmdTimeout = 2 * time.Minute
	// basebackupTimeout bounds pg_basebackup.
	basebackupTimeout = 3 * time.Minute
	// opTimeout bounds a single SQL operation (connect + run).
	opTimeout = 2 * time.Minute
	// startAttempts is how often a fresh cluster is tried on a new port.
	startAttempts = 5
	// logTailLines is how many server log lines are dumped on failure.
	logTailLines = 50
)

// Options configures a cluster started by StartPrimary or StartStandby.
type Options struct {
	// WalSegSizeMB is initdb --wal-segsize in MB (power of two, 1..1024).
	// 0 means 16. Ignored by StartStandby: a standby inherits its
	// primary's segment size.
	WalSegSizeMB int

	// Conf holds extra postgresql.conf settings. They are written after the
	// defaults and so override them. Values are single-quoted automatically
	// unless already quoted, e.g. {"wal_keep_size": "1GB"}. The port is
	// not a configuration setting (it is passed on the command line); use
	// Cluster.Port.
	Conf map[string]string
}

// Cluster is a running (or stopped) throwaway PostgreSQL server.
type Cluster struct {
	// Name is "primary" or "standby" (used in messages).
	Name string
	// Port is the TCP port on 127.0.0.1.
	Port int
	// DataDir is the data directory (BaseDir/data).
	DataDir string
	// BaseDir is the private directory holding everything of this cluster.
	BaseDir string
	// SocketDir is the Unix socket directory (BaseDir/sock).
	SocketDir string
	// LogFile is the server log (BaseDir/postgres.log).
	LogFile string
	// Bins are the binaries the cluster runs with.
	Bins *Bins

	mu      sync.Mutex
	running bool
}

// defaultConf returns the settings always written for a cluster.
func defaultConf(socketDir string) [][2]string {
	return [][2]string{
		{"listen_addresses", "127.0.0.1"},
		{"unix_socket_directories", socketDir},
		{"wal_level", "replica"},
		{"max_wal_senders", "10"},
		{"max_replication_slots", "10"},
		{"wal_keep_size", "256MB"},
		{"hot_standby", "on"},
		{"shared_buffers", "32MB"},
		{"logging_collector", "off"},
		{"log_min_messages", "warning"},
		{"log_line_prefix", "%m [%p] %q%a "},
		{"log_replication_commands", "on"},
	}
}

const hbaConf = `# written by pgtest
local   all             all                     trust
host    all             all     127.0.0.1/32    trust
local   replication     all                     trust
host    replication     all     127.0.0.1/32    trust
`

// StartPrimary initializes a new cluster (initdb -A trust -U postgres
// --wal-segsize), configures it for physical replication and starts it on a
// free port. The cluster is stopped (pg_ctl -m immediate) and removed when
// the test ends; on test failure the tail of its log is written to t.Log.
func StartPrimary(t testing.TB, opt Options) *Cluster {
	t.Helper()
	bins := Require(t)

	seg := opt.WalSegSizeMB
	if seg == 0 {
		seg = 16
	}
	if seg < 1 || seg > 1024 || seg&(seg-1) != 0 {
		t.Fatalf("pgtest: WalSegSizeMB must be a power of two between 1 and 1024, got %d", seg)
	}

	c := newCluster(t, bins, "primary")
	out, err := c.runServer(cmdTimeout, bins.Path("initdb"),
		"-D", c.DataDir,
		"-A", "trust",
		"-U", "postgres",
		"--wal-segsize="+strconv.Itoa(seg),
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
	)
	if err != nil {
		t.Fatalf("pgtest: initdb failed: %v\n%s", err, out)
	}

	settings := defaultConf(c.SocketDir)
	extra, err := confLines(opt.Conf)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := appendConf(filepath.Join(c.DataDir, "postgresql.conf"), settings, extra); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(c.DataDir, "pg_hba.conf"), []byte(hbaConf), 0o600); err != nil {
		t.Fatalf("pgtest: writing pg_hba.conf: %v", err)
	}

	c.start(t, true)
	return c
}

// StartStandby takes a base backup of primary and starts it as a standby
// streaming from primaryConninfo (which may point at another server, e.g.
// a safekeeper). The standby is stopped and removed when the test ends.
func StartStandby(t testing.TB, primary *Cluster, primaryConninfo string, opt Options) *Cluster {
	t.Helper()
	c := BaseBackup(t, primary, "standby")
	c.StartAsStandby(t, primaryConninfo, opt)
	return c
}

// BaseBackup takes a base backup of primary (pg_basebackup -X stream) into
// a new cluster directory named name, without starting it. Start it later
// with StartAsStandby or StartRecovery; it is stopped and removed when the
// test ends.
func BaseBackup(t testing.TB, primary *Cluster, name string) *Cluster {
	t.Helper()
	bins := primary.Bins
	if bins == nil {
		bins = Require(t)
	}
	c := newCluster(t, bins, name)
	out, err := c.runServer(basebackupTimeout, bins.Path("pg_basebackup"),
		"-D", c.DataDir,
		"-d", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable", primary.Port),
		"-X", "stream",
		"-c", "fast",
		"--no-sync",
		"-w",
	)
	if err != nil {
		t.Fatalf("pgtest: pg_basebackup from %s (port %d) failed: %v\n%s", primary.Name, primary.Port, err, out)
	}
	return c
}

// StartAsStandby starts a base backup as a standby (standby.signal)
// streaming from primaryConninfo.
func (c *Cluster) StartAsStandby(t testing.TB, primaryConninfo string, opt Options) {
	t.Helper()
	c.startWithSignal(t, "standby.signal", [][2]string{{"primary_conninfo", primaryConninfo}}, opt)
}

// StartRecovery starts a base backup in targeted archive recovery
// (recovery.signal) with the given restore_command: it replays what the
// command provides, then ends recovery and is promoted as PostgreSQL does
// when the archive runs out. Wait for the end with WaitForQuery on
// "SELECT pg_is_in_recovery()".
func (c *Cluster) StartRecovery(t testing.TB, restoreCommand string, opt Options) {
	t.Helper()
	c.startWithSignal(t, "recovery.signal", [][2]string{{"restore_command", restoreCommand}}, opt)
}

func (c *Cluster) startWithSignal(t testing.TB, signalFile string, settings [][2]string, opt Options) {
	t.Helper()
	signal := filepath.Join(c.DataDir, signalFile)
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := chownServer(signal); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// postgresql.auto.conf is read last, so these override whatever the
	// primary's copied postgresql.conf / postgresql.auto.conf contain.
	extra, err := confLines(opt.Conf)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := appendConf(filepath.Join(c.DataDir, "postgresql.auto.conf"), append(defaultConf(c.SocketDir), settings...), extra); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	c.start(t, true)
}

// newCluster creates the private base directory and registers cleanup.
func newCluster(t testing.TB, bins *Bins, name string) *Cluster {
	t.Helper()
	base := newBaseDir(t, name)
	c := &Cluster{
		Name:      name,
		DataDir:   filepath.Join(base, "data"),
		BaseDir:   base,
		SocketDir: filepath.Join(base, "sock"),
		LogFile:   filepath.Join(base, "postgres.log"),
		Bins:      bins,
	}
	if err := os.Mkdir(c.SocketDir, 0o755); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := chownServer(c.SocketDir); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := os.WriteFile(c.LogFile, nil, 0o644); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := chownServer(c.LogFile); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// Registered after newBaseDir's removal, so it runs before it.
	t.Cleanup(func() { c.cleanup(t) })
	return c
}

// newBaseDir creates a short, world-traversable directory owned by the server
// user. t.TempDir is not used: its parent is 0700 (not traversable by the
// server user) and its path embeds the test name, which can push the Unix
// socket path past the kernel's ~107 byte limit.
func newBaseDir(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgtest-"+name+"-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	keep, _ := strconv.ParseBool(os.Getenv("PGTEST_KEEP"))
	t.Cleanup(func() {
		if keep {
			t.Logf("pgtest: PGTEST_KEEP set, keeping %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("pgtest: removing %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if os.Geteuid() == 0 {
		for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("pgtest: %v", err)
			}
			if fi.Mode().Perm()&0o001 == 0 {
				t.Fatalf("pgtest: %s (ancestor of %s) is not traversable by user %q (mode %v); "+
					"set TMPDIR to a world-accessible directory such as /tmp", p, dir, ServerUser, fi.Mode().Perm())
			}
			if p == filepath.Dir(p) {
				break
			}
		}
		if err := chownServer(dir); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	return dir
}

var confKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// quoteConf quotes a configuration value unless it is already quoted.
func quoteConf(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// confLines validates and sorts extra settings.
func confLines(m map[string]string) ([][2]string, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		if !confKeyRE.MatchString(k) {
			return nil, fmt.Errorf("invalid configuration parameter name %q", k)
		}
		if strings.EqualFold(k, "port") {
			return nil, errors.New("Options.Conf must not set port (pgtest picks it; see Cluster.Port)")
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][2]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, [2]string{k, m[k]})
	}
	return out, nil
}

func appendConf(path string, groups ...[][2]string) error {
	var b strings.Builder
	b.WriteString("\n# ---- added by pgtest ----\n")
	for _, g := range groups {
		for _, kv := range g {
			fmt.Fprintf(&b, "%s = %s\n", kv[0], quoteConf(kv[1]))
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// serverEnv is the environment for server-side commands: PG* variables of
// the test process (PGDATA, PGPORT, PGOPTIONS, ...) are dropped so that they
// cannot redirect or alter the commands.
func (c *Cluster) serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+c.BaseDir)
}

// runServer runs a server-side program as the server user with a timeout.
func (c *Cluster) runServer(timeout time.Duration, path string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = c.BaseDir
	cmd.Env = c.serverEnv()
	cmd.WaitDelay = 5 * time.Second
	RunAsPostgres(cmd)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %v (%v)", filepath.Base(path), timeout, err)
	}
	return out, err
}

func (c *Cluster) pgCtl(args ...string) ([]byte, error) {
	full := append([]string{"-D", c.DataDir, "-w", "-t", strconv.Itoa(pgCtlWait)}, args...)
	return c.runServer(cmdTimeout, c.Bins.Path("pg_ctl"), full...)
}

// start starts the server; if allowNewPort, a port found taken is replaced.
func (c *Cluster) start(t testing.TB, allowNewPort bool) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		if c.Port == 0 {
			c.Port = FreePort(t)
		}
		off := fileSize(c.LogFile)
		out, err := c.pgCtl("-l", c.LogFile, "-o", "-p "+strconv.Itoa(c.Port), "start")
		if err == nil {
			c.setRunning(true)
			return
		}
		log := readFrom(c.LogFile, off)
		if allowNewPort && attempt < startAttempts && portInUse(log) {
			t.Logf("pgtest: %s: port %d already in use, retrying on another port", c.Name, c.Port)
			c.Port = 0
			continue
		}
		t.Fatalf("pgtest: starting %s on port %d failed: %v\npg_ctl output:\n%s\nserver log:\n%s",
			c.Name, c.Port, err, out, lastLines(log, logTailLines))
	}
}

func portInUse(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "could not create any TCP/IP sockets")
}

func (c *Cluster) setRunning(v bool) {
	c.mu.Lock()
	c.running = v
	c.mu.Unlock()
}

func (c *Cluster) isRunning() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

// cleanup stops the server if a postmaster might be running and dumps the log
// tail if the test failed.
func (c *Cluster) cleanup(t testing.TB) {
	wasRunning := c.isRunning()
	if _, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid")); err == nil {
		if out, err := c.pgCtl("-m", "immediate", "stop"); err != nil && wasRunning {
			t.Logf("pgtest: stopping %s (port %d): %v\n%s", c.Name, c.Port, err, out)
		}
	}
	c.setRunning(false)
	if t.Failed() {
		t.Logf("pgtest: last %d lines of %s log %s (port %d):\n%s",
			logTailLines, c.Name, c.LogFile, c.Port, lastLines(readFrom(c.LogFile, 0), logTailLines))
	}
}

// Stop stops the server with pg_ctl -m mode (smart, fast or immediate).
func (c *Cluster) Stop(t testing.TB, mode string) {
	t.Helper()
	out, err := c.pgCtl("-m", mode, "stop")
	if err != nil {
		t.Fatalf("pgtest: stopping %s (port %d, mode %s) failed: %v\n%s", c.Name, c.Port, mode, err, out)
	}
	c.setRunning(false)
}

// Kill9 sends SIGKILL to the postmaster, as a crash of the machine's
// database would, and waits until it is gone. Its backends notice the
// postmaster's death and exit by themselves.
func (c *Cluster) Kill9(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.DataDir, "postmaster.pid"))
	if err != nil {
		t.Fatalf("pgtest: %s: read postmaster.pid: %v", c.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("pgtest: %s: postmaster.pid: %v", c.Name, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("pgtest: %s: kill -9 %d: %v", c.Name, pid, err)
	}
	WaitFor(t, 30*time.Second, fmt.Sprintf("postmaster %d to die", pid), func() bool {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// Gone, or a zombie nobody has reaped yet.
		return err != nil || strings.Contains(string(st), ") Z ")
	})
	c.setRunning(false)
}

// Start starts a stopped server again on the same port.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	c.start(t, false)
}

// Restart stops the server (fast) and starts it again on the same port.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.Stop(t, "fast")
	c.Start(t)
}

// Promote promotes a standby and waits until it accepts writes.
func (c *Cluster) Promote(t testing.TB) {
	t.Helper()
	out, err := c.pgCtl("promote")
	if err != nil {
		t.Fatalf("pgtest: promoting %s (port %d) failed: %v\n%s", c.Name, c.Port, err, out)
	}
}

// ConnString returns a keyword/value connection string for the postgres
// database.
func (c *Cluster) ConnString() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", c.Port)
}

// ReplConnString returns a connection string for a physical replication
// connection (replication=true).
func (c *Cluster) ReplConnString() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable replication=true", c.Port)
}

// WalDir returns DataDir/pg_wal.
func (c *Cluster) WalDir() string { return filepath.Join(c.DataDir, "pg_wal") }

// Exec runs sql (simple protocol, may contain several statements) and fails
// the test on error.
func (c *Cluster) Exec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := execAll(ctx, c.ConnString(), sql); err != nil {
		t.Fatalf("pgtest: %s (port %d): exec %q: %v", c.Name, c.Port, sql, err)
	}
}

// QueryValue returns the first column of the first row of sql's result as
// text (NULL is returned as ""). It fails the test on error or when there is
// no row.
func (c *Cluster) QueryValue(t testing.TB, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	v, err := queryValue(ctx, c.ConnString(), sql)
	if err != nil {
		t.Fatalf("pgtest: %s (port %d): query %q: %v", c.Name, c.Port, sql, err)
	}
	return v
}

// ErrNoRows is returned by TryQueryValue when the query returned no row.
var ErrNoRows = errors.New("pgtest: query returned no rows")

// TryQueryValue is QueryValue returning errors instead of failing the test;
// it may be called from any goroutine.
func (c *Cluster) TryQueryValue(ctx context.Context, sql string) (string, error) {
	return queryValue(ctx, c.ConnString(), sql)
}

// SystemID returns the cluster's database system identifier.
func (c *Cluster) SystemID(t testing.TB) uint64 {
	t.Helper()
	v := c.QueryValue(t, "SELECT system_identifier FROM pg_control_system()")
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("pgtest: %s: bad system identifier %q: %v", c.Name, v, err)
	}
	return id
}

// EnableTLS makes the server accept TLS with the certificate and key in
// the PEM files cert and key: they are copied into the data directory,
// owned by the server's user (PostgreSQL refuses a key others can read),
// and ssl is turned on with a reload.
func (c *Cluster) EnableTLS(t testing.TB, cert, key string) {
	t.Helper()
	for _, f := range []struct{ src, name string }{{cert, "server.crt"}, {key, "server.key"}} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		dst := filepath.Join(c.DataDir, f.name)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		if err := chownServer(dst); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	c.Exec(t, "ALTER SYSTEM SET ssl_cert_file = 'server.crt'")
	c.Exec(t, "ALTER SYSTEM SET ssl_key_file = 'server.key'")
	c.SetConf(t, "ssl", "on")
}

// SetConf sets a configuration parameter with ALTER SYSTEM and reloads the
// configuration (see Reload). Parameters that need a restart take effect
// only after Restart. The value is quoted as for Options.Conf.
func (c *Cluster) SetConf(t testing.TB, key, value string) {
	t.Helper()
	if !confKeyRE.MatchString(key) {
		t.Fatalf("pgtest: invalid configuration parameter name %q", key)
	}
	c.Exec(t, fmt.Sprintf("ALTER SYSTEM SET %s = %s", key, quoteConf(value)))
	c.Reload(t)
}

// Reload calls pg_reload_conf() and waits until new sessions see the reloaded
// configuration (pg_reload_conf only signals the postmaster).
func (c *Cluster) Reload(t testing.TB) {
	t.Helper()
	before := c.QueryValue(t, "SELECT pg_conf_load_time()")
	c.Exec(t, "SELECT pg_reload_conf()")
	c.WaitForQuery(t, "SELECT pg_conf_load_time() > '"+before+"'::timestamptz", "t", 30*time.Second)
}

// WaitForQuery polls sql on fresh connections until its first value equals
// want, failing the test after timeout. Connection and query errors (e.g.
// while a server is starting) and empty results are retried.
func (c *Cluster) WaitForQuery(t testing.TB, sql, want string, timeout time.Duration) {
	t.Helper()
	var last string
	var lastErr error
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(10*time.Second, time.Until(deadline)+time.Second))
		last, lastErr = queryValue(ctx, c.ConnString(), sql)
		cancel()
		if lastErr == nil && last == want {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("pgtest: %s (port %d): timed out after %v waiting for %q to return %q; last error: %v",
			c.Name, c.Port, timeout, sql, want, lastErr)
	}
	t.Fatalf("pgtest: %s (port %d): timed out after %v waiting for %q to return %q; last value: %q",
		c.Name, c.Port, timeout, sql, want, last)
}

// WaitFor polls cond every 50ms until it returns true, failing the test with
// "timed out after <timeout> waiting for <what>" otherwise. cond runs on the
// calling goroutine.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func execAll(ctx context.Context, connString, sql string) ([]*pgconn.Result, error) {
	conn, err := pgconn.Connect(ctx, connString)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return conn.Exec(ctx, sql).ReadAll()
}

func queryValue(ctx context.Context, connString, sql string) (string, error) {
	results, err := execAll(ctx, connString, sql)
	if err != nil {
		return "", err
	}
	for _, r := range results {
		if len(r.FieldDescriptions) == 0 {
			continue
		}
		if len(r.Rows) == 0 || len(r.Rows[0]) == 0 {
			return "", ErrNoRows
		}
		return string(r.Rows[0][0]), nil
	}
	return "", ErrNoRows
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func readFrom(path string, off int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return string(b)
}

func lastLines(s string, n int) string {
	lines := bytes.Split(bytes.TrimRight([]byte(s), "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
