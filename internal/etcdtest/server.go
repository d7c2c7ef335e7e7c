package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// memberName is the --name of the single member.
	memberName = "etcdtest"

	// readyTimeout bounds the wait for a started server to answer.
	readyTimeout = 30 * time.Second
	// logTail is how much of the server log a failed test prints.
	logTail = 32 << 10
)

// Server is one etcd member serving clients on a loopback port, with its
// data in the test's temporary directory. Restart, Pause and Resume fail
// the test given to Start when they cannot do their job, so call them from
// that test's goroutine; the other methods may be called from any
// goroutine.
type Server struct {
	t          testing.TB
	bin        string
	dir        string // the test's temp dir for this server
	dataDir    string
	logPath    string
	clientPort int
	peerPort   int

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	waitErr error         // cmd.Wait's result, valid after exited is closed
	paused  bool
}

// Start runs etcd on free ports of 127.0.0.1 with a fresh data directory,
// waits until it reports itself healthy, and registers a cleanup that stops
// it (and prints the tail of its log if the test failed). If the binary
// cannot be had the test is skipped, or fails when $CI is true (see
// Binary).
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, bin: Binary(t), dir: t.TempDir()}
	s.dataDir = filepath.Join(s.dir, "data")
	s.logPath = filepath.Join(s.dir, "etcd.log")
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			s.dumpLog()
		}
	})
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if s.clientPort, err = freePort(); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		if s.peerPort, err = freePort(); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		if s.peerPort == s.clientPort {
			continue
		}
		if err = s.start(); err == nil || !errors.Is(err, errAddrInUse) {
			break
		}
		// Someone took a port between probing and binding: pick others.
		// The data directory may hold a half-initialised member; start
		// afresh.
		_ = os.RemoveAll(s.dataDir)
	}
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	return s
}

// Endpoint returns the client URL, http://127.0.0.1:<port>.
func (s *Server) Endpoint() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.clientPort))
}

// Endpoints returns the client URLs, for clientv3.Config.Endpoints.
func (s *Server) Endpoints() []string { return []string{s.Endpoint()} }

func (s *Server) peerURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.peerPort))
}

// DataDir returns the member's data directory.
func (s *Server) DataDir() string { return s.dataDir }

// LogPath returns the file receiving the server's output.
func (s *Server) LogPath() string { return s.logPath }

// Client returns a new client for the server, closed when t ends. It logs
// nothing (the client library's retry warnings would drown test output).
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   s.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop kills the server (SIGKILL, like a crash of etcd or of its host)
// and waits for it to exit; it works on a paused server too. The ports and
// the data are kept for Restart: what etcd acknowledged is in its WAL file
// (in the page cache at least, see --unsafe-no-fsync), which a kill does
// not lose. Stopping a stopped server does nothing.
//
// Not SIGTERM: etcd's graceful stop waits for clients' streams (lease
// keep-alives, watches) to drain, for seconds, and keeps serving them
// meanwhile, so the outage would begin at an unknown time.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd, s.paused = nil, false
}

// Restart stops the server if it runs and starts it again on the same
// ports with the same data, waiting until it is healthy; the test fails if
// it is not.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("etcdtest: restart: %v", err)
	}
}

// Pause suspends the server process (SIGSTOP): the kernel still accepts
// connections on its ports, but nothing answers, so requests hang and lease
// keep-alives go unanswered until Resume. Pause returns once every thread
// of the process is stopped.
func (s *Server) Pause() {
	s.t.Helper()
	pid := s.signal(syscall.SIGSTOP, true)
	// kill(2) returns before the threads have stopped; a request sent
	// right away could still be served.
	if err := waitStopped(pid, 10*time.Second); err != nil {
		s.t.Fatalf("etcdtest: pause: %v", err)
	}
}

// Resume continues a server suspended by Pause (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	s.signal(syscall.SIGCONT, false)
}

func (s *Server) signal(sig syscall.Signal, paused bool) int {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("etcdtest: %v: etcd is not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("etcdtest: %v: %v", sig, err)
	}
	s.paused = paused
	return s.cmd.Process.Pid
}

// waitStopped polls /proc until every thread of pid is in the stopped
// state ('T'), or timeout passes.
func waitStopped(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		running, err := runningThreads(pid)
		if err == nil && running == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d not stopped after %s (%d threads running, %v)", pid, timeout, running, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// runningThreads counts the threads of pid not in the stopped state.
func runningThreads(pid int) (int, error) {
	taskDir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(taskDir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join(taskDir, task.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name, which is in parentheses
		// and may itself contain spaces or parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 || i+2 >= len(stat) {
			return 0, fmt.Errorf("cannot parse %s/%s/stat", taskDir, task.Name())
		}
		if st := stat[i+2]; st != 'T' && st != 't' {
			n++
		}
	}
	return n, nil
}

var errAddrInUse = errors.New("address already in use")

// args returns etcd's command line. On a restart the cluster flags are
// ignored by etcd (the member's identity is in the data directory) but
// harmless.
func (s *Server) args() []string {
	return []string{
		"--name", memberName,
		"--data-dir", s.dataDir,
		"--listen-client-urls", s.Endpoint(),
		"--advertise-client-urls", s.Endpoint(),
		"--listen-peer-urls", s.peerURL(),
		"--initial-advertise-peer-urls", s.peerURL(),
		"--initial-cluster", memberName + "=" + s.peerURL(),
		"--initial-cluster-state", "new",
		"--log-level", "warn",
		// A single member elects itself after one election timeout;
		// shorter timings make Start and Restart faster and allow lease
		// TTLs down to 1s (etcd's minimum TTL is 1.5 election timeouts).
		// There are no peers whose heartbeats could be delayed.
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		// Skipping fsync keeps writes fast on small, shared test machines.
		// It loses nothing the tests rely on: written data stays in the
		// page cache across a crash or kill of the process (Stop,
		// Restart); only a crash of the whole machine could lose it, and
		// the data directory does not outlive the test anyway.
		"--unsafe-no-fsync",
	}
}

// start launches the process and waits until it is healthy.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("etcd is already running")
	}
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	logStart, _ := logf.Seek(0, io.SeekEnd)
	args := s.args()
	fmt.Fprintf(logf, "=== etcdtest %s: %s %s\n", time.Now().Format(time.RFC3339Nano), s.bin, strings.Join(args, " "))
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	// A clean environment: etcd reads ETCD_* variables as flags.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.dir}
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Die with the test binary even if it is killed before cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		s.waitErr = err
		close(exited)
	}()
	s.cmd, s.exited, s.paused = cmd, exited, false

	if err := s.waitReady(exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		s.cmd = nil
		out := s.readLog(logStart)
		if strings.Contains(out, "address already in use") {
			return fmt.Errorf("etcd on %s: %w", s.Endpoint(), errAddrInUse)
		}
		return fmt.Errorf("etcd on %s: %v; its output:\n%s", s.Endpoint(), err, out)
	}
	return nil
}

// waitReady polls the /health endpoint until the member reports itself
// healthy (it has a raft leader and serves reads), the process exits, or
// readyTimeout passes.
func (s *Server) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	var lastErr error
	for {
		select {
		case <-exited:
			return fmt.Errorf("etcd exited before becoming healthy: %v", s.waitErr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd not healthy within %s: %v", readyTimeout, lastErr)
		}
		if lastErr = probe(client, s.Endpoint()+"/health"); lastErr == nil {
			return nil
		}
		select {
		case <-exited:
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// probe asks /health once; etcd answers 200 with {"health":"true",...}
// when the member can serve requests.
func probe(client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("/health: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// readLog returns the server log from offset from, at most logTail bytes
// of its end.
func (s *Server) readLog(from int64) string {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", s.logPath, err)
	}
	if from > 0 && from <= int64(len(data)) {
		data = data[from:]
	}
	if len(data) > logTail {
		data = append([]byte("...\n"), data[len(data)-logTail:]...)
	}
	return string(data)
}

func (s *Server) dumpLog() {
	s.t.Logf("etcdtest: etcd log %s (tail):\n%s", s.logPath, s.readLog(0))
}
