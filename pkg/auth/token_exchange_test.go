package auth

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

func newTokenAuth(t *testing.T, users, rules string, v *TokenVerifier) *Authenticator {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{MockSecret: []byte("0123456789abcdef0123456789abcdef"), Tokens: v}
	if users != "" {
		cfg.UsersFile = writeFile(t, dir, "users", users)
	}
	if rules != "" {
		cfg.RulesFile = writeFile(t, dir, "hba", rules)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// wantPasswordFailed requires PostgreSQL's 28P01 and nothing more: no
// detail or hint that would tell the client why its token was refused.
func wantPasswordFailed(t *testing.T, err error, user string) {
	t.Helper()
	wantPgError(t, err, "28P01", `password authentication failed for user "`+user+`"`)
	var pe *pgconn.PgError
	errors.As(err, &pe)
	if pe.Detail != "" || pe.Hint != "" {
		t.Fatalf("the refusal tells the client more: detail %q hint %q", pe.Detail, pe.Hint)
	}
}

// With keys alone every connection gives a JWT as its password; the
// claims come back from Authenticate; every bad token gets the same 28P01.
func TestJWTWithPgconn(t *testing.T) {
	pub, priv := newEdKey(t)
	_, otherPriv := newEdKey(t)
	s := startTestServer(t, newTokenAuth(t, "", "", newVerifier(t, pub)), nil)

	tok := sign(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": tenantA})
	if err := s.connect(t, "user=anyone sslmode=disable require_auth=password password="+tok); err != nil {
		t.Fatalf("valid token: %v", err)
	}
	c, err := s.resultClaims(t)
	if err != nil || c == nil || c.Scope != ScopeTenant || c.TenantID != tenantA {
		t.Fatalf("server: claims %+v, %v", c, err)
	}

	for name, bad := range map[string]string{
		"expired":   sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata", "exp": time.Now().Add(-time.Hour).Unix()}),
		"other key": sign(t, otherPriv, jwt.MapClaims{"scope": "safekeeperdata"}),
		"garbage":   "hunter2",
		"empty":     "''",
	} {
		err := s.connect(t, "user=bob sslmode=disable password="+bad)
		wantPasswordFailed(t, err, "bob")
		if c, err := s.resultClaims(t); c != nil || pgerr.As(err) == nil {
			t.Fatalf("%s: server returned claims %+v, %v", name, c, err)
		}
	}
}

// On the wire: AuthenticationCleartextPassword, the token in a
// PasswordMessage, then the caller's AuthenticationOk or FATAL 28P01.
func TestJWTOnTheWire(t *testing.T) {
	pub, priv := newEdKey(t)
	s := startTestServer(t, newTokenAuth(t, "", "", newVerifier(t, pub)), nil)

	c := dialRaw(t, s, "alice", false)
	if _, ok := c.receive().(*pgproto3.AuthenticationCleartextPassword); !ok {
		t.Fatal("no AuthenticationCleartextPassword")
	}
	c.send(&pgproto3.PasswordMessage{Password: sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata"})})
	if _, ok := c.receive().(*pgproto3.AuthenticationOk); !ok {
		t.Fatal("no AuthenticationOk")
	}
	if claims, err := s.resultClaims(t); err != nil || claims.Scope != ScopeSafekeeperData {
		t.Fatalf("%+v %v", claims, err)
	}

	c = dialRaw(t, s, "alice", false)
	c.receive()
	c.send(&pgproto3.PasswordMessage{Password: "x.y.z"})
	e, ok := c.receive().(*pgproto3.ErrorResponse)
	if !ok || e.Severity != "FATAL" || e.Code != "28P01" || e.Message != `password authentication failed for user "alice"` {
		t.Fatalf("got %#v", e)
	}
	s.result(t)

	// A client without a password closes the socket when asked for one.
	c = dialRaw(t, s, "alice", false)
	c.receive()
	c.nc.Close()
	if err := s.result(t); !errors.Is(err, ErrClosed) {
		t.Fatalf("client closed: %v", err)
	}
}

// Rules choose per connection: SCRAM for a user, jwt for the rest.
func TestJWTRulesMixed(t *testing.T) {
	pub, priv := newEdKey(t)
	a := newTokenAuth(t, scramLine(t, "alice", "pw"), "host alice all scram-sha-256\nhost all 127.0.0.1 jwt\n", newVerifier(t, pub))
	s := startTestServer(t, a, nil)
	if err := s.connect(t, "user=alice password=pw sslmode=disable require_auth=scram-sha-256"); err != nil {
		t.Fatalf("scram: %v", err)
	}
	if c, err := s.resultClaims(t); err != nil || c != nil {
		t.Fatalf("scram: claims %+v, %v", c, err)
	}
	tok := sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata"})
	if err := s.connect(t, "user=pageserver sslmode=disable require_auth=password password="+tok); err != nil {
		t.Fatalf("jwt: %v", err)
	}
	if c, err := s.resultClaims(t); err != nil || c == nil {
		t.Fatalf("jwt: claims %+v, %v", c, err)
	}
	// A token is not a SCRAM password.
	wantPasswordFailed(t, s.connect(t, "user=alice sslmode=disable password="+tok), "alice")
	s.result(t)
}

func TestNewWithTokens(t *testing.T) {
	dir := t.TempDir()
	secret := make([]byte, 32)
	pub, _ := newEdKey(t)
	v := newVerifier(t, pub)
	users := writeFile(t, dir, "users", scramLine(t, "alice", "pw"))
	jwtRules := writeFile(t, dir, "hba", "host all all jwt\n")

	a, err := New(Config{Tokens: v, MockSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, rules, _ := a.current(); len(rules) != 1 || rules[0].Method != MethodJWT {
		t.Fatalf("keys alone: rules %v", rules)
	}
	if _, err := New(Config{UsersFile: users, Tokens: v, MockSecret: secret}); err == nil || !strings.Contains(err.Error(), "rules file") {
		t.Errorf("users file and keys without rules: %v", err)
	}
	if _, err := New(Config{UsersFile: users, RulesFile: jwtRules, MockSecret: secret}); err == nil || !strings.Contains(err.Error(), "asks for jwt") {
		t.Errorf("jwt rules without keys: %v", err)
	}
	if _, err := New(Config{UsersFile: users, RulesFile: jwtRules, Tokens: v, MockSecret: secret}); err != nil {
		t.Errorf("users, jwt rules and keys: %v", err)
	}
	a, err = New(Config{UsersFile: users, MockSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, rules, _ := a.current(); rules[0].Method != MethodSCRAM {
		t.Fatalf("users alone: rules %v", rules)
	}
}

// A rules file changed to ask for jwt without keys is not taken: the
// previous rules stay in force, and the reason is reported.
func TestRulesReloadRefusesJWTWithoutKeys(t *testing.T) {
	dir := t.TempDir()
	users := writeFile(t, dir, "users", scramLine(t, "alice", "pw"))
	hba := writeFile(t, dir, "hba", "host all all scram-sha-256\n")
	a, err := New(Config{UsersFile: users, RulesFile: hba, MockSecret: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	// A different size, so the change is seen whatever the clock's grain.
	if err := os.WriteFile(hba, []byte("host all all jwt   \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, rules, errs := a.current()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "asks for jwt") || rules[0].Method != MethodSCRAM {
		t.Fatalf("rules %v, errors %v", rules, errs)
	}
}

func TestParseRulesJWT(t *testing.T) {
	rs, err := ParseRules(strings.NewReader("hostssl all all jwt\nhost replication pageserver 10.0.0.0/8 jwt # pg_hba style\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].Method != MethodJWT || rs[1].Method != MethodJWT || rs[1].String() != "host pageserver 10.0.0.0/8 jwt" {
		t.Fatalf("%v", rs)
	}
	if !rs.usesTokens() || rs.usesPasswords() || DefaultRules.usesTokens() || !DefaultTokenRules.usesTokens() {
		t.Fatal("usesTokens/usesPasswords")
	}
	for _, bad := range []string{"host all all JWT", "host all all jwt-eddsa", "host all all token"} {
		if _, err := ParseRules(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "jwt") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// fuzzKey is fixed so that the seeds hold valid tokens.
var fuzzKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// FuzzVerifyToken: Verify and VerifyBearer never panic, agree with each
// other, succeed only with claims the rules allow, and through
// Authenticate a token either passes with the same claims or fails with
// PostgreSQL's 28P01 for the user and nothing else.
func FuzzVerifyToken(f *testing.F) {
	v, err := NewTokenVerifier(fuzzKey.Public().(ed25519.PublicKey))
	if err != nil {
		f.Fatal(err)
	}
	a, err := New(Config{Tokens: v, MockSecret: make([]byte, 32)})
	if err != nil {
		f.Fatal(err)
	}
	for _, claims := range []jwt.MapClaims{
		{"scope": "tenant", "tenant_id": tenantA},
		{"scope": "safekeeperdata", "exp": 4102444800},
		{"scope": "safekeeperdata", "exp": 1},
		{"scope": "admin"},
		{"scope": "tenant"},
	} {
		f.Add(sign(f, fuzzKey, claims), "Bearer ")
	}
	hs, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"scope": "safekeeperdata"}).SignedString([]byte(fuzzKey.Public().(ed25519.PublicKey)))
	f.Add(hs, "bearer ")
	f.Add("eyJhbGciOiJub25lIn0.eyJzY29wZSI6InNhZmVrZWVwZXJkYXRhIn0.", "Bearer")
	f.Add("", "Basic ")
	f.Add("a.b.c", "")

	f.Fuzz(func(t *testing.T, token, prefix string) {
		c, err := v.Verify(token)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) || c != (Claims{}) {
				t.Fatalf("Verify: %+v, %v", c, err)
			}
		} else {
			switch {
			case !c.Scope.known():
				t.Fatalf("unknown scope %q accepted", c.Scope)
			case c.Scope == ScopeTenant && c.Allows(c.TenantID) != nil:
				t.Fatalf("tenant token %+v does not allow its own tenant", c)
			case c.TenantID != "" && c.TenantID != strings.ToLower(c.TenantID):
				t.Fatalf("tenant_id %q not normalized", c.TenantID)
			}
		}

		// "Bearer <token>" is the token.
		if token != "" && token == strings.TrimSpace(token) {
			bc, berr := v.VerifyBearer("Bearer " + token)
			if (berr == nil) != (err == nil) || bc != c {
				t.Fatalf("VerifyBearer: %+v, %v; Verify: %+v, %v", bc, berr, c, err)
			}
		}
		// Any other header succeeds only as "Bearer" and the token.
		h := prefix + token
		bc, berr := v.VerifyBearer(h)
		if berr == nil {
			f := strings.Fields(h)
			if len(f) != 2 || !strings.EqualFold(f[0], "bearer") {
				t.Fatalf("VerifyBearer(%q) accepted", h)
			}
			if c2, err2 := v.Verify(f[1]); err2 != nil || c2 != bc {
				t.Fatalf("VerifyBearer(%q) = %+v; Verify(%q) = %+v, %v", h, bc, f[1], c2, err2)
			}
		} else if !errors.Is(berr, ErrNoBearer) && !errors.Is(berr, ErrInvalidToken) {
			t.Fatalf("VerifyBearer: %v", berr)
		}

		if strings.ContainsRune(token, 0) {
			return // a PasswordMessage cannot carry it
		}
		var in, out bytes.Buffer
		msg, _ := (&pgproto3.PasswordMessage{Password: token}).Encode(nil)
		in.Write(msg)
		be := pgproto3.NewBackend(&in, &out)
		ac, aerr := a.Authenticate(Session{Backend: be, User: "u", RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5}})
		switch {
		case aerr == nil:
			if err != nil || ac == nil || *ac != c {
				t.Fatalf("Authenticate let %q in with %+v; Verify: %v", token, ac, err)
			}
		default:
			pe := pgerr.As(aerr)
			if ac != nil || pe == nil || pe.Code != pgerr.InvalidPassword || pe.Message != `password authentication failed for user "u"` || pe.Detail != "" || pe.Hint != "" {
				t.Fatalf("Authenticate: %+v, %v", ac, aerr)
			}
			if err == nil && token != "" {
				t.Fatalf("Authenticate refused a token Verify accepts: %v", aerr)
			}
		}
	})
}
