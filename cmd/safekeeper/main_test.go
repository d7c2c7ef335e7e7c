package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("SAFEKEEPER_DATA_DIR", "/tmp/x")
	t.Setenv("SAFEKEEPER_WAL_SENDER_TIMEOUT", "5s")
	t.Setenv("SAFEKEEPER_LISTEN_PG", "127.0.0.1:6000")
	c, err := parseFlags([]string{"--name", "sk9"})
	if err != nil {
		t.Fatal(err)
	}
	if c.dataDir != "/tmp/x" || c.walSenderTimeout != 5*time.Second || c.listenPG != "127.0.0.1:6000" || c.name != "sk9" {
		t.Fatalf("got %+v", c)
	}
	if c.listenHTTP != "127.0.0.1:7676" || c.logFormat != "console" {
		t.Fatalf("defaults: %+v", c)
	}
	// A flag beats the environment.
	c, err = parseFlags([]string{"--data-dir", "/tmp/y"})
	if err != nil || c.dataDir != "/tmp/y" {
		t.Fatalf("flag over env: %+v %v", c, err)
	}
}

func TestFlagErrors(t *testing.T) {
	if _, err := parseFlags(nil); err == nil {
		t.Fatal("missing --data-dir accepted")
	}
	if _, err := parseFlags([]string{"--data-dir", "d", "--log-format", "xml"}); err == nil {
		t.Fatal("bad --log-format accepted")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "64": 64 << 20, "512MB": 512 << 20, "10GB": 10 << 30, "1TB": 1 << 40, "8kB": 8 << 10} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", in, got, err, want)
		}
	}
	if _, err := parseSize("ten"); err == nil {
		t.Error("bad size accepted")
	}
}

func TestClusterFlagErrors(t *testing.T) {
	base := []string{"--data-dir", "d", "--etcd", "http://127.0.0.1:2379"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--name is required"},
		{[]string{"--name", "sk1", "--listen-pg", "0.0.0.0:5454"}, "--advertise-pg is required"},
		{[]string{"--name", "sk1", "--advertise-pg", "nohost"}, "--advertise-pg"},
		{[]string{"--name", "sk1", "--peer-conninfo", "user='x"}, "--peer-conninfo"},
		{[]string{"--name", "sk1", "--offload-lease-ttl", "500ms"}, "--offload-lease-ttl"},
		{[]string{"--name", "sk1", "--offload-max-lag", "lots"}, "--offload-max-lag"},
		{[]string{"--name", "sk1", "--etcd-cert", "c.pem"}, "--etcd-key"},
	} {
		_, err := parseFlags(append(append([]string(nil), base...), c.args...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one mentioning %q", c.args, err, c.want)
		}
	}
	c, err := parseFlags(append(base, "--name", "sk1"))
	if err != nil {
		t.Fatal(err)
	}
	if c.cluster.advertisePG != "127.0.0.1:5454" || c.cluster.prefix != "/safekeeper" || c.cluster.leaseTTL != 10*time.Second {
		t.Fatalf("cluster defaults: %+v", c.cluster)
	}
}

func TestBuildInfo(t *testing.T) {
	b := buildInfo()
	if b.goVersion != runtime.Version() || b.version == "" || b.revision == "" {
		t.Fatalf("build info %+v", b)
	}
	if s := b.String(); !strings.Contains(s, b.goVersion) || !strings.Contains(s, "revision") {
		t.Fatalf("version line %q", s)
	}
}

func TestConfigErrorsExit2(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef"
	base := []string{"run", "--data-dir", t.TempDir(), "--tenant-id", id, "--timeline-id", id,
		"--listen-pg", "127.0.0.1:1", "--listen-http", "127.0.0.1:1"}
	for _, extra := range [][]string{
		{"--upstream", "host=h port=notaport"},
		{"--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"},
		{"--users-file", "/nonexistent/users"},
		{"--archive", "ftp://nowhere/x"},
		{"--etcd", "ftp://etcd:2379", "--name", "sk1"},
		{"--etcd", "etcd-without-port", "--name", "sk1"},
	} {
		if code := realMain(append(append([]string(nil), base...), extra...)); code != 2 {
			t.Errorf("%v: exit status %d, want 2", extra, code)
		}
	}
}

func TestUsageErrorsNameFlagsWithTwoDashes(t *testing.T) {
	_, err := parseFlags([]string{"--data-dir", "d", "--bogus"})
	if err == nil || err.Error() != "flag provided but not defined: --bogus" {
		t.Fatalf("unknown flag: %v", err)
	}
	_, err = parseFlags([]string{"--data-dir", "d", "--wal-sender-timeout", "soon"})
	if err == nil || !strings.HasPrefix(err.Error(), `invalid value "soon" for flag --wal-sender-timeout:`) {
		t.Fatalf("bad value: %v", err)
	}
}

// --config: a YAML file with the flags' names as keys; the environment
// overrides it, and a flag overrides both.
func TestConfigFilePrecedence(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "safekeeper.yaml")
	if err := os.WriteFile(cfgFile, []byte("data-dir: /from/file\nname: sk-file\nwal-sender-timeout: 7s\nlisten-pg: 127.0.0.1:7001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SAFEKEEPER_NAME", "sk-env")
	t.Setenv("SAFEKEEPER_WAL_SENDER_TIMEOUT", "9s")
	c, err := parseFlags([]string{"--config", cfgFile, "--wal-sender-timeout", "11s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.dataDir != "/from/file" || c.name != "sk-env" || c.walSenderTimeout != 11*time.Second || c.listenPG != "127.0.0.1:7001" {
		t.Fatalf("precedence flags > environment > file: got data-dir %q name %q timeout %s listen %q", c.dataDir, c.name, c.walSenderTimeout, c.listenPG)
	}
	if err := os.WriteFile(cfgFile, []byte("no-such-flag: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseFlags([]string{"--config", cfgFile}); err == nil || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("unknown key in the config file: %v", err)
	}
}
