package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

type builtBinary struct {
	pkg  string // the package to build, relative to tests/; "" is ../cmd/safekeeper
	once sync.Once
	path string
	err  error
}

var (
	raceBinary  builtBinary
	plainBinary builtBinary
	// zconsumerBinary is examples/zconsumer, a pageserver-style consumer.
	zconsumerBinary = builtBinary{pkg: "../examples/zconsumer"}
)

// TestMain removes the binaries the run built, so that a test run leaves
// nothing behind in the temporary directory.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, b := range []*builtBinary{&raceBinary, &plainBinary, &zconsumerBinary} {
		if b.path != "" {
			os.RemoveAll(filepath.Dir(b.path))
		}
	}
	os.Exit(code)
}

// safekeeperBinary builds cmd/safekeeper once per test run, with the race
// detector so the end-to-end tests also check the server for races.
// Benchmarks use a build without it.
func safekeeperBinary(t testing.TB) string {
	if _, ok := t.(*testing.B); ok {
		return buildBinary(t, &plainBinary)
	}
	return buildBinary(t, &raceBinary, "-race")
}

func buildBinary(t testing.TB, b *builtBinary, flags ...string) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "safekeeper-bin-")
		if err != nil {
			b.err = err
			return
		}
		// Traversable by the PostgreSQL server user, which runs it as a
		// restore_command in the recovery tests.
		if err := os.Chmod(dir, 0o755); err != nil {
			b.err = err
			return
		}
		pkg := b.pkg
		if pkg == "" {
			pkg = "../cmd/safekeeper"
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		args := append(append([]string{"build"}, flags...), "-o", b.path, pkg)
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// SK is a safekeeper process under test.
type SK struct {
	t        testing.TB
	bin      string
	DataDir  string
	PGPort   int
	HTTPPort int
	Name     string
	Upstream string
	Extra    []string
	Env      []string // extra environment, e.g. AWS settings of an S3 archive
	logPath  string

	// HTTPToken, when set, is sent as a bearer token by apiCall.
	HTTPToken string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
}

// PID returns the process id of the running safekeeper.
func (s *SK) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// StartSK starts a safekeeper streaming from upstream (a connection string;
// "" for none).
func StartSK(t testing.TB, upstream string, extra ...string) *SK {
	t.Helper()
	return StartSKEnv(t, upstream, nil, extra...)
}

// StartSKEnv is StartSK with extra environment variables.
func StartSKEnv(t testing.TB, upstream string, env []string, extra ...string) *SK {
	t.Helper()
	return StartSKNamed(t, "safekeeper", upstream, env, extra...)
}

// StartSKNamed is StartSKEnv for a safekeeper with its own --name.
func StartSKNamed(t testing.TB, name, upstream string, env []string, extra ...string) *SK {
	t.Helper()
	s := newSK(t, name, upstream, env, extra...)
	s.Start()
	return s
}

// newSK prepares a safekeeper without starting it, for a test that sets
// its fields (DataDir) first; kill and log dump are registered.
func newSK(t testing.TB, name, upstream string, env []string, extra ...string) *SK {
	t.Helper()
	dir := t.TempDir()
	s := &SK{
		t: t, bin: safekeeperBinary(t),
		DataDir:  filepath.Join(dir, "data"),
		PGPort:   pgtest.FreePort(t),
		HTTPPort: pgtest.FreePort(t),
		Name:     name,
		Upstream: upstream,
		Extra:    extra,
		Env:      env,
		logPath:  filepath.Join(dir, "safekeeper.log"),
	}
	t.Cleanup(func() {
		s.mu.Lock()
		running := s.cmd != nil
		s.mu.Unlock()
		if running {
			s.signal(syscall.SIGKILL)
			s.wait(10 * time.Second)
		}
		if t.Failed() {
			b, _ := os.ReadFile(s.logPath)
			lines := strings.Split(string(b), "\n")
			if len(lines) > 80 {
				lines = lines[len(lines)-80:]
			}
			t.Logf("safekeeper log (tail):\n%s", strings.Join(lines, "\n"))
		}
	})
	return s
}

// Start starts the process and waits until its HTTP endpoint answers.
func (s *SK) Start() {
	s.t.Helper()
	args := []string{"run",
		"--data-dir", s.DataDir,
		"--listen-pg", fmt.Sprintf("127.0.0.1:%d", s.PGPort),
		"--listen-http", fmt.Sprintf("127.0.0.1:%d", s.HTTPPort),
		"--name", s.Name,
		"--log-level", "debug",
		// Tests written before retention existed read old WAL back from
		// the safekeeper; they keep it. Retention tests pass their own
		// --wal-keep-size, which wins (the last occurrence of a flag does).
		"--wal-keep-size", "1GB",
		// Tests written before the upstream slot became the default share
		// one primary between several safekeepers of the same name; the
		// cluster tests pass --upstream-slot= (the default: --name).
		"--upstream-slot", "none",
	}
	if s.Upstream != "" {
		args = append(args, "--upstream", s.Upstream)
	}
	// SAFEKEEPER_TEST_WAL_MEMORY_SIZE runs the suite with another memory
	// window (0: the memory tier off; make test-memtier-off). A test's own
	// --wal-memory-size wins (it comes later).
	if v, ok := os.LookupEnv(walMemoryEnv); ok {
		args = append(args, "--wal-memory-size", v)
	}
	args = append(args, s.Extra...)
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		s.t.Fatalf("start safekeeper: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.url("/healthz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-done:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			b, _ := os.ReadFile(s.logPath)
			s.t.Fatalf("safekeeper exited during startup: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatal("safekeeper did not become healthy in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *SK) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", s.HTTPPort, path) }

func (s *SK) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

func (s *SK) wait(timeout time.Duration) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case err := <-done:
		s.mu.Lock()
		s.cmd = nil
		s.mu.Unlock()
		return err
	case <-time.After(timeout):
		return fmt.Errorf("safekeeper did not exit within %s", timeout)
	}
}

// Kill sends SIGKILL and waits for the process to die.
func (s *SK) Kill() {
	s.t.Helper()
	s.signal(syscall.SIGKILL)
	_ = s.wait(30 * time.Second)
}

// Stop sends SIGTERM and requires a clean exit with status 0.
func (s *SK) Stop() {
	s.t.Helper()
	s.signal(syscall.SIGTERM)
	if err := s.wait(30 * time.Second); err != nil {
		s.t.Fatalf("safekeeper did not shut down cleanly: %v", err)
	}
}

// walMemoryEnv names the environment variable that sets every test
// safekeeper's --wal-memory-size.
const walMemoryEnv = "SAFEKEEPER_TEST_WAL_MEMORY_SIZE"

// ConnString is a libpq connection string for a replication connection.
func (s *SK) ConnString() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable replication=true", s.PGPort)
}

// Status is the subset of /v1/status the tests read.
type Status struct {
	Node      string `json:"node"`
	Timelines []struct {
		TenantID   string `json:"tenant_id"`
		TimelineID string `json:"timeline_id"`
		SystemID   string `json:"system_id"`
		PGVersion  string `json:"pg_version"`
		WalSegSize uint64 `json:"wal_seg_size"`
		TLI        uint32 `json:"tli"`
		FlushLSN   string `json:"flush_lsn"`
		HasWAL     bool   `json:"has_wal"`
		Upstream   struct {
			State    string `json:"state"`
			LagBytes uint64 `json:"lag_bytes"`
		} `json:"upstream"`
		Consumers []struct {
			ApplicationName string `json:"application_name"`
			SentLSN         string `json:"sent_lsn"`
			Tier            string `json:"tier"`
			Feedback        *struct {
				WriteLSN string `json:"write_lsn"`
				FlushLSN string `json:"flush_lsn"`
				ApplyLSN string `json:"apply_lsn"`
			} `json:"feedback"`
			HotStandby *struct {
				Xmin uint64 `json:"xmin"`
			} `json:"hot_standby_feedback"`
		} `json:"consumers"`
	} `json:"timelines"`
}

// Status fetches /v1/status.
func (s *SK) Status(t testing.TB) Status {
	t.Helper()
	var st Status
	s.getStatus(t, http.DefaultClient, func(body []byte) int {
		st = Status{}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("decode status: %v", err)
		}
		return len(st.Timelines)
	})
	return st
}

// timelineWait bounds how long a new safekeeper may take to learn its
// timeline (it asks the upstream for its system identifier first).
const timelineWait = 30 * time.Second

// getStatus fetches /v1/status and hands the body to decode, which returns
// how many timelines it holds. A node that lists none yet (it is still
// learning its timeline's ids from the upstream) is asked again, for up
// to timelineWait; any other number than one fails the test. It returns an
// error only when the node does not answer.
func (s *SK) getStatus(t testing.TB, c *http.Client, decode func([]byte) int) error {
	t.Helper()
	deadline := time.Now().Add(timelineWait)
	for {
		req, err := http.NewRequest("GET", s.url("/v1/status"), nil)
		if err != nil {
			return err
		}
		if s.HTTPToken != "" {
			req.Header.Set("Authorization", "Bearer "+s.HTTPToken)
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			t.Fatalf("GET /v1/status: %d %s (set SK.HTTPToken)", resp.StatusCode, body)
		}
		n := decode(body)
		if n == 1 {
			return nil
		}
		if n != 0 || time.Now().After(deadline) {
			t.Fatalf("status has %d timelines, want 1", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FlushLSN returns the safekeeper's durable end of WAL.
func (s *SK) FlushLSN(t testing.TB) wal.LSN {
	t.Helper()
	st := s.Status(t)
	lsn, err := wal.ParseLSN(st.Timelines[0].FlushLSN)
	if err != nil {
		t.Fatalf("bad flush_lsn %q: %v", st.Timelines[0].FlushLSN, err)
	}
	return lsn
}

// WaitFlush waits until the safekeeper's flush LSN reaches lsn.
func (s *SK) WaitFlush(t testing.TB, lsn wal.LSN, timeout time.Duration) {
	t.Helper()
	pgtest.WaitFor(t, timeout, fmt.Sprintf("safekeeper flush LSN to reach %s", lsn), func() bool {
		return s.FlushLSN(t) >= lsn
	})
}

// currentLSN returns the primary's current WAL insert position.
func currentLSN(t testing.TB, c *pgtest.Cluster) wal.LSN {
	t.Helper()
	v := c.QueryValue(t, "SELECT pg_current_wal_insert_lsn()")
	lsn, err := wal.ParseLSN(v)
	if err != nil {
		t.Fatalf("parse %q: %v", v, err)
	}
	return lsn
}

// flushLSNOfPrimary returns the primary's current WAL flush position.
func flushLSNOfPrimary(t testing.TB, c *pgtest.Cluster) wal.LSN {
	t.Helper()
	v := c.QueryValue(t, "SELECT pg_current_wal_flush_lsn()")
	lsn, err := wal.ParseLSN(v)
	if err != nil {
		t.Fatalf("parse %q: %v", v, err)
	}
	return lsn
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// compareSKFiles compares every complete segment file the safekeeper holds
// with the primary's, and the durable prefix of its partial segment.
func compareSKFiles(t testing.TB, primary *pgtest.Cluster, sk *SK, segSize uint64) {
	t.Helper()
	st := sk.Status(t)
	tl := st.Timelines[0]
	dir := filepath.Join(sk.DataDir, tl.TenantID, tl.TimelineID)
	names := completeSegments(t, dir)
	if len(names) < 3 {
		t.Fatalf("safekeeper holds only %d complete segments", len(names))
	}
	compareWithPrimary(t, primary, dir, names)
	t.Logf("safekeeper's %d complete segments are byte-identical to the primary's", len(names))
}

// promoteAndRepoint fails over: the old primary stops (fast, so that its
// walsenders ship the shutdown checkpoint first), standby is promoted to
// timeline 2, and sk restarts pointed at it.
func promoteAndRepoint(t testing.TB, old, standby *pgtest.Cluster, sk *SK) {
	t.Helper()
	old.Stop(t, "fast")
	standby.Promote(t)
	standby.WaitForQuery(t, "SELECT timeline_id FROM pg_control_checkpoint()", "2", 60*time.Second)
	sk.Stop()
	sk.Upstream = standby.ConnString()
	sk.Start()
}
