package etcdtest

import (
	"context"
	"regexp"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
)

// TestVersionMatchesMakefileAndToolModule keeps the etcd version the tests
// accept in step with the one `make tools` checks for and the one
// tools/etcd/go.mod actually builds.
func TestVersionMatchesMakefileAndToolModule(t *testing.T) {
	if got := testenv.MakefileVar(t, "ETCD_VERSION"); got != EtcdVersion {
		t.Errorf("Makefile ETCD_VERSION = %s, etcdtest.EtcdVersion = %s", got, EtcdVersion)
	}

	gomod := testenv.RepoFile(t, "tools/etcd/go.mod")
	if got := testenv.ModulePath(gomod); got != ToolModule {
		t.Errorf("tools/etcd/go.mod is module %q, want %s", got, ToolModule)
	}
	// Either "require go.etcd.io/etcd/server/v3 vX" or a line of a
	// require block.
	req := regexp.MustCompile(`(?m)^(?:require\s+|\s+)` + regexp.QuoteMeta(ServerModule) + `\s+(\S+)`).FindSubmatch(gomod)
	if req == nil {
		t.Fatalf("tools/etcd/go.mod does not require %s", ServerModule)
	}
	if got := string(req[1]); got != EtcdVersion {
		t.Errorf("tools/etcd/go.mod requires %s %s, etcdtest.EtcdVersion = %s", ServerModule, got, EtcdVersion)
	}
	if regexp.MustCompile(`(?m)^\s*replace\b.*` + regexp.QuoteMeta(ServerModule)).Match(gomod) {
		t.Errorf("tools/etcd/go.mod replaces %s; the pinned version would not be what runs", ServerModule)
	}
}

func TestStartPutGetRestartPause(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if _, err := c.Put(ctx, "/etcdtest/a", "1"); err != nil {
		t.Fatal(err)
	}
	endpoint := s.Endpoint()
	s.Restart()
	if s.Endpoint() != endpoint {
		t.Fatalf("endpoint changed over a restart: %s -> %s", endpoint, s.Endpoint())
	}
	resp, err := c.Get(ctx, "/etcdtest/a")
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" {
		t.Fatalf("after restart: %v", resp.Kvs)
	}

	// A paused server accepts connections but answers nothing.
	s.Pause()
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Get(short, "/etcdtest/a")
	cancelShort()
	if err == nil {
		t.Fatal("Get answered by a paused server")
	}
	s.Resume()
	if _, err := c.Put(ctx, "/etcdtest/b", "2"); err != nil {
		t.Fatalf("after resume: %v", err)
	}

	s.Stop()
	s.Stop() // idempotent
	short, cancelShort = context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = c.Get(short, "/etcdtest/a")
	cancelShort()
	if err == nil {
		t.Fatal("Get answered by a stopped server")
	}
	s.Restart()
	resp, err = c.Get(ctx, "/etcdtest/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("after second restart: %v", err)
	}
	if len(resp.Kvs) != 2 {
		t.Fatalf("after second restart: %d keys, want 2", len(resp.Kvs))
	}

	// Stop works on a paused server too.
	s.Pause()
	s.Stop()
}
