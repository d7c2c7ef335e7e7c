package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/auth"
	"github.com/pgsafekeeper/safekeeper/pkg/walsender"
)

// writeKeyFile writes a PEM file of n fresh Ed25519 public keys.
func writeKeyFile(t *testing.T, dir string, n int) string {
	t.Helper()
	var b []byte
	for range n {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(pub)
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	p := filepath.Join(dir, "keys.pem")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// applyFlags parses args after --data-dir and applies the security flags.
func applyFlags(t *testing.T, args ...string) (config, walsender.Config, error) {
	t.Helper()
	c, err := parseFlags(append([]string{"--data-dir", t.TempDir()}, args...))
	if err != nil {
		t.Fatalf("parseFlags %v: %v", args, err)
	}
	var wc walsender.Config
	err = applySecurity(c.security, &wc)
	return c, wc, err
}

func TestPgAuthPublicKeyFlag(t *testing.T) {
	dir := t.TempDir()
	keys := writeKeyFile(t, dir, 2)
	users := filepath.Join(dir, "users")
	v, _ := auth.NewSCRAMVerifier("pw", auth.DefaultIterations)
	if err := auth.SetUser(users, "alice", auth.Verifier{SCRAM: v}); err != nil {
		t.Fatal(err)
	}
	hba := filepath.Join(dir, "hba")
	os.WriteFile(hba, []byte("host alice all scram-sha-256\nhost all all jwt\n"), 0o600)
	jwtOnly := filepath.Join(dir, "hba-jwt")
	os.WriteFile(jwtOnly, []byte("hostssl all all jwt\n"), 0o600)
	notKey := filepath.Join(dir, "not-a-key")
	os.WriteFile(notKey, []byte("hello\n"), 0o644)

	for _, args := range [][]string{
		{"--pg-auth-public-key", keys},
		{"--pg-auth-public-key", keys, "--users-file", users, "--hba-file", hba},
		{"--pg-auth-public-key", keys, "--hba-file", jwtOnly},
	} {
		if _, wc, err := applyFlags(t, args...); err != nil || wc.Auth == nil {
			t.Errorf("%v: auth %v, %v", args, wc.Auth, err)
		}
	}
	t.Setenv("SAFEKEEPER_PG_AUTH_PUBLIC_KEY", keys)
	if _, wc, err := applyFlags(t); err != nil || wc.Auth == nil {
		t.Errorf("SAFEKEEPER_PG_AUTH_PUBLIC_KEY: auth %v, %v", wc.Auth, err)
	}
	os.Unsetenv("SAFEKEEPER_PG_AUTH_PUBLIC_KEY")

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--pg-auth-public-key", keys, "--users-file", users}, "--users-file and --pg-auth-public-key need an --hba-file"},
		{[]string{"--pg-auth-public-key", filepath.Join(dir, "missing.pem")}, "--pg-auth-public-key: open "},
		{[]string{"--pg-auth-public-key", notKey}, "--pg-auth-public-key: " + notKey + ": no PEM"},
		{[]string{"--users-file", users, "--hba-file", jwtOnly}, "--users-file/--hba-file: " + jwtOnly + " asks for jwt but no token public key"},
	} {
		_, _, err := applyFlags(t, c.args...)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want one line starting %q", c.args, err, c.want)
		}
	}
}

// --http-auth-public-key is loaded while the flags are parsed, into the
// securityConfig that main keeps; a bad file is a configuration error.
func TestHTTPAuthPublicKeyFlag(t *testing.T) {
	dir := t.TempDir()
	keys := writeKeyFile(t, dir, 1)
	c, wc, err := applyFlags(t, "--http-auth-public-key", keys)
	if err != nil || c.security.httpTokens == nil || wc.Auth != nil {
		t.Fatalf("httpTokens %v, replication auth %v, %v", c.security.httpTokens, wc.Auth, err)
	}
	if c, _, _ := applyFlags(t); c.security.httpTokens != nil {
		t.Fatal("httpTokens without the flag")
	}
	t.Setenv("SAFEKEEPER_HTTP_AUTH_PUBLIC_KEY", keys)
	if c, _, err := applyFlags(t); err != nil || c.security.httpTokens == nil {
		t.Fatalf("SAFEKEEPER_HTTP_AUTH_PUBLIC_KEY: %v %v", c.security.httpTokens, err)
	}
	os.Unsetenv("SAFEKEEPER_HTTP_AUTH_PUBLIC_KEY")

	for _, bad := range []string{filepath.Join(dir, "missing.pem"), dir} {
		c, _, err := applyFlags(t, "--http-auth-public-key", bad)
		if err == nil || !strings.HasPrefix(err.Error(), "--http-auth-public-key: ") || c.security.httpTokens != nil {
			t.Errorf("%s: %v", bad, err)
		}
	}
	// The last occurrence wins, as for every flag.
	if c, _, err := applyFlags(t, "--http-auth-public-key", filepath.Join(dir, "missing.pem"), "--http-auth-public-key", keys); err != nil || c.security.httpTokens == nil {
		t.Errorf("bad then good: %v", err)
	}
}

func TestAuthKeyConfigErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	id := "0123456789abcdef0123456789abcdef"
	base := []string{"run", "--data-dir", t.TempDir(), "--tenant-id", id, "--timeline-id", id,
		"--listen-pg", "127.0.0.1:1", "--listen-http", "127.0.0.1:1"}
	users := filepath.Join(dir, "users")
	v, _ := auth.NewSCRAMVerifier("pw", auth.DefaultIterations)
	auth.SetUser(users, "alice", auth.Verifier{SCRAM: v})
	keys := writeKeyFile(t, dir, 1)
	for _, extra := range [][]string{
		{"--pg-auth-public-key", "/nonexistent/key.pem"},
		{"--http-auth-public-key", "/nonexistent/key.pem"},
		{"--pg-auth-public-key", users},
		{"--pg-auth-public-key", keys, "--users-file", users},
	} {
		if code := realMain(append(append([]string(nil), base...), extra...)); code != 2 {
			t.Errorf("%v: exit status %d, want 2", extra, code)
		}
	}
}
