package auth

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/xdg-go/stringprep"
)

// DefaultIterations is PostgreSQL's default scram_iterations.
const DefaultIterations = 4096

// saltLen is PostgreSQL's SCRAM_DEFAULT_SALT_LEN.
const saltLen = 16

const scramPrefix = "SCRAM-SHA-256$"

// SCRAMVerifier is a SCRAM-SHA-256 password verifier as PostgreSQL stores
// it in pg_authid.rolpassword:
// SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>.
type SCRAMVerifier struct {
	Iterations int
	Salt       []byte
	StoredKey  []byte // SHA-256(HMAC(SaltedPassword, "Client Key"))
	ServerKey  []byte // HMAC(SaltedPassword, "Server Key")
}

// String formats v in PostgreSQL's format.
func (v *SCRAMVerifier) String() string {
	b64 := base64.StdEncoding.EncodeToString
	return scramPrefix + strconv.Itoa(v.Iterations) + ":" + b64(v.Salt) + "$" + b64(v.StoredKey) + ":" + b64(v.ServerKey)
}

// ParseSCRAMVerifier parses PostgreSQL's SCRAM-SHA-256 verifier format.
func ParseSCRAMVerifier(s string) (*SCRAMVerifier, error) {
	rest, ok := strings.CutPrefix(s, scramPrefix)
	if !ok {
		return nil, errors.New("not a SCRAM-SHA-256 verifier")
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return nil, errors.New("SCRAM-SHA-256 verifier: missing '$' between parameters and keys")
	}
	iterStr, saltStr, ok := strings.Cut(params, ":")
	if !ok {
		return nil, errors.New("SCRAM-SHA-256 verifier: missing ':' between iterations and salt")
	}
	storedStr, serverStr, ok := strings.Cut(keys, ":")
	if !ok {
		return nil, errors.New("SCRAM-SHA-256 verifier: missing ':' between StoredKey and ServerKey")
	}
	iter, err := strconv.Atoi(iterStr)
	if err != nil || iter <= 0 || iterStr[0] == '+' {
		return nil, fmt.Errorf("SCRAM-SHA-256 verifier: invalid iteration count %q", iterStr)
	}
	v := &SCRAMVerifier{Iterations: iter}
	dec := base64.StdEncoding.Strict()
	if v.Salt, err = dec.DecodeString(saltStr); err != nil || len(v.Salt) == 0 {
		return nil, errors.New("SCRAM-SHA-256 verifier: invalid salt")
	}
	if v.StoredKey, err = dec.DecodeString(storedStr); err != nil || len(v.StoredKey) != sha256.Size {
		return nil, errors.New("SCRAM-SHA-256 verifier: invalid StoredKey")
	}
	if v.ServerKey, err = dec.DecodeString(serverStr); err != nil || len(v.ServerKey) != sha256.Size {
		return nil, errors.New("SCRAM-SHA-256 verifier: invalid ServerKey")
	}
	return v, nil
}

// NewSCRAMVerifier computes a verifier for password with a random salt, as
// PostgreSQL's pg_be_scram_build_secret does (the password is normalized
// with SASLprep when that succeeds, and used as is otherwise, like libpq).
func NewSCRAMVerifier(password string, iterations int) (*SCRAMVerifier, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	return NewSCRAMVerifierWithSalt(password, salt, iterations)
}

// NewSCRAMVerifierWithSalt is NewSCRAMVerifier with a given salt.
func NewSCRAMVerifierWithSalt(password string, salt []byte, iterations int) (*SCRAMVerifier, error) {
	if iterations <= 0 {
		return nil, fmt.Errorf("invalid iteration count %d", iterations)
	}
	if len(salt) == 0 {
		return nil, errors.New("empty salt")
	}
	salted, err := pbkdf2.Key(sha256.New, saslPrep(password), salt, iterations, sha256.Size)
	if err != nil {
		return nil, err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	return &SCRAMVerifier{
		Iterations: iterations,
		Salt:       append([]byte(nil), salt...),
		StoredKey:  stored[:],
		ServerKey:  hmacSHA256(salted, "Server Key"),
	}, nil
}

// saslPrep normalizes a password as PostgreSQL's pg_saslprep does, falling
// back to the raw bytes when the password is not valid UTF-8 or contains
// prohibited characters.
func saslPrep(password string) string {
	if p, err := stringprep.SASLprep.Prepare(password); err == nil {
		return p
	}
	return password
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// MD5Verifier is PostgreSQL's md5 password verifier: "md5" followed by the
// hex MD5 of password || user name.
type MD5Verifier string

// NewMD5Verifier computes the md5 verifier of password for user.
func NewMD5Verifier(user, password string) MD5Verifier {
	sum := md5.Sum([]byte(password + user))
	return MD5Verifier("md5" + hex.EncodeToString(sum[:]))
}

// ParseMD5Verifier checks the md5<32 lower-case hex> format.
func ParseMD5Verifier(s string) (MD5Verifier, error) {
	h, ok := strings.CutPrefix(s, "md5")
	if !ok || len(h) != 32 || strings.ToLower(h) != h {
		return "", errors.New("not an md5 verifier")
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", errors.New("not an md5 verifier")
	}
	return MD5Verifier(s), nil
}

// MD5Response is what a client answers to AuthenticationMD5Password with
// salt, given the stored verifier: "md5" + hex(md5(hex(md5(password||user)) || salt)).
func (v MD5Verifier) MD5Response(salt [4]byte) string {
	sum := md5.Sum(append([]byte(string(v)[3:]), salt[:]...))
	return "md5" + hex.EncodeToString(sum[:])
}

// CheckMD5Response reports whether response answers salt for v, in
// constant time.
func (v MD5Verifier) CheckMD5Response(salt [4]byte, response string) bool {
	return subtle.ConstantTimeCompare([]byte(v.MD5Response(salt)), []byte(response)) == 1
}

// Verifier is one user's stored password: exactly one of SCRAM and MD5.
type Verifier struct {
	SCRAM *SCRAMVerifier
	MD5   MD5Verifier
}

// String formats the verifier as it appears in the users file.
func (v Verifier) String() string {
	if v.SCRAM != nil {
		return v.SCRAM.String()
	}
	return string(v.MD5)
}

// ParseVerifier parses a SCRAM-SHA-256 or md5 verifier.
func ParseVerifier(s string) (Verifier, error) {
	if strings.HasPrefix(s, scramPrefix) {
		v, err := ParseSCRAMVerifier(s)
		if err != nil {
			return Verifier{}, err
		}
		return Verifier{SCRAM: v}, nil
	}
	if m, err := ParseMD5Verifier(s); err == nil {
		return Verifier{MD5: m}, nil
	}
	return Verifier{}, errors.New("not a SCRAM-SHA-256 or md5 verifier (plaintext passwords are not accepted)")
}
