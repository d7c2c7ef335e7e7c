package tests

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// jwtKey makes an Ed25519 key pair and writes its public half as
// `openssl pkey -pubout` does; it returns the private key and the file.
func jwtKey(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "auth-public.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return priv, p
}

func jwtSign(t *testing.T, key ed25519.PrivateKey, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jwtOptions names a timeline in the startup options, one -c per id.
func jwtOptions(tenant, tl string) string {
	return fmt.Sprintf(" options='-c tenant_id=%s -c timeline_id=%s'", tenant, tl)
}

// jwtIdentify connects with pgconn (replication=true), runs
// IDENTIFY_SYSTEM and returns the system identifier it reports.
func jwtIdentify(t *testing.T, conn string) (string, error) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(conn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["replication"] = "true"
	cfg.ConnectTimeout = 20 * time.Second
	ctx := ctxTimeout(t, 30*time.Second)
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	res, err := c.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		return "", err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		t.Fatalf("IDENTIFY_SYSTEM: %+v", res)
	}
	return string(res[0].Rows[0][0]), nil
}

// A safekeeper with --pg-auth-public-key takes Neon-style tokens as
// passwords: a tenant token streams its tenant's timeline (pgconn and
// pg_receivewal), a safekeeperdata token any; a token for another tenant
// is refused with 28000 before the timeline is looked up, and an expired
// or foreign-signed token gets PostgreSQL's 28P01.
func TestAuthJWT(t *testing.T) {
	key, keyFile := jwtKey(t)
	foreign, _ := jwtKey(t)
	primary, sk := authStartPair(t, "--pg-auth-public-key", keyFile)
	generateSegments(t, primary, 1)
	end := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, end, 60*time.Second)
	st := sk.Status(t).Timelines[0]
	tenant, tl := st.TenantID, st.TimelineID
	other := timeline.NewHexID()
	sysid := fmt.Sprint(primary.SystemID(t))

	tenantTok := jwtSign(t, key, jwt.MapClaims{"scope": "tenant", "tenant_id": tenant, "exp": time.Now().Add(time.Hour).Unix()})
	otherTok := jwtSign(t, key, jwt.MapClaims{"scope": "tenant", "tenant_id": other})
	allTok := jwtSign(t, key, jwt.MapClaims{"scope": "safekeeperdata"})
	expiredTok := jwtSign(t, key, jwt.MapClaims{"scope": "safekeeperdata", "exp": time.Now().Add(-time.Hour).Unix()})
	foreignTok := jwtSign(t, foreign, jwt.MapClaims{"scope": "safekeeperdata"})

	base := fmt.Sprintf("host=127.0.0.1 port=%d sslmode=disable user=compute", sk.PGPort)
	mine := jwtOptions(tenant, tl)

	// The tenant token for its tenant: IDENTIFY_SYSTEM, START_REPLICATION
	// (the primary's bytes), and pg_receivewal with PGPASSWORD.
	if got, err := jwtIdentify(t, base+" password="+tenantTok+mine); err != nil || got != sysid {
		t.Fatalf("tenant token: IDENTIFY_SYSTEM %q, %v; want %s", got, err, sysid)
	}
	segSize := st.WalSegSize
	start := wal.SegmentStart(end-1, segSize)
	got, _ := streamRange(t, base+" replication=true password="+tenantTok+mine, start, end, st.TLI)
	if want := primaryBytes(t, primary, st.TLI, segSize, start, end); !bytes.Equal(got, want) {
		t.Fatalf("streamed WAL %s..%s differs from the primary's", start, end)
	}
	authReceivewal(t, primary, base+mine, "PGPASSWORD="+tenantTok)
	// libpq (psql) too, and without options: the one hosted timeline is
	// the token's.
	authIdentify(t, primary, base+" replication=true"+mine+authRequire(primary.Bins, "password"), "PGPASSWORD="+tenantTok)
	authIdentify(t, primary, base+" replication=true", "PGPASSWORD="+tenantTok)

	// safekeeperdata: any tenant, with or without options.
	for _, o := range []string{mine, ""} {
		if got, err := jwtIdentify(t, base+" password="+allTok+o); err != nil || got != sysid {
			t.Fatalf("safekeeperdata token (options %q): %q, %v", o, got, err)
		}
	}
	authReceivewal(t, primary, base, "PGPASSWORD="+allTok)

	// Another tenant's token: 28000, the same for a hosted timeline named
	// with its tenant id and for a tenant that has nothing here.
	_, err := jwtIdentify(t, base+" password="+otherTok+mine)
	authWantFatal(t, err, "28000", "permission denied for tenant "+tenant)
	_, err = jwtIdentify(t, base+" password="+tenantTok+jwtOptions(other, tl))
	authWantFatal(t, err, "28000", "permission denied for tenant "+other)
	_, err = jwtIdentify(t, base+" password="+otherTok)
	authWantFatal(t, err, "28000", "permission denied for the hosted timeline")
	var pe *pgconn.PgError
	if errors.As(err, &pe) && strings.Contains(pe.Message+pe.Detail+pe.Hint, tenant) {
		t.Fatalf("the refusal names the hosted tenant: %+v", pe)
	}
	authPsqlFails(t, primary.Bins, base+" replication=true"+mine, "FATAL:  permission denied for tenant "+tenant, "PGPASSWORD="+otherTok)
	// Its own tenant, a timeline not hosted: that it may learn.
	_, err = jwtIdentify(t, base+" password="+tenantTok+jwtOptions(tenant, other))
	authWantFatal(t, err, "3D000", fmt.Sprintf("timeline %s/%s does not exist", tenant, other))

	// Bad tokens: 28P01, whatever the reason.
	for name, tok := range map[string]string{"expired": expiredTok, "foreign key": foreignTok, "not a token": "hunter2"} {
		_, err := jwtIdentify(t, base+" password="+tok+mine)
		authWantFatal(t, err, "28P01", `password authentication failed for user "compute"`)
		if errors.As(err, &pe) && (pe.Detail != "" || pe.Hint != "") {
			t.Fatalf("%s: the refusal says more: %+v", name, pe)
		}
	}
	authPsqlFails(t, primary.Bins, base+" replication=true"+mine, `FATAL:  password authentication failed for user "compute"`, "PGPASSWORD="+expiredTok)
	// libpq without a password closes the socket when asked for one.
	authPsqlFails(t, primary.Bins, base+" replication=true"+mine, "no password supplied")

	// The reason is in the log, not on the wire.
	log, _ := os.ReadFile(sk.logPath)
	for _, want := range []string{"token is expired", "signature is invalid", "the token is for tenant " + other + ", not " + tenant} {
		if !strings.Contains(string(log), want) {
			t.Errorf("safekeeper log lacks %q", want)
		}
	}
}

// A rules file mixes methods: SCRAM for a user from the users file, a
// token for everyone else; users file and key without rules, or a key
// file that is not one, stop the start with one line and status 2.
func TestAuthJWTWithRulesAndConfigErrors(t *testing.T) {
	key, keyFile := jwtKey(t)
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	authMustPasswd(t, "pw\n", nil, "--users-file", users, "--user", "replicator")
	hba := filepath.Join(dir, "hba.conf")
	os.WriteFile(hba, []byte("host replicator all scram-sha-256\nhost all all jwt\n"), 0o600)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--users-file", users, "--pg-auth-public-key", keyFile}, "safekeeper: --users-file and --pg-auth-public-key need an --hba-file"},
		{[]string{"--pg-auth-public-key", users}, "safekeeper: --pg-auth-public-key: " + users + `: no PEM "PUBLIC KEY" block`},
		{[]string{"--pg-auth-public-key", filepath.Join(dir, "missing.pem")}, "safekeeper: --pg-auth-public-key: open "},
		{[]string{"--http-auth-public-key", hba}, "safekeeper: --http-auth-public-key: " + hba + `: no PEM "PUBLIC KEY" block`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, safekeeperBinary(t), append([]string{"run", "--data-dir", filepath.Join(t.TempDir(), "d"),
			"--listen-pg", "127.0.0.1:0", "--listen-http", "127.0.0.1:0",
			"--tenant-id", timeline.NewHexID(), "--timeline-id", timeline.NewHexID()}, c.args...)...)
		cmd.Env = authEnv(t)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		var ee *exec.ExitError
		out := strings.TrimSuffix(stderr.String(), "\n")
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || strings.Contains(out, "\n") || !strings.HasPrefix(out, c.want) {
			t.Errorf("%v: %v, stderr:\n%s\nwant status 2 and one line starting %q", c.args, err, out, c.want)
		}
	}

	tok := jwtSign(t, key, jwt.MapClaims{"scope": "safekeeperdata"})
	primary, sk := authStartPairToken(t, tok, "--users-file", users, "--hba-file", hba, "--pg-auth-public-key", keyFile, "--http-auth-public-key", keyFile)
	base := fmt.Sprintf("host=127.0.0.1 port=%d sslmode=disable replication=true", sk.PGPort)
	authIdentify(t, primary, base+" user=replicator"+authRequire(primary.Bins, "scram-sha-256"), "PGPASSWORD=pw")
	authIdentify(t, primary, base+" user=pageserver"+authRequire(primary.Bins, "password"), "PGPASSWORD="+tok)
	// A token is not replicator's password.
	authPsqlFails(t, primary.Bins, base+" user=replicator", `FATAL:  password authentication failed for user "replicator"`, "PGPASSWORD="+tok)
	// SCRAM connections are not limited to a tenant.
	if _, err := jwtIdentify(t, base+" user=replicator password=pw"+jwtOptions(sk.Status(t).Timelines[0].TenantID, sk.Status(t).Timelines[0].TimelineID)); err != nil {
		t.Fatalf("scram with options: %v", err)
	}
}
