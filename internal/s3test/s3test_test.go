package s3test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
)

// TestVersionMatchesMakefile keeps the version the tests build in step with
// the one `make tools` builds.
func TestVersionMatchesMakefile(t *testing.T) {
	if got := testenv.MakefileVar(t, "VERSITYGW_VERSION"); got != VersityGWVersion {
		t.Fatalf("Makefile VERSITYGW_VERSION = %s, s3test.VersityGWVersion = %s", got, VersityGWVersion)
	}
}

func TestStartPutGetRestart(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := s.Client()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.Bucket()), Key: aws.String("a/b"), Body: strings.NewReader("hello"),
	}); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if s.Endpoint() != "http://"+s.Addr() || !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("endpoint %s addr %s", s.Endpoint(), s.Addr())
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.Bucket()), Key: aws.String("a/b")})
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	defer out.Body.Close()
	buf := new(bytes.Buffer)
	if _, err := buf.ReadFrom(out.Body); err != nil || buf.String() != "hello" {
		t.Fatalf("read %q, %v", buf.String(), err)
	}

	s.Stop()
	s.Stop() // idempotent
	short, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	if _, err := c.ListBuckets(short, &s3.ListBucketsInput{}); err == nil {
		t.Fatal("ListBuckets succeeded on a stopped server")
	}
	s.Restart()
	if _, err := c.ListBuckets(ctx, &s3.ListBucketsInput{}); err != nil {
		t.Fatalf("after second restart: %v", err)
	}
}

func TestURLAndEnv(t *testing.T) {
	s := &Server{port: 1234, dir: "/x"}
	if got := s.URL(""); got != "s3://"+bucket {
		t.Errorf("URL(\"\") = %s", got)
	}
	if got := s.URL("/wal/t1/"); got != "s3://"+bucket+"/wal/t1" {
		t.Errorf("URL = %s", got)
	}
	env := strings.Join(s.Env(), "\n")
	for _, want := range []string{"AWS_ENDPOINT_URL_S3=http://127.0.0.1:1234", "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY="} {
		if !strings.Contains(env, want) {
			t.Errorf("Env lacks %s:\n%s", want, env)
		}
	}
}

func TestStartTLS(t *testing.T) {
	s := StartTLS(t)
	if !strings.HasPrefix(s.Endpoint(), "https://127.0.0.1:") || s.CAFile() == "" {
		t.Fatalf("endpoint %s CA %q", s.Endpoint(), s.CAFile())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Client().ListBuckets(ctx, &s3.ListBucketsInput{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(s.Env(), "\n"), "AWS_CA_BUNDLE="+s.CAFile()) {
		t.Fatalf("Env lacks AWS_CA_BUNDLE: %v", s.Env())
	}
}
