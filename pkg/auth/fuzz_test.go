package auth

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/pgsafekeeper/safekeeper/internal/testcert"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

const (
	fuzzClientNonce = "Y2xpZW50bm9uY2UxMjM0NTY3"
	fuzzServerNonce = "c2VydmVybm9uY2UxMjM0NTY3"
	fuzzPassword    = "pw"
)

// fuzzSalt is fixed so that the committed corpus holds a valid exchange.
var fuzzSalt = []byte("0123456789abcdef")

// validExchange returns a correct client-first and client-final message
// for alice with the fixed nonces.
func validExchange(tb testing.TB) (first, final string) {
	c, err := scram.SHA256.NewClient("", fuzzPassword, "")
	if err != nil {
		tb.Fatal(err)
	}
	conv := c.WithNonceGenerator(func() string { return fuzzClientNonce }).NewConversation()
	first, _ = conv.Step("")
	sf := "r=" + fuzzClientNonce + fuzzServerNonce + ",s=" + base64.StdEncoding.EncodeToString(fuzzSalt) + ",i=4096"
	final, err = conv.Step(sf)
	if err != nil {
		tb.Fatal(err)
	}
	return first, final
}

// FuzzSCRAMExchange feeds arbitrary SASLInitialResponse and SASLResponse
// contents (the client-first and client-final messages) through
// Authenticate: it must never panic, never let an unknown user in, and
// fail only with PostgreSQL's FATAL 08P01/28P01 or ErrClosed.
func FuzzSCRAMExchange(f *testing.F) {
	dir := f.TempDir()
	v, err := NewSCRAMVerifierWithSalt(fuzzPassword, fuzzSalt, 4096)
	if err != nil {
		f.Fatal(err)
	}
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:"+v.String()+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	a, err := New(Config{UsersFile: users, MockSecret: []byte("0123456789abcdef")})
	if err != nil {
		f.Fatal(err)
	}
	tlsCfg := testcert.Must(f).ServerConfig()
	leaf := tlsCfg.Certificates[0].Leaf
	saved := nonceGen
	nonceGen = func() string { return fuzzServerNonce }
	f.Cleanup(func() { nonceGen = saved })

	first, final := validExchange(f)
	f.Add("alice", MechSCRAM, []byte(first), []byte(final), false)
	f.Add("bob", MechSCRAM, []byte(first), []byte(final), false)
	f.Add("alice", MechSCRAM, []byte("y"+first[1:]), []byte(strings.Replace(final, "c=biws", "c=eSws", 1)), false)
	f.Add("alice", MechSCRAMPlus, []byte("p=tls-server-end-point,,n=,r=abc"), []byte("c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=abc,p=AAAA"), true)

	if _, err := fuzzAuthenticate(a, leaf, "alice", MechSCRAM, []byte(first), []byte(final), false); err != nil {
		f.Fatalf("the valid seed exchange fails: %v", err)
	}

	f.Fuzz(func(t *testing.T, user, mech string, first, final []byte, useTLS bool) {
		if user == "" {
			return
		}
		out, err := fuzzAuthenticate(a, leaf, user, mech, first, final, useTLS)
		if err == nil {
			if user != "alice" {
				t.Fatalf("unknown user %q authenticated", user)
			}
			if !bytes.Contains(out, []byte("v=")) {
				t.Fatal("success without AuthenticationSASLFinal")
			}
			return
		}
		if errors.Is(err, ErrClosed) {
			return
		}
		pe := pgerr.As(err)
		if pe == nil || pe.Severity != pgerr.SeverityFatal {
			t.Fatalf("error %v is not a FATAL PostgreSQL error", err)
		}
		switch pe.Code {
		case pgerr.ProtocolViolation:
		case pgerr.InvalidPassword:
			if pe.Message != `password authentication failed for user "`+user+`"` {
				t.Fatalf("message %q", pe.Message)
			}
		default:
			t.Fatalf("SQLSTATE %s: %v", pe.Code, err)
		}
	})
}

// fuzzAuthenticate runs Authenticate with the two client messages queued.
func fuzzAuthenticate(a *Authenticator, leaf *x509.Certificate, user, mech string, first, final []byte, useTLS bool) ([]byte, error) {
	var in bytes.Buffer
	msg, _ := (&pgproto3.SASLInitialResponse{AuthMechanism: strings.ReplaceAll(mech, "\x00", ""), Data: first}).Encode(nil)
	in.Write(msg)
	msg, _ = (&pgproto3.SASLResponse{Data: final}).Encode(nil)
	in.Write(msg)
	var out bytes.Buffer
	be := pgproto3.NewBackend(&in, &out)
	sess := Session{Backend: be, User: user, RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5}}
	if useTLS {
		sess.TLS = &tls.ConnectionState{}
		sess.ServerCert = leaf
	}
	claims, err := a.Authenticate(sess)
	be.Flush()
	if claims != nil {
		return out.Bytes(), errors.New("a SCRAM exchange returned token claims")
	}
	return out.Bytes(), err
}

// FuzzParseRules: the rules parser never panics, and what it accepts
// matches without panicking.
func FuzzParseRules(f *testing.F) {
	f.Add("host all all scram-sha-256\n")
	f.Add("hostssl a,b 10.0.0.0/8 md5 # c\nhostnossl all ::1 reject\n")
	f.Add("host replication all ::ffff:1.2.3.4/120 trust\n")
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseRules(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, r := range rs {
			_ = r.String()
		}
		rs.Match("a", netipLoopback, false)
		rs.Match("a", netipLoopback, true)
	})
}

// FuzzParseUsers: the users-file parser never panics, and every accepted
// entry formats back to a verifier that parses to the same string.
func FuzzParseUsers(f *testing.F) {
	f.Add("alice:SCRAM-SHA-256$4096:AO2F/Xhzr7O9M6e7F1mp1g==$50nNYe+aELCAudy1Mi++BKvnSa1aiyLtBzaepsFkFhM=:psGCorLyYGxSbVLxcQCZNNS7RvA1ePPhQFVlIGM60KU=\n")
	f.Add("# c\nbob:md59d1498a7f4455a4cc11c894e30ff405f\n")
	f.Add("x:SCRAM-SHA-256$1:AA==$" + b64(32) + ":" + b64(32))
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseUsers(strings.NewReader(s))
		if err != nil {
			return
		}
		for name, v := range u {
			if ValidUserName(name) != nil {
				t.Fatalf("accepted user name %q", name)
			}
			w, err := ParseVerifier(v.String())
			if err != nil || w.String() != v.String() {
				t.Fatalf("%q does not round-trip: %v", v.String(), err)
			}
		}
	})
}

var netipLoopback = netip.MustParseAddr("127.0.0.1")
