package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	tenantA = "5f2b0e3c9a8d4e7f8a1b2c3d4e5f6a7b"
	tenantB = "0123456789abcdef0123456789abcdef"
)

func newEdKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// pubPEM is pub as `openssl pkey -pubout` writes it.
func pubPEM(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// sign makes an EdDSA token of claims with key.
func sign(t testing.TB, key ed25519.PrivateKey, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newVerifier(t testing.TB, keys ...ed25519.PublicKey) *TokenVerifier {
	t.Helper()
	v, err := NewTokenVerifier(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseTokenKeys(t *testing.T) {
	pub1, _ := newEdKey(t)
	pub2, _ := newEdKey(t)
	two := "# the key in use\n" + string(pubPEM(t, pub1)) + "\n# the next one\n" + string(pubPEM(t, pub2))
	keys, err := ParseTokenKeys([]byte(two))
	if err != nil || len(keys) != 2 || !keys[0].Equal(pub1) || !keys[1].Equal(pub2) {
		t.Fatalf("two keys: %v %v", keys, err)
	}

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edPriv := newEdKey(t)
	privDER, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})
	good := string(pubPEM(t, pub1))
	for name, c := range map[string]struct {
		data, want string
	}{
		"empty":            {"", "no PEM"},
		"not PEM":          {"MCowBQYDK2VwAyEAwqsW\n", "no PEM"},
		"private key":      {string(privPEM), "private key"},
		"ECDSA key":        {string(pubPEM(t, &ec.PublicKey)), "want Ed25519"},
		"RSA key":          {string(pubPEM(t, &rsaKey.PublicKey)), "want Ed25519"},
		"certificate":      {"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", `"CERTIFICATE"`},
		"bad DER":          {"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "PEM block 1"},
		"broken only":      {"-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n", "malformed PEM block after 0"},
		"broken after one": {good + "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n", "malformed PEM block after 1"},
		"good then ECDSA":  {good + string(pubPEM(t, &ec.PublicKey)), "PEM block 2"},
	} {
		if _, err := ParseTokenKeys([]byte(c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
}

func TestNewTokenVerifierErrors(t *testing.T) {
	if _, err := NewTokenVerifier(); err == nil {
		t.Error("no keys accepted")
	}
	if _, err := NewTokenVerifier(ed25519.PublicKey("short")); err == nil {
		t.Error("a 5-byte key accepted")
	}
	if _, err := LoadTokenVerifier(filepath.Join(t.TempDir(), "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not a key\n"), 0o644)
	if _, err := LoadTokenVerifier(bad); err == nil || !strings.HasPrefix(err.Error(), bad+": ") {
		t.Errorf("bad file: %v", err)
	}
}

// Keys and a token made with openssl (testdata/jwt/README): the verifier
// agrees with an independent signer, and a file of two keys accepts a
// token of either.
func TestOpenSSLKeysAndToken(t *testing.T) {
	token, err := os.ReadFile("testdata/jwt/tenant-a.jwt")
	if err != nil {
		t.Fatal(err)
	}
	load := func(name string) *TokenVerifier {
		v, err := LoadTokenVerifier(filepath.Join("testdata/jwt", name))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, name := range []string{"ed25519-a.pub", "both.pub"} {
		c, err := load(name).Verify(strings.TrimSpace(string(token)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Scope != ScopeTenant || c.TenantID != tenantA || !c.ExpiresAt.IsZero() {
			t.Fatalf("%s: claims %+v", name, c)
		}
	}
	if _, err := load("ed25519-b.pub").Verify(strings.TrimSpace(string(token))); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		t.Fatalf("token of key a checked with key b: %v", err)
	}
	// A token signed with the library and openssl's key b is accepted by
	// the two-key file (rotation).
	pemB, _ := os.ReadFile("testdata/jwt/ed25519-b.key")
	privB, err := jwt.ParseEdPrivateKeyFromPEM(pemB)
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, privB.(ed25519.PrivateKey), jwt.MapClaims{"scope": "safekeeperdata"})
	if c, err := load("both.pub").Verify(tok); err != nil || c.Scope != ScopeSafekeeperData {
		t.Fatalf("key b via both.pub: %+v %v", c, err)
	}
	if _, err := load("ed25519-a.pub").Verify(tok); err == nil {
		t.Fatal("key b's token accepted by key a alone")
	}
}

func TestVerify(t *testing.T) {
	pub, priv := newEdKey(t)
	otherPub, otherPriv := newEdKey(t)
	v := newVerifier(t, pub)
	now := time.Now()
	hour := time.Hour

	// alg confusion: HS256 keyed with the public key (raw and as PEM), as
	// a verifier that takes the algorithm from the token would accept.
	hs := func(secret []byte) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"scope": "safekeeperdata"}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"scope": "safekeeperdata"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es256, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"scope": "safekeeperdata"}).SignedString(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": tenantA})
	parts := strings.Split(good, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	// The payload swapped for another tenant's, the signature kept.
	tampered := parts[0] + "." + b64([]byte(`{"scope":"tenant","tenant_id":"`+tenantB+`"}`)) + "." + parts[2]
	// The header changed to alg none, the EdDSA signature dropped.
	noneHeader := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."

	type want struct {
		scope  Scope
		tenant string
		exp    bool
	}
	ok := []struct {
		name   string
		token  string
		claims want
	}{
		{"tenant, no exp", good, want{ScopeTenant, tenantA, false}},
		{"safekeeperdata", sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata"}), want{ScopeSafekeeperData, "", false}},
		{"upper-case tenant_id", sign(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": strings.ToUpper(tenantA)}), want{ScopeTenant, tenantA, false}},
		{"null tenant_id", sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata", "tenant_id": nil}), want{ScopeSafekeeperData, "", false}},
		{"exp in an hour", sign(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": tenantA, "exp": now.Add(hour).Unix()}), want{ScopeTenant, tenantA, true}},
		{"exp within the leeway", sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata", "exp": now.Add(-TokenLeeway / 2).Unix()}), want{ScopeSafekeeperData, "", true}},
		{"nbf past", sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata", "nbf": now.Add(-hour).Unix()}), want{ScopeSafekeeperData, "", false}},
		{"other claims", sign(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": tenantA, "iss": "neon.controlplane", "iat": now.Unix(), "endpoint_id": "ep-1"}), want{ScopeTenant, tenantA, false}},
		{"admin scope verifies (Allows refuses it)", sign(t, priv, jwt.MapClaims{"scope": "admin"}), want{ScopeAdmin, "", false}},
	}
	for _, c := range ok {
		got, err := v.Verify(c.token)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got.Scope != c.claims.scope || got.TenantID != c.claims.tenant || got.ExpiresAt.IsZero() == c.claims.exp {
			t.Errorf("%s: claims %+v, want %+v", c.name, got, c.claims)
		}
	}

	bad := []struct {
		name  string
		token string
		is    error // also wrapped, besides ErrInvalidToken
	}{
		{"empty", "", jwt.ErrTokenMalformed},
		{"one part", "abc", jwt.ErrTokenMalformed},
		{"two parts", parts[0] + "." + parts[1], jwt.ErrTokenMalformed},
		{"four parts", good + ".x", jwt.ErrTokenMalformed},
		{"bad base64", "!!!." + parts[1] + "." + parts[2], jwt.ErrTokenMalformed},
		{"header not JSON", b64([]byte("x")) + "." + parts[1] + "." + parts[2], jwt.ErrTokenMalformed},
		{"too long", good + strings.Repeat("A", maxTokenLen), nil},
		{"expired", sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata", "exp": now.Add(-hour).Unix()}), jwt.ErrTokenExpired},
		{"not yet valid", sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata", "nbf": now.Add(hour).Unix()}), jwt.ErrTokenNotValidYet},
		{"exp not a number", sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata", "exp": "tomorrow"}), jwt.ErrTokenMalformed},
		{"wrong key", sign(t, otherPriv, jwt.MapClaims{"scope": "safekeeperdata"}), jwt.ErrTokenSignatureInvalid},
		{"tampered payload", tampered, jwt.ErrTokenSignatureInvalid},
		{"HS256 with the raw public key", hs(pub), jwt.ErrTokenSignatureInvalid},
		{"HS256 with the PEM public key", hs(pubPEM(t, pub)), jwt.ErrTokenSignatureInvalid},
		{"alg none", none, jwt.ErrTokenSignatureInvalid},
		{"alg none header on a real payload", noneHeader, jwt.ErrTokenSignatureInvalid},
		{"ES256", es256, jwt.ErrTokenSignatureInvalid},
		{"no signature", parts[0] + "." + parts[1] + ".", jwt.ErrTokenSignatureInvalid},
		{"no scope", sign(t, priv, jwt.MapClaims{"tenant_id": tenantA}), nil},
		{"unknown scope", sign(t, priv, jwt.MapClaims{"scope": "superuser"}), nil},
		{"scope not a string", sign(t, priv, jwt.MapClaims{"scope": 1}), jwt.ErrTokenMalformed},
		{"tenant without tenant_id", sign(t, priv, jwt.MapClaims{"scope": "tenant"}), nil},
		{"tenant_id not hex", sign(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": strings.Repeat("g", 32)}), nil},
		{"tenant_id short", sign(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": "abcd"}), nil},
		{"tenant_id a number", sign(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": 5}), jwt.ErrTokenMalformed},
	}
	for _, c := range bad {
		got, err := v.Verify(c.token)
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: got %+v, %v; want ErrInvalidToken", c.name, got, err)
			continue
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: %v does not wrap %v", c.name, err, c.is)
		}
		if got != (Claims{}) {
			t.Errorf("%s: claims %+v returned with the error", c.name, got)
		}
	}

	// Several keys: each is tried.
	both := newVerifier(t, otherPub, pub)
	for _, k := range []ed25519.PrivateKey{priv, otherPriv} {
		if _, err := both.Verify(sign(t, k, jwt.MapClaims{"scope": "safekeeperdata"})); err != nil {
			t.Errorf("two-key verifier: %v", err)
		}
	}
}

// The clock the verifier uses decides exp and nbf, with TokenLeeway.
func TestVerifyClock(t *testing.T) {
	pub, priv := newEdKey(t)
	base := time.Unix(1_800_000_000, 0)
	tok := sign(t, priv, jwt.MapClaims{"scope": "safekeeperdata", "nbf": base.Unix(), "exp": base.Add(time.Hour).Unix()})
	for _, c := range []struct {
		at time.Time
		ok bool
	}{
		{base.Add(-TokenLeeway - time.Second), false},
		{base.Add(-TokenLeeway + time.Second), true},
		{base.Add(30 * time.Minute), true},
		{base.Add(time.Hour + TokenLeeway - time.Second), true},
		{base.Add(time.Hour + TokenLeeway + time.Second), false},
	} {
		v, err := newTokenVerifier([]ed25519.PublicKey{pub}, func() time.Time { return c.at })
		if err != nil {
			t.Fatal(err)
		}
		c2, err := v.Verify(tok)
		if (err == nil) != c.ok {
			t.Errorf("at %s: %v, want ok=%v", c.at.Sub(base), err, c.ok)
		}
		if err == nil && !c2.ExpiresAt.Equal(base.Add(time.Hour)) {
			t.Errorf("ExpiresAt %s", c2.ExpiresAt)
		}
	}
}

func TestClaimsAllows(t *testing.T) {
	for _, c := range []struct {
		claims Claims
		tenant string
		ok     bool
	}{
		{Claims{Scope: ScopeSafekeeperData}, tenantA, true},
		{Claims{Scope: ScopeSafekeeperData}, tenantB, true},
		{Claims{Scope: ScopeTenant, TenantID: tenantA}, tenantA, true},
		{Claims{Scope: ScopeTenant, TenantID: tenantA}, strings.ToUpper(tenantA), true},
		{Claims{Scope: ScopeTenant, TenantID: tenantA}, tenantB, false},
		{Claims{Scope: ScopeTenant, TenantID: tenantA}, "", false},
		{Claims{Scope: ScopeTenant, TenantID: tenantA}, "not-an-id", false},
		{Claims{Scope: ScopeTenant}, tenantA, false},
		{Claims{Scope: ScopeAdmin}, tenantA, false},
		{Claims{Scope: ScopePageServerAPI}, tenantA, false},
		{Claims{Scope: ScopeGenerationsAPI}, tenantA, false},
		{Claims{Scope: "superuser"}, tenantA, false},
		{Claims{}, tenantA, false},
	} {
		err := c.claims.Allows(c.tenant)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrNotAllowed)) {
			t.Errorf("%+v for %q: %v, want ok=%v", c.claims, c.tenant, err, c.ok)
		}
	}
}

func TestVerifyBearer(t *testing.T) {
	pub, priv := newEdKey(t)
	v := newVerifier(t, pub)
	tok := sign(t, priv, jwt.MapClaims{"scope": "tenant", "tenant_id": tenantA})
	for _, h := range []string{"Bearer " + tok, "bearer " + tok, "BEARER  " + tok, " Bearer " + tok + " "} {
		if c, err := v.VerifyBearer(h); err != nil || c.TenantID != tenantA {
			t.Errorf("%q: %+v %v", h, c, err)
		}
	}
	for _, h := range []string{"", "Bearer", "Bearer ", "Basic " + tok, tok, "Bearer" + tok, "Token " + tok} {
		if _, err := v.VerifyBearer(h); !errors.Is(err, ErrNoBearer) {
			t.Errorf("%q: %v, want ErrNoBearer", h, err)
		}
	}
	if _, err := v.VerifyBearer("Bearer " + tok + "x"); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("bad token: %v", err)
	}
	if _, err := v.VerifyBearer("Bearer a b"); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("two words: %v", err)
	}
}
