package s3test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
)

const (
	// Region is the region the server answers for.
	Region = "us-east-1"

	accessKey = "safekeeper-test"
	secretKey = "safekeeper-test-secret-key"
	bucket    = "safekeeper-test"

	// readyTimeout bounds the wait for a started server to answer.
	readyTimeout = 30 * time.Second
)

// Server is a versitygw process serving the S3 API on a loopback port from a
// posix directory, with one bucket. Restart, Freeze and Thaw fail the test
// given to Start when they cannot do their job, so call them from that
// test's goroutine; the other methods may be called from any goroutine.
type Server struct {
	t       testing.TB
	proc    *testenv.Process
	dir     string // the test's temp dir for this server: proc.Dir
	dataDir string // posix root: one directory per bucket
	port    int
	tls     *tlsFiles // nil: plain HTTP
}

// Start runs versitygw on a free port of 127.0.0.1 with a fresh directory,
// waits until it answers S3 requests, creates the bucket, and registers a
// cleanup that stops it (and prints its log if the test failed). If the
// binary cannot be had the test is skipped, or fails when $CI is true (see
// Binary).
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartTLS is Start with the server speaking HTTPS, with a certificate for
// 127.0.0.1 from a fresh self-signed CA: Endpoint is https://..., Env sets
// AWS_CA_BUNDLE to CAFile, and Client trusts the CA.
func StartTLS(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, useTLS bool) *Server {
	t.Helper()
	s := &Server{t: t, proc: testenv.NewProcess(t, "s3test", "versitygw", Binary(t))}
	s.dir = s.proc.Dir
	s.dataDir = filepath.Join(s.dir, "data")
	if err := os.Mkdir(s.dataDir, 0o700); err != nil {
		t.Fatalf("s3test: %v", err)
	}
	if useTLS {
		var err error
		if s.tls, err = newTLSFiles(filepath.Join(s.dir, "tls")); err != nil {
			t.Fatalf("s3test: %v", err)
		}
	}

	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if s.port, err = testenv.FreePort(); err != nil {
			t.Fatalf("s3test: %v", err)
		}
		if err = s.start(); err == nil || !errors.Is(err, testenv.ErrAddrInUse) {
			break
		}
		// Someone took the port between probing and binding: pick another.
	}
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("s3test: create bucket %s: %v", bucket, err)
	}
	return s
}

// Endpoint returns the server's URL, http://127.0.0.1:<port> (https://
// for StartTLS).
func (s *Server) Endpoint() string {
	if s.tls != nil {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// CAFile returns the PEM file of the CA that signed a StartTLS server's
// certificate, or "" for a plain HTTP server.
func (s *Server) CAFile() string {
	if s.tls == nil {
		return ""
	}
	return s.tls.caFile
}

// Addr returns the server's listen address, 127.0.0.1:<port>.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Bucket returns the name of the bucket Start created.
func (s *Server) Bucket() string { return bucket }

// AccessKey returns the root user's access key id.
func (s *Server) AccessKey() string { return accessKey }

// SecretKey returns the root user's secret key.
func (s *Server) SecretKey() string { return secretKey }

// DataDir returns the directory the server stores buckets in (bucket
// <DataDir>/<Bucket>, objects as files below it).
func (s *Server) DataDir() string { return s.dataDir }

// LogPath returns the file receiving the server's output.
func (s *Server) LogPath() string { return s.proc.LogPath }

// URL returns the objstore URL of the bucket below prefix:
// "s3://bucket/prefix", or "s3://bucket" for an empty prefix.
func (s *Server) URL(prefix string) string {
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		return "s3://" + bucket
	}
	return "s3://" + bucket + "/" + prefix
}

// Env returns the environment that points the AWS SDK's default
// configuration at this server, for a child process (append it to
// os.Environ(); later entries win) or for Setenv. The shared config and
// credentials files are pointed at a path that does not exist, so a
// developer's ~/.aws cannot interfere. Path-style addressing is not an
// environment setting: pass objstore.Options{S3PathStyle: true}.
func (s *Server) Env() []string {
	absent := filepath.Join(s.dir, "no-aws-config")
	env := []string{
		"AWS_ACCESS_KEY_ID=" + accessKey,
		"AWS_SECRET_ACCESS_KEY=" + secretKey,
		"AWS_REGION=" + Region,
		"AWS_ENDPOINT_URL_S3=" + s.Endpoint(),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + absent,
		"AWS_SHARED_CREDENTIALS_FILE=" + absent,
	}
	if s.tls != nil {
		env = append(env, "AWS_CA_BUNDLE="+s.tls.caFile)
	}
	return env
}

// Setenv sets Env() in this process for the duration of the test t (so not
// in parallel tests), and unsets variables that would override it.
func (s *Server) Setenv(t testing.TB) {
	t.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	unset := []string{"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
		"AWS_DEFAULT_REGION", "AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION"}
	if s.tls == nil {
		unset = append(unset, "AWS_CA_BUNDLE")
	}
	for _, k := range unset {
		t.Setenv(k, "") // registers restoring the old value
		os.Unsetenv(k)
	}
}

// Client returns a new S3 client for the server (path-style, static
// credentials, checksums only where required, no retries), independent of
// the process environment.
func (s *Server) Client() *s3.Client {
	var httpClient aws.HTTPClient
	if s.tls != nil {
		pool := s.tls.pool
		httpClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		})
	}
	return s3.New(s3.Options{
		HTTPClient:                 httpClient,
		Region:                     Region,
		BaseEndpoint:               aws.String(s.Endpoint()),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		RetryMaxAttempts:           1,
	})
}

// Stop kills the server (SIGKILL, like a crash or a power cut of the
// server host, though its files are intact) and waits for it to exit. The
// port and the directory are kept for Restart. Stopping a stopped server
// does nothing.
func (s *Server) Stop() { s.proc.Stop() }

// Freeze suspends the server process (SIGSTOP): the kernel still accepts
// connections on its port, but nothing answers, like a hung server. Thaw
// resumes it; Stop and Restart work on a frozen server too.
// Freeze returns once every thread of the process is stopped.
func (s *Server) Freeze() {
	s.t.Helper()
	if err := s.proc.Pause(); err != nil {
		s.t.Fatalf("s3test: freeze: %v", err)
	}
}

// Thaw resumes a server suspended by Freeze (SIGCONT).
func (s *Server) Thaw() {
	s.t.Helper()
	if err := s.proc.Resume(); err != nil {
		s.t.Fatalf("s3test: thaw: %v", err)
	}
}

// Restart stops the server if it runs and starts it again on the same port
// with the same directory, waiting until it answers; the test fails if it
// does not.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("s3test: restart: %v", err)
	}
}

// args returns versitygw's command line.
func (s *Server) args() []string {
	args := []string{
		"--access", accessKey, "--secret", secretKey,
		"--region", Region,
		"--port", s.Addr(),
	}
	if s.tls != nil {
		args = append(args, "--cert", s.tls.certFile, "--key", s.tls.keyFile)
	}
	return append(args, "posix", s.dataDir)
}

// start launches the process and waits until it answers S3 requests
// (ListBuckets).
func (s *Server) start() error {
	client := s.Client()
	err := s.proc.Start(s.args(), readyTimeout, func() error { return probe(client, s.Addr()) })
	if err != nil {
		return fmt.Errorf("versitygw on %s: %w", s.Addr(), err)
	}
	return nil
}

// probe checks once that the server accepts connections and answers an
// authenticated ListBuckets.
func probe(client *s3.Client, addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = client.ListBuckets(ctx, &s3.ListBucketsInput{})
	return err
}
