package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
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
	proc       *testenv.Process // its Dir is the test's temp dir for this server
	dataDir    string
	clientPort int
	peerPort   int
}

// Start runs etcd on free ports of 127.0.0.1 with a fresh data directory,
// waits until it reports itself healthy, and registers a cleanup that stops
// it (and prints the tail of its log if the test failed). If the binary
// cannot be had the test is skipped, or fails when $CI is true (see
// Binary).
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, proc: testenv.NewProcess(t, "etcdtest", "etcd", Binary(t))}
	s.proc.LogTail = logTail
	s.dataDir = filepath.Join(s.proc.Dir, "data")
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if s.clientPort, err = testenv.FreePort(); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		if s.peerPort, err = testenv.FreePort(); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		if s.peerPort == s.clientPort {
			continue
		}
		if err = s.start(); err == nil || !errors.Is(err, testenv.ErrAddrInUse) {
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
func (s *Server) LogPath() string { return s.proc.LogPath }

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
func (s *Server) Stop() { s.proc.Stop() }

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
	if err := s.proc.Pause(); err != nil {
		s.t.Fatalf("etcdtest: pause: %v", err)
	}
}

// Resume continues a server suspended by Pause (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	if err := s.proc.Resume(); err != nil {
		s.t.Fatalf("etcdtest: resume: %v", err)
	}
}

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

// start launches the process and waits until it is healthy: the /health
// endpoint says so when the member has a raft leader and serves reads.
func (s *Server) start() error {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	err := s.proc.Start(s.args(), readyTimeout, func() error { return probe(client, s.Endpoint()+"/health") })
	if err != nil {
		return fmt.Errorf("etcd on %s: %w", s.Endpoint(), err)
	}
	return nil
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
