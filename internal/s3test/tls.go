package s3test

import (
	"crypto/x509"

	"github.com/pgsafekeeper/safekeeper/internal/testcert"
)

// tlsFiles are a throwaway CA and a server certificate for 127.0.0.1 it
// signed, as PEM files for the server and the clients.
type tlsFiles struct {
	caFile   string // PEM of the CA certificate
	certFile string // PEM of the server certificate
	keyFile  string // PEM of the server key
	pool     *x509.CertPool
}

func newTLSFiles(dir string) (*tlsFiles, error) {
	s, err := testcert.New()
	if err != nil {
		return nil, err
	}
	f, err := s.WriteFiles(dir)
	if err != nil {
		return nil, err
	}
	return &tlsFiles{caFile: f.CA, certFile: f.Cert, keyFile: f.Key, pool: s.Pool()}, nil
}
