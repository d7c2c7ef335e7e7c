package auth

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

// RFC 7677 §3: user "user", password "pencil".
const (
	rfcSalt        = "W22ZaJ0SNY7soEsUEjb6gQ=="
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

// The verifier computed from the password reproduces RFC 7677's exchange
// byte for byte with the server implementation used by Authenticate.
func TestSCRAMVerifierRFC7677(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	v, err := NewSCRAMVerifierWithSalt("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) {
		return scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations}, StoredKey: v.StoredKey, ServerKey: v.ServerKey}, nil
	})
	srv.WithNonceGenerator(func() string { return rfcServerNonce })
	conv := srv.NewConversation()
	sf, err := conv.Step(rfcClientFirst)
	if err != nil || sf != rfcServerFirst {
		t.Fatalf("server-first %q, %v", sf, err)
	}
	fin, err := conv.Step(rfcClientFinal)
	if err != nil || fin != rfcServerFinal || !conv.Valid() {
		t.Fatalf("server-final %q, %v", fin, err)
	}
}

func TestSCRAMVerifierFormatParse(t *testing.T) {
	v, err := NewSCRAMVerifier("correct horse", 4096)
	if err != nil {
		t.Fatal(err)
	}
	s := v.String()
	if !strings.HasPrefix(s, "SCRAM-SHA-256$4096:") {
		t.Fatalf("format %q", s)
	}
	p, err := ParseSCRAMVerifier(s)
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != s || len(p.Salt) != 16 {
		t.Fatalf("round trip %q -> %q", s, p.String())
	}
	// pg_authid.rolpassword of a role created by PostgreSQL 15.18 with
	// PASSWORD 'secret': it parses, formats back identically, and the same
	// password and salt give the same keys here.
	const pg = "SCRAM-SHA-256$4096:AO2F/Xhzr7O9M6e7F1mp1g==$50nNYe+aELCAudy1Mi++BKvnSa1aiyLtBzaepsFkFhM=:psGCorLyYGxSbVLxcQCZNNS7RvA1ePPhQFVlIGM60KU="
	p, err = ParseSCRAMVerifier(pg)
	if err != nil || p.String() != pg || p.Iterations != 4096 {
		t.Fatalf("PostgreSQL verifier: %v", err)
	}
	if mine, err := NewSCRAMVerifierWithSalt("secret", p.Salt, p.Iterations); err != nil || mine.String() != pg {
		t.Fatalf("computed %v, PostgreSQL stored %s (%v)", mine, pg, err)
	}

	bad := []string{
		"",
		"secret",
		"SCRAM-SHA-256$",
		"SCRAM-SHA-256$4096:c2FsdA==",
		"SCRAM-SHA-256$0:c2FsdA==$" + b64(32) + ":" + b64(32),
		"SCRAM-SHA-256$-1:c2FsdA==$" + b64(32) + ":" + b64(32),
		"SCRAM-SHA-256$+4096:c2FsdA==$" + b64(32) + ":" + b64(32),
		"SCRAM-SHA-256$x:c2FsdA==$" + b64(32) + ":" + b64(32),
		"SCRAM-SHA-256$4096:$" + b64(32) + ":" + b64(32),
		"SCRAM-SHA-256$4096:!!$" + b64(32) + ":" + b64(32),
		"SCRAM-SHA-256$4096:c2FsdA==$" + b64(31) + ":" + b64(32),
		"SCRAM-SHA-256$4096:c2FsdA==$" + b64(32) + ":" + b64(33),
		"SCRAM-SHA-256$4096:c2FsdA==$" + b64(32),
		"SCRAM-SHA-1$4096:c2FsdA==$" + b64(32) + ":" + b64(32),
	}
	for _, s := range bad {
		if _, err := ParseSCRAMVerifier(s); err == nil {
			t.Errorf("ParseSCRAMVerifier(%q) accepted", s)
		}
	}
}

func b64(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }

// SASLprep: a password with a non-ASCII space maps to the same verifier as
// with an ASCII space (what libpq's client side computes too).
func TestSCRAMVerifierSASLprep(t *testing.T) {
	salt := []byte("0123456789abcdef")
	a, _ := NewSCRAMVerifierWithSalt("a\u00a0b", salt, 16)
	b, _ := NewSCRAMVerifierWithSalt("a b", salt, 16)
	if a.String() != b.String() {
		t.Fatal("SASLprep not applied")
	}
	// Invalid UTF-8 is used as is rather than refused.
	if _, err := NewSCRAMVerifierWithSalt("\xff\xfe", salt, 16); err != nil {
		t.Fatal(err)
	}
}

func TestMD5Verifier(t *testing.T) {
	// protocol.md §1.3's worked example: user rep5, password secret, salt
	// a7 98 52 25.
	v := NewMD5Verifier("rep5", "secret")
	salt := [4]byte{0xa7, 0x98, 0x52, 0x25}
	if got := v.MD5Response(salt); got != "md5f063ccc50c3f3e616b224b7fae10fcad" {
		t.Fatalf("response %s", got)
	}
	if !v.CheckMD5Response(salt, "md5f063ccc50c3f3e616b224b7fae10fcad") || v.CheckMD5Response(salt, "md5f063ccc50c3f3e616b224b7fae10fcae") {
		t.Fatal("CheckMD5Response")
	}
	// pg_authid.rolpassword of role v2 created by PostgreSQL 15.18 with
	// password_encryption=md5 and PASSWORD 'secret'.
	if got := NewMD5Verifier("v2", "secret"); got != "md59d1498a7f4455a4cc11c894e30ff405f" {
		t.Fatalf("md5 verifier %s", got)
	}
	if _, err := ParseMD5Verifier(string(v)); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"md5", "md5" + strings.Repeat("g", 32), "md5" + strings.Repeat("A", 32), "MD5" + strings.Repeat("a", 32), strings.Repeat("a", 35)} {
		if _, err := ParseMD5Verifier(s); err == nil {
			t.Errorf("ParseMD5Verifier(%q) accepted", s)
		}
	}
}

func TestParseVerifier(t *testing.T) {
	s, _ := NewSCRAMVerifier("x", 4096)
	m := NewMD5Verifier("u", "x")
	if v, err := ParseVerifier(s.String()); err != nil || v.SCRAM == nil || v.String() != s.String() {
		t.Fatalf("SCRAM: %v", err)
	}
	if v, err := ParseVerifier(string(m)); err != nil || v.MD5 != m || v.String() != string(m) {
		t.Fatalf("md5: %v", err)
	}
	if _, err := ParseVerifier("hunter2"); err == nil || !strings.Contains(err.Error(), "plaintext") {
		t.Fatalf("plaintext: %v", err)
	}
}
