package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/internal/testcert"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
)

// authEnv is the environment for libpq client processes: the test
// process's PG* variables and ~/.pgpass are kept out; extra is added.
func authEnv(t testing.TB, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "SAFEKEEPER_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+t.TempDir(), "PGPASSFILE="+filepath.Join(t.TempDir(), "none"), "PGCONNECT_TIMEOUT=20")
	return append(env, extra...)
}

// authPasswd runs "safekeeper passwd" with stdin and extra environment.
func authPasswd(t testing.TB, stdin string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, safekeeperBinary(t), append([]string{"passwd"}, args...)...)
	cmd.Env = authEnv(t, env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func authMustPasswd(t testing.TB, stdin string, env []string, args ...string) {
	t.Helper()
	if out, err := authPasswd(t, stdin, env, args...); err != nil {
		t.Fatalf("safekeeper passwd %v: %v\n%s", args, err, out)
	}
}

// authPsql runs psql -c cmd against conn with extra environment.
func authPsql(t testing.TB, bins *pgtest.Bins, conn, cmd string, env ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, bins.Path("psql"), "-X", "-A", "-t", "-w", "-F", "|", "-d", conn, "-c", cmd)
	c.Env = authEnv(t, env...)
	out, err := c.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// authIdentify requires psql IDENTIFY_SYSTEM to work and return the
// primary's system identifier.
func authIdentify(t testing.TB, primary *pgtest.Cluster, conn string, env ...string) {
	t.Helper()
	out, err := authPsql(t, primary.Bins, conn, "IDENTIFY_SYSTEM", env...)
	if err != nil {
		t.Fatalf("psql %q IDENTIFY_SYSTEM: %v\n%s", conn, err, out)
	}
	if want := fmt.Sprint(primary.SystemID(t)); !strings.HasPrefix(out, want+"|") {
		t.Fatalf("IDENTIFY_SYSTEM returned %q, want system id %s", out, want)
	}
}

// authPsqlFails requires psql to fail with the given server message.
func authPsqlFails(t testing.TB, bins *pgtest.Bins, conn, want string, env ...string) {
	t.Helper()
	out, err := authPsql(t, bins, conn, "IDENTIFY_SYSTEM", env...)
	if err == nil {
		t.Fatalf("psql %q succeeded (%s), want %q", conn, out, want)
	}
	if !strings.Contains(out, want) {
		t.Fatalf("psql %q: got\n%s\nwant it to contain %q", conn, out, want)
	}
}

// authStartPair starts a 1 MB-segment primary and a safekeeper with extra
// flags, caught up.
func authStartPair(t *testing.T, extra ...string) (*pgtest.Cluster, *SK) {
	t.Helper()
	return authStartPairToken(t, "", extra...)
}

// authStartPairToken is authStartPair for a safekeeper whose HTTP API
// wants the bearer token httpToken.
func authStartPairToken(t *testing.T, httpToken string, extra ...string) (*pgtest.Cluster, *SK) {
	t.Helper()
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := newSK(t, "safekeeper", primary.ConnString(), nil, extra...)
	sk.HTTPToken = httpToken
	sk.Start()
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	return primary, sk
}

// authReceivewal runs pg_receivewal with conn until it has a complete
// segment, stops it and compares what it wrote with the primary's files.
func authReceivewal(t *testing.T, primary *pgtest.Cluster, conn string, env ...string) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(primary.Bins.Path("pg_receivewal"), "-d", conn, "-D", dir, "--no-loop", "-w")
	cmd.Env = authEnv(t, env...)
	out := &authOutput{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
	}()
	generateSegments(t, primary, 2)
	deadline := time.Now().Add(60 * time.Second)
	for len(completeSegments(t, dir)) < 1 {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("pg_receivewal %q exited: %v\n%s", conn, err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pg_receivewal %q wrote no complete segment in 60s:\n%s", conn, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
		done <- nil
	case <-time.After(20 * time.Second):
		t.Fatalf("pg_receivewal did not stop on SIGINT:\n%s", out.String())
	}
	names := completeSegments(t, dir)
	compareWithPrimary(t, primary, dir, names)
	t.Logf("pg_receivewal (%s) wrote %d segments identical to the primary's", conn, len(names))
}

// authOutput collects a process's output; String may be called while it runs.
type authOutput struct {
	mu sync.Mutex
	b  []byte
}

func (l *authOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *authOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// authRequire returns a require_auth setting for libpq 16 and later
// (which check the method the server asked for), "" for older ones.
func authRequire(bins *pgtest.Bins, method string) string {
	if bins.Major() >= 16 {
		return " require_auth=" + method
	}
	return ""
}

// authPgconn connects with pgconn (replication=true) and closes again.
func authPgconn(t testing.TB, conn string) error {
	t.Helper()
	cfg, err := pgconn.ParseConfig(conn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "true"
	cfg.ConnectTimeout = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err == nil {
		c.Close(ctx)
	}
	return err
}

func authWantFatal(t testing.TB, err error, code, msg string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("want FATAL %s %q, got %v", code, msg, err)
	}
	if pe.Severity != "FATAL" || pe.Code != code || pe.Message != msg {
		t.Fatalf("got %s %s %q, want FATAL %s %q", pe.Severity, pe.Code, pe.Message, code, msg)
	}
}

// authRawSCRAM runs SCRAM by hand (xdg-go/scram's client, empty n= as
// libpq) and returns the server's answer to the client-final-message and
// what a further read returns.
func authRawSCRAM(t *testing.T, port int, user, password string) (pgproto3.BackendMessage, error) {
	t.Helper()
	nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	fe := pgproto3.NewFrontend(nc, nc)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": user, "replication": "true", "database": "replication"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := fe.Receive()
	sasl, ok := m.(*pgproto3.AuthenticationSASL)
	if err != nil || !ok || len(sasl.AuthMechanisms) != 1 || sasl.AuthMechanisms[0] != "SCRAM-SHA-256" {
		t.Fatalf("want AuthenticationSASL [SCRAM-SHA-256], got %#v, %v", m, err)
	}
	client, _ := scram.SHA256.NewClient("", password, "")
	conv := client.NewConversation()
	first, _ := conv.Step("")
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(first)})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err = fe.Receive()
	cont, ok := m.(*pgproto3.AuthenticationSASLContinue)
	if err != nil || !ok {
		t.Fatalf("want AuthenticationSASLContinue, got %#v, %v", m, err)
	}
	final, err := conv.Step(string(cont.Data))
	if err != nil {
		t.Fatalf("client: %v (server-first %q)", err, cont.Data)
	}
	fe.Send(&pgproto3.SASLResponse{Data: []byte(final)})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	answer, err := fe.Receive()
	if err != nil {
		t.Fatalf("no answer to client-final-message: %v", err)
	}
	_, after := fe.Receive()
	return answer, after
}

// Users are added with "safekeeper passwd"; SCRAM-SHA-256 lets the right
// password in (pg_receivewal streams, psql IDENTIFY_SYSTEM works) and
// refuses a wrong one or an unknown user with the same FATAL 28P01.
func TestAuthSCRAM(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	authMustPasswd(t, "", []string{"SAFEKEEPER_PASSWORD=s3cret pw"}, "--users-file", users, "--user", "replicator")
	authMustPasswd(t, "other-pw\n", nil, "--users-file", users, "--user", "other", "--password-stdin")
	if fi, err := os.Stat(users); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("users file: %v %v", fi, err)
	}
	b, _ := os.ReadFile(users)
	if strings.Contains(string(b), "s3cret") || !strings.HasPrefix(string(b), "replicator:SCRAM-SHA-256$4096:") {
		t.Fatalf("users file content:\n%s", b)
	}

	primary, sk := authStartPair(t, "--users-file", users)
	base := fmt.Sprintf("host=127.0.0.1 port=%d sslmode=disable", sk.PGPort)
	repl := base + " user=replicator replication=true"

	authIdentify(t, primary, repl, "PGPASSWORD=s3cret pw")
	authReceivewal(t, primary, base+" user=replicator", "PGPASSWORD=s3cret pw")
	if err := authPgconn(t, repl+" password='s3cret pw'"); err != nil {
		t.Fatalf("pgconn: %v", err)
	}

	// Wrong password and unknown user: the same FATAL 28P01 text.
	authPsqlFails(t, primary.Bins, repl, `FATAL:  password authentication failed for user "replicator"`, "PGPASSWORD=wrong")
	authPsqlFails(t, primary.Bins, base+" user=nobody replication=true", `FATAL:  password authentication failed for user "nobody"`, "PGPASSWORD=s3cret pw")
	authWantFatal(t, authPgconn(t, repl+" password=wrong"), "28P01", `password authentication failed for user "replicator"`)
	authWantFatal(t, authPgconn(t, base+" user=nobody password=x"), "28P01", `password authentication failed for user "nobody"`)

	// On the wire: a full exchange, then FATAL 28P01 and the server closes.
	for _, user := range []string{"replicator", "nobody"} {
		answer, after := authRawSCRAM(t, sk.PGPort, user, "wrong")
		e, ok := answer.(*pgproto3.ErrorResponse)
		if !ok || e.Severity != "FATAL" || e.Code != "28P01" || e.Message != fmt.Sprintf("password authentication failed for user %q", user) {
			t.Fatalf("%s: got %#v", user, answer)
		}
		if !errors.Is(after, io.EOF) && !errors.Is(after, io.ErrUnexpectedEOF) {
			t.Fatalf("%s: connection not closed after FATAL: %v", user, after)
		}
	}
	answer, _ := authRawSCRAM(t, sk.PGPort, "other", "other-pw")
	if _, ok := answer.(*pgproto3.AuthenticationSASLFinal); !ok {
		t.Fatalf("right password: got %#v", answer)
	}

	// libpq without a password closes the socket when asked for one.
	authPsqlFails(t, primary.Bins, repl, "no password supplied")

	// A verifier copied from the primary's pg_authid is stored as it is,
	// and a running safekeeper picks the new user up.
	primary.Exec(t, "SET password_encryption = 'scram-sha-256'; CREATE ROLE copied LOGIN PASSWORD 'from primary'")
	verifier := primary.QueryValue(t, "SELECT rolpassword FROM pg_authid WHERE rolname = 'copied'")
	authMustPasswd(t, verifier+"\n", nil, "--users-file", users, "--user", "copied")
	authIdentify(t, primary, base+" user=copied replication=true", "PGPASSWORD=from primary")
	// Changing a password takes effect at once, too.
	authMustPasswd(t, "", []string{"SAFEKEEPER_PASSWORD=new pw"}, "--users-file", users, "--user", "replicator")
	authPsqlFails(t, primary.Bins, repl, `password authentication failed for user "replicator"`, "PGPASSWORD=s3cret pw")
	authIdentify(t, primary, repl, "PGPASSWORD=new pw")

	// .pgpass works for the consumers too.
	pgpass := filepath.Join(dir, "pgpass")
	os.WriteFile(pgpass, []byte(fmt.Sprintf("127.0.0.1:%d:*:replicator:new pw\n", sk.PGPort)), 0o600)
	authIdentify(t, primary, repl, "PGPASSFILE="+pgpass)
}

// authCerts writes a throwaway CA and a server certificate for 127.0.0.1
// and localhost signed by it; it returns the CA, certificate and key paths.
func authCerts(t *testing.T) (ca, cert, key string) {
	t.Helper()
	f, err := testcert.Must(t).WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return f.CA, f.Cert, f.Key
}

// TLS: sslmode=verify-full with the CA streams (pg_receivewal and psql,
// SCRAM-SHA-256-PLUS with channel binding), sslmode=require works, and a
// hostssl rule refuses sslmode=disable with FATAL 28000.
func TestAuthTLS(t *testing.T) {
	ca, cert, key := authCerts(t)
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	authMustPasswd(t, "tls-pw\n", nil, "--users-file", users, "--user", "replicator")
	hba := filepath.Join(dir, "hba.conf")
	os.WriteFile(hba, []byte("# TLS only\nhostssl all all scram-sha-256\n"), 0o600)
	primary, sk := authStartPair(t, "--users-file", users, "--hba-file", hba, "--tls-cert", cert, "--tls-key", key)
	pw := "PGPASSWORD=tls-pw"
	at := func(host, sslmode string) string {
		return fmt.Sprintf("host=%s port=%d user=replicator sslmode=%s sslrootcert=%s", host, sk.PGPort, sslmode, ca)
	}

	authReceivewal(t, primary, at("127.0.0.1", "verify-full"), pw)
	authIdentify(t, primary, at("127.0.0.1", "verify-full")+" replication=true", pw)
	authIdentify(t, primary, at("localhost", "verify-full")+" replication=true", pw)
	authIdentify(t, primary, at("127.0.0.1", "verify-full")+" replication=true channel_binding=require", pw)
	authIdentify(t, primary, at("127.0.0.1", "require")+" replication=true channel_binding=disable", pw)
	authIdentify(t, primary, at("127.0.0.1", "require")+" replication=true", pw)
	if err := authPgconn(t, at("127.0.0.1", "verify-full")+" password=tls-pw channel_binding=require"); err != nil {
		t.Fatalf("pgconn verify-full: %v", err)
	}

	// Wrong password over TLS.
	authPsqlFails(t, primary.Bins, at("127.0.0.1", "verify-full")+" replication=true", `FATAL:  password authentication failed for user "replicator"`, "PGPASSWORD=nope")
	// The hostssl rule refuses plaintext.
	want := `no pg_hba.conf entry for replication connection from host "127.0.0.1", user "replicator", no encryption`
	authPsqlFails(t, primary.Bins, at("127.0.0.1", "disable")+" replication=true", "FATAL:  "+want, pw)
	authWantFatal(t, authPgconn(t, at("127.0.0.1", "disable")+" password=tls-pw"), "28000", want)
	// verify-full against another CA fails on the client side.
	otherCA, _, _ := authCerts(t)
	out, err := authPsql(t, primary.Bins, fmt.Sprintf("host=127.0.0.1 port=%d user=replicator sslmode=verify-full sslrootcert=%s replication=true", sk.PGPort, otherCA), "IDENTIFY_SYSTEM", pw)
	if err == nil || !strings.Contains(out, "certificate verify failed") {
		t.Fatalf("verify-full with the wrong CA: %v\n%s", err, out)
	}
}

// Without a users or rules file, TLS alone: 'S', and everyone is trusted
// as before.
func TestAuthTLSWithoutPasswords(t *testing.T) {
	ca, cert, key := authCerts(t)
	primary, sk := authStartPair(t, "--tls-cert", cert, "--tls-key", key, "--tls-min-version", "1.3")
	authIdentify(t, primary, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=verify-full sslrootcert=%s replication=true", sk.PGPort, ca))
	authIdentify(t, primary, sk.ConnString()) // sslmode=disable still works
	out, err := authPsql(t, primary.Bins, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=require ssl_max_protocol_version=TLSv1.2 replication=true", sk.PGPort), "IDENTIFY_SYSTEM")
	if err == nil {
		t.Fatalf("TLS 1.2 client accepted with --tls-min-version 1.3: %s", out)
	}
}

// md5 verifiers work for clients that need them (md5 rule).
func TestAuthMD5(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	authMustPasswd(t, "old-pw\n", nil, "--users-file", users, "--user", "legacy", "--md5")
	authMustPasswd(t, "new-pw\n", nil, "--users-file", users, "--user", "modern")
	b, _ := os.ReadFile(users)
	if !strings.HasPrefix(string(b), "legacy:md5") {
		t.Fatalf("users file:\n%s", b)
	}
	hba := filepath.Join(dir, "hba.conf")
	os.WriteFile(hba, []byte("host legacy,modern 127.0.0.1/32 md5\n"), 0o600)
	primary, sk := authStartPair(t, "--users-file", users, "--hba-file", hba)
	base := fmt.Sprintf("host=127.0.0.1 port=%d sslmode=disable replication=true", sk.PGPort)

	authIdentify(t, primary, base+" user=legacy"+authRequire(primary.Bins, "md5"), "PGPASSWORD=old-pw")
	if err := authPgconn(t, base+" user=legacy password=old-pw require_auth=md5"); err != nil {
		t.Fatalf("pgconn md5: %v", err)
	}
	authPsqlFails(t, primary.Bins, base+" user=legacy", `FATAL:  password authentication failed for user "legacy"`, "PGPASSWORD=bad")
	authWantFatal(t, authPgconn(t, base+" user=legacy password=bad"), "28P01", `password authentication failed for user "legacy"`)
	// A SCRAM user under an md5 rule authenticates with SCRAM, as in PostgreSQL.
	authIdentify(t, primary, base+" user=modern"+authRequire(primary.Bins, "scram-sha-256"), "PGPASSWORD=new-pw")
	if err := authPgconn(t, base+" user=modern password=new-pw require_auth=scram-sha-256"); err != nil {
		t.Fatalf("pgconn scram under an md5 rule: %v", err)
	}
}

// Host rules: first match wins; trust, reject and no match get
// PostgreSQL's texts.
func TestAuthHbaRules(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	authMustPasswd(t, "pw\n", nil, "--users-file", users, "--user", "replicator")
	hba := filepath.Join(dir, "hba.conf")
	os.WriteFile(hba, []byte(`
host      trusted     127.0.0.1/32   trust
host      blocked     all            reject
hostnossl replicator  10.0.0.0/8     scram-sha-256
host      replication replicator 127.0.0.1 scram-sha-256   # pg_hba.conf style
`), 0o600)
	primary, sk := authStartPair(t, "--users-file", users, "--hba-file", hba)
	base := fmt.Sprintf("host=127.0.0.1 port=%d sslmode=disable replication=true", sk.PGPort)

	authIdentify(t, primary, base+" user=trusted"+authRequire(primary.Bins, "none"))
	if err := authPgconn(t, base+" user=trusted require_auth=none"); err != nil {
		t.Fatalf("pgconn trust: %v", err)
	}
	authIdentify(t, primary, base+" user=replicator", "PGPASSWORD=pw")
	authPsqlFails(t, primary.Bins, base+" user=blocked", `FATAL:  pg_hba.conf rejects replication connection for host "127.0.0.1", user "blocked", no encryption`)
	authWantFatal(t, authPgconn(t, base+" user=someone"), "28000", `no pg_hba.conf entry for replication connection from host "127.0.0.1", user "someone", no encryption`)
}

// The upstream side: a primary that requires SCRAM for replication is
// streamed from with the password in the connection string, and with
// PGPASSFILE.
func TestAuthUpstreamSCRAM(t *testing.T) {
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	primary.Exec(t, "SET password_encryption = 'scram-sha-256'; CREATE ROLE rep LOGIN REPLICATION PASSWORD 'up pw'")
	hba := `# written by auth_test
local   all             all                     trust
host    all             all     127.0.0.1/32    trust
local   replication     all                     trust
host    replication     all     127.0.0.1/32    scram-sha-256
`
	if err := os.WriteFile(filepath.Join(primary.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	primary.Reload(t)
	// The primary does require the password now.
	if err := authPgconn(t, fmt.Sprintf("host=127.0.0.1 port=%d user=rep sslmode=disable", primary.Port)); err == nil {
		t.Fatal("the primary accepted a replication connection without a password")
	}
	target := flushLSNOfPrimary(t, primary)

	t.Run("password in conn string", func(t *testing.T) {
		sk := StartSK(t, fmt.Sprintf("host=127.0.0.1 port=%d user=rep password='up pw' sslmode=disable", primary.Port), "--name", "sk_connstr")
		sk.WaitFlush(t, target, 60*time.Second)
		primary.WaitForQuery(t, "SELECT usename FROM pg_stat_replication WHERE application_name = 'sk_connstr'", "rep", 30*time.Second)
	})
	t.Run("PGPASSFILE", func(t *testing.T) {
		pgpass := filepath.Join(t.TempDir(), "pgpass")
		if err := os.WriteFile(pgpass, []byte(fmt.Sprintf("127.0.0.1:%d:*:rep:up pw\n", primary.Port)), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PGPASSWORD", "")
		os.Unsetenv("PGPASSWORD")
		t.Setenv("PGPASSFILE", pgpass)
		sk := StartSK(t, fmt.Sprintf("host=127.0.0.1 port=%d user=rep sslmode=disable", primary.Port), "--name", "sk_pgpass")
		sk.WaitFlush(t, target, 60*time.Second)
		primary.WaitForQuery(t, "SELECT usename FROM pg_stat_replication WHERE application_name = 'sk_pgpass'", "rep", 30*time.Second)
	})
	t.Run("--upstream-password-file", func(t *testing.T) {
		pwFile := filepath.Join(t.TempDir(), "upstream-password")
		if err := os.WriteFile(pwFile, []byte("up pw\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		sk := StartSK(t, fmt.Sprintf("host=127.0.0.1 port=%d user=rep sslmode=disable", primary.Port),
			"--name", "sk_pwfile", "--upstream-password-file", pwFile)
		sk.WaitFlush(t, target, 60*time.Second)
		primary.WaitForQuery(t, "SELECT usename FROM pg_stat_replication WHERE application_name = 'sk_pwfile'", "rep", 30*time.Second)
	})
	t.Run("wrong password: not ready, with the reason", func(t *testing.T) {
		sk := StartSK(t, fmt.Sprintf("host=127.0.0.1 port=%d user=rep password=wrong sslmode=disable", primary.Port), "--name", "sk_wrong",
			"--tenant-id", timeline.NewHexID(), "--timeline-id", timeline.NewHexID())
		pgtest.WaitFor(t, 30*time.Second, "/readyz to report the refused password", func() bool {
			code, reasons := sk.readyz(t)
			return code == 503 && len(reasons) == 1 && strings.Contains(reasons[0], "password authentication failed")
		})
	})
}

// safekeeper passwd: --delete, refusals, and the rules/users consistency
// checks at start.
func TestAuthPasswdCommand(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	authMustPasswd(t, "a\n", nil, "--users-file", users, "--user", "alice")
	authMustPasswd(t, "b\n", nil, "--users-file", users, "--user", "bob")
	authMustPasswd(t, "", nil, "--users-file", users, "--user", "alice", "--delete")
	b, _ := os.ReadFile(users)
	if strings.Contains(string(b), "alice:") || !strings.Contains(string(b), "bob:SCRAM-SHA-256$") {
		t.Fatalf("after delete:\n%s", b)
	}
	if out, err := authPasswd(t, "", nil, "--users-file", users, "--user", "alice", "--delete"); err == nil {
		t.Fatalf("deleting a missing user succeeded: %s", out)
	}
	if out, err := authPasswd(t, "", nil, "--users-file", users, "--user", "x"); err == nil || !strings.Contains(out, "empty password") {
		t.Fatalf("empty password: %v %s", err, out)
	}
	if out, err := authPasswd(t, "pw\n", nil, "--users-file", users, "--user", "a:b"); err == nil {
		t.Fatalf("user name with ':' accepted: %s", out)
	}
	if out, err := authPasswd(t, "pw\n", nil, "--user", "x"); err == nil {
		t.Fatalf("missing --users-file accepted: %s", out)
	}
	// SAFEKEEPER_USERS_FILE works like the flag.
	authMustPasswd(t, "c\n", []string{"SAFEKEEPER_USERS_FILE=" + users}, "--user", "carol")
	if b, _ := os.ReadFile(users); !strings.Contains(string(b), "carol:SCRAM-SHA-256$") {
		t.Fatalf("SAFEKEEPER_USERS_FILE ignored:\n%s", b)
	}

	// The server refuses to start with a plaintext users file or password
	// rules without users.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("alice:hunter2\n"), 0o600)
	hba := filepath.Join(dir, "hba")
	os.WriteFile(hba, []byte("host all all scram-sha-256\n"), 0o600)
	for _, args := range [][]string{
		{"--users-file", plain},
		{"--hba-file", hba},
		{"--tls-cert", filepath.Join(dir, "missing.pem")},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, safekeeperBinary(t), append([]string{"run", "--data-dir", filepath.Join(t.TempDir(), "d"), "--listen-pg", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"}, args...)...)
		cmd.Env = authEnv(t)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			t.Fatalf("safekeeper run %v started:\n%s", args, out)
		}
	}
}
