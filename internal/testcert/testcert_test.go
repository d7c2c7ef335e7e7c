package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"testing"
)

// A client trusting the CA completes a handshake with a server presenting
// the certificate, by IP address and by name, and the files hold the same
// certificates.
func TestSet(t *testing.T) {
	s := Must(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, name := range []string{"127.0.0.1", "localhost"} {
		errc := make(chan error, 1)
		go func() {
			srv, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			ts := tls.Server(srv, s.ServerConfig())
			err = ts.Handshake()
			if err == nil {
				_, err = ts.Write([]byte("x"))
			}
			ts.Close()
			errc <- err
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(c, &tls.Config{RootCAs: s.Pool(), ServerName: name})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := io.ReadFull(tc, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		tc.Close()
		if err := <-errc; err != nil {
			t.Fatalf("%s: server: %v", name, err)
		}
	}
	if s.Certificate().Leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Fatalf("signature algorithm %v, want ECDSA with SHA-256", s.Certificate().Leaf.SignatureAlgorithm)
	}

	f, err := s.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || !s.CA.Equal(mustParse(t, blk.Bytes)) {
		t.Fatal("ca.pem does not hold the CA")
	}
	fi, err := os.Stat(f.Key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
