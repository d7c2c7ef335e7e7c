package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Scope is the "scope" claim of a Neon storage token.
type Scope string

// The scopes Neon issues (libs/utils/src/auth.rs). A safekeeper grants
// access for ScopeSafekeeperData (every tenant) and ScopeTenant (the
// token's tenant_id only); the others are valid tokens that grant nothing
// here.
const (
	ScopeTenant         Scope = "tenant"
	ScopeSafekeeperData Scope = "safekeeperdata"
	ScopePageServerAPI  Scope = "pageserverapi"
	ScopeGenerationsAPI Scope = "generations_api"
	ScopeAdmin          Scope = "admin"
	ScopeInfra          Scope = "infra"
	ScopeScrubber       Scope = "scrubber"
	ScopeControllerPeer Scope = "controller_peer"
)

func (s Scope) known() bool {
	switch s {
	case ScopeTenant, ScopeSafekeeperData, ScopePageServerAPI, ScopeGenerationsAPI,
		ScopeAdmin, ScopeInfra, ScopeScrubber, ScopeControllerPeer:
		return true
	}
	return false
}

// TokenAlgorithm is the only JWT signing algorithm accepted: EdDSA with
// Ed25519 keys, as Neon's storage tokens use.
const TokenAlgorithm = "EdDSA"

// TokenLeeway is the clock skew allowed when checking exp and nbf; 60
// seconds is the default of the jsonwebtoken crate Neon verifies with.
const TokenLeeway = 60 * time.Second

// maxTokenLen bounds the work spent on one token. Neon's tokens are a few
// hundred bytes.
const maxTokenLen = 16 << 10

var (
	// ErrInvalidToken is wrapped by every Verify failure: malformed token,
	// wrong algorithm, bad signature, expired or not yet valid, unusable
	// claims. The jwt package's own error (jwt.ErrTokenExpired, ...) is
	// wrapped too.
	ErrInvalidToken = errors.New("invalid token")
	// ErrNoBearer is returned by VerifyBearer for a missing or malformed
	// Authorization header (not "Bearer <token>").
	ErrNoBearer = errors.New("no bearer token")
	// ErrNotAllowed is wrapped by Claims.Allows when the token does not
	// grant access to the tenant.
	ErrNotAllowed = errors.New("token does not grant access")
)

// Claims are the verified claims of a token.
type Claims struct {
	Scope Scope
	// TenantID is the token's tenant_id, 32 lower-case hex characters;
	// "" when the token names none (only scope tenant requires one).
	TenantID string
	// ExpiresAt is the token's exp; zero when it has none (Neon's tokens
	// may have none).
	ExpiresAt time.Time
}

// Allows reports whether the claims grant access to the WAL of tenantID
// (32 hex characters, either case): scope safekeeperdata grants every
// tenant, scope tenant only its own tenant_id, every other scope nothing.
// A refusal wraps ErrNotAllowed and says why, for the server's log.
func (c Claims) Allows(tenantID string) error {
	switch c.Scope {
	case ScopeSafekeeperData:
		return nil
	case ScopeTenant:
		want, err := normalizeTenantID(tenantID)
		if err != nil {
			return fmt.Errorf("%w: requested tenant: %w", ErrNotAllowed, err)
		}
		if c.TenantID == "" {
			return fmt.Errorf("%w: scope tenant without a tenant_id", ErrNotAllowed)
		}
		if c.TenantID != want {
			return fmt.Errorf("%w: the token is for tenant %s, not %s", ErrNotAllowed, c.TenantID, want)
		}
		return nil
	}
	return fmt.Errorf("%w: scope %q is ineligible for safekeeper access (want %q or %q)", ErrNotAllowed, c.Scope, ScopeSafekeeperData, ScopeTenant)
}

// normalizeTenantID validates a 32-hex-character id and lower-cases it.
func normalizeTenantID(s string) (string, error) {
	if len(s) != 32 {
		return "", fmt.Errorf("invalid tenant id %q: want 32 hex characters", s)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("invalid tenant id %q: %w", s, err)
	}
	return hex.EncodeToString(b), nil
}

// tokenClaims is the JSON payload: Neon's {scope, tenant_id} and the
// registered claims (exp, nbf, ...) the jwt package validates.
type tokenClaims struct {
	Scope    Scope   `json:"scope"`
	TenantID *string `json:"tenant_id"`
	jwt.RegisteredClaims
}

// TokenVerifier verifies EdDSA (Ed25519) JWTs against a fixed set of
// public keys. It is safe for concurrent use.
type TokenVerifier struct {
	keys   jwt.VerificationKeySet // of ed25519.PublicKey
	parser *jwt.Parser
}

// NewTokenVerifier returns a verifier accepting tokens signed by any of
// keys.
func NewTokenVerifier(keys ...ed25519.PublicKey) (*TokenVerifier, error) {
	return newTokenVerifier(keys, time.Now)
}

func newTokenVerifier(keys []ed25519.PublicKey, now func() time.Time) (*TokenVerifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("no public keys")
	}
	v := &TokenVerifier{}
	for i, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key %d: not an Ed25519 public key (%d bytes)", i+1, len(k))
		}
		v.keys.Keys = append(v.keys.Keys, append(ed25519.PublicKey(nil), k...))
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{TokenAlgorithm}),
		jwt.WithLeeway(TokenLeeway),
		jwt.WithTimeFunc(now),
	)
	return v, nil
}

// ParseTokenKeys reads Ed25519 public keys from PEM data: one or more
// "PUBLIC KEY" blocks (PKIX, as `openssl pkey -pubout` writes them for a key
// made with `openssl genpkey -algorithm ed25519`). Several blocks let a
// new signing key be trusted before the old one is retired. Text outside
// the blocks is ignored; any other block, or no key at all, is an error.
func ParseTokenKeys(data []byte) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "PUBLIC KEY":
		case "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("PEM block %d is a private key; give the public key (openssl pkey -in KEY -pubout)", n)
		default:
			return nil, fmt.Errorf("PEM block %d is %q, want \"PUBLIC KEY\"", n, block.Type)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		k, ok := pub.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("PEM block %d: a %T key, want Ed25519 (openssl genpkey -algorithm ed25519)", n, pub)
		}
		keys = append(keys, k)
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		// pem.Decode stops at a block it cannot decode; a key added for
		// rotation must not be skipped silently.
		return nil, fmt.Errorf("malformed PEM block after %d good one(s)", len(keys))
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM \"PUBLIC KEY\" block")
	}
	return keys, nil
}

// LoadTokenVerifier reads the public keys in the PEM file at path (see
// ParseTokenKeys). The file is read once; restart to change the keys.
func LoadTokenVerifier(path string) (*TokenVerifier, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := ParseTokenKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return NewTokenVerifier(keys...)
}

// Verify checks token's signature against each key, its algorithm (EdDSA
// only: no "none", no HMAC with the public key as secret), its exp and nbf
// when present (with TokenLeeway; a token without exp does not expire)
// and its claims: a known scope, a tenant_id of 32 hex characters when
// present, required for scope tenant. Every failure wraps
// ErrInvalidToken; the text is for the server's log, not for the client.
func (v *TokenVerifier) Verify(token string) (Claims, error) {
	if len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: %d bytes long", ErrInvalidToken, len(token))
	}
	var tc tokenClaims
	// The parser tries each key in turn and has checked the algorithm
	// against TokenAlgorithm before it asks for them.
	if _, err := v.parser.ParseWithClaims(token, &tc, func(*jwt.Token) (any, error) { return v.keys, nil }); err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	c := Claims{Scope: tc.Scope}
	if tc.ExpiresAt != nil {
		c.ExpiresAt = tc.ExpiresAt.Time
	}
	switch {
	case tc.Scope == "":
		return Claims{}, fmt.Errorf("%w: no scope claim", ErrInvalidToken)
	case !tc.Scope.known():
		return Claims{}, fmt.Errorf("%w: unknown scope %q", ErrInvalidToken, tc.Scope)
	}
	if tc.TenantID != nil {
		id, err := normalizeTenantID(*tc.TenantID)
		if err != nil {
			return Claims{}, fmt.Errorf("%w: tenant_id: %w", ErrInvalidToken, err)
		}
		c.TenantID = id
	}
	if c.Scope == ScopeTenant && c.TenantID == "" {
		return Claims{}, fmt.Errorf("%w: scope tenant without a tenant_id", ErrInvalidToken)
	}
	return c, nil
}

// VerifyBearer verifies the token of an HTTP Authorization header value,
// "Bearer <token>" (the scheme in any case, RFC 9110). A missing or other
// header wraps ErrNoBearer; a bad token wraps ErrInvalidToken.
func (v *TokenVerifier) VerifyBearer(header string) (Claims, error) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if header == "" {
		return Claims{}, fmt.Errorf("%w: no Authorization header", ErrNoBearer)
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Claims{}, fmt.Errorf("%w: Authorization header is not \"Bearer <token>\"", ErrNoBearer)
	}
	token = strings.TrimLeft(token, " ")
	if token == "" {
		return Claims{}, fmt.Errorf("%w: empty bearer token", ErrNoBearer)
	}
	return v.Verify(token)
}
