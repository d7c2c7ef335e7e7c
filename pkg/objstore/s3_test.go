package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/pgsafekeeper/safekeeper/internal/s3test"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
)

// TestS3Pagination proves List follows ListObjectsV2 continuation tokens:
// with 7 keys per page, 50 objects take 8 pages.
func TestS3Pagination(t *testing.T) {
	srv := s3test.Start(t)
	srv.Setenv(t)
	st := open(t, srv.URL("wal"))
	const n = 50
	for i := n - 1; i >= 0; i-- {
		mustCreate(t, st, fmt.Sprintf("t/%04d", i), []byte(strings.Repeat("x", i)), nil)
	}
	// An object outside the store's prefix and one in a sibling prefix
	// that shares the string prefix must not show up.
	raw := srv.Client()
	for _, k := range []string{"walrus/t/0001", "other/t/0001"} {
		if _, err := raw.PutObject(ctx(t), &s3.PutObjectInput{Bucket: aws.String(srv.Bucket()), Key: aws.String(k), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	objstore.SetListPageSize(st, 7)
	got, err := st.List(ctx(t), "t/")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("List returned %d objects, want %d", len(got), n)
	}
	for i, in := range got {
		if in.Key != fmt.Sprintf("t/%04d", i) || in.Size != int64(i) {
			t.Fatalf("List[%d] = %+v", i, in)
		}
	}
	// The same through the server's own pages, to be sure MaxKeys bit.
	page, err := raw.ListObjectsV2(ctx(t), &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket()), Prefix: aws.String("wal/t/"), MaxKeys: aws.Int32(7)})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Contents) != 7 || !aws.ToBool(page.IsTruncated) {
		t.Fatalf("server ignored MaxKeys: %d keys, truncated %v", len(page.Contents), aws.ToBool(page.IsTruncated))
	}
}

// TestS3RealObjects checks what lands on the server: the content as is (no
// file header), metadata as S3 user metadata, and the conditional put
// refused by the server itself.
func TestS3RealObjects(t *testing.T) {
	srv := s3test.Start(t)
	srv.Setenv(t)
	st := open(t, srv.URL("archive/"))
	body := []byte("segment bytes")
	mustCreate(t, st, "tl/seg", body, map[string]string{"SHA256": "abc123", "Start-LSN": "0/1000000"})

	raw := srv.Client()
	out, err := raw.GetObject(ctx(t), &s3.GetObjectInput{Bucket: aws.String(srv.Bucket()), Key: aws.String("archive/tl/seg")})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || !bytes.Equal(data, body) {
		t.Fatalf("raw object = %q, %v", data, err)
	}
	if out.Metadata["sha256"] != "abc123" || out.Metadata["start-lsn"] != "0/1000000" || len(out.Metadata) != 2 {
		t.Fatalf("raw metadata = %v", out.Metadata)
	}
	_, err = raw.PutObject(ctx(t), &s3.PutObjectInput{
		Bucket: aws.String(srv.Bucket()), Key: aws.String("archive/tl/seg"),
		Body: strings.NewReader("other"), IfNoneMatch: aws.String("*"),
	})
	if err == nil || !strings.Contains(err.Error(), "412") {
		t.Fatalf("raw conditional put over an existing object: %v, want 412", err)
	}
	// Delete removes the object on the server, below the store's prefix
	// only; deleting twice is fine.
	for _, k := range []string{"tl/seg", "archive/tl/seg"} {
		if _, err := raw.PutObject(ctx(t), &s3.PutObjectInput{Bucket: aws.String(srv.Bucket()), Key: aws.String("outside/" + k), Body: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := st.Delete(ctx(t), "tl/seg"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := raw.HeadObject(ctx(t), &s3.HeadObjectInput{Bucket: aws.String(srv.Bucket()), Key: aws.String("archive/tl/seg")}); err == nil {
		t.Fatal("object still on the server after Delete")
	}
	for _, k := range []string{"tl/seg", "archive/tl/seg"} {
		if _, err := raw.HeadObject(ctx(t), &s3.HeadObjectInput{Bucket: aws.String(srv.Bucket()), Key: aws.String("outside/" + k)}); err != nil {
			t.Fatalf("Delete touched outside/%s: %v", k, err)
		}
	}
	if _, err := st.Head(ctx(t), "tl/seg"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Head after Delete: %v", err)
	}
	mustCreate(t, st, "tl/seg", []byte("again"), nil)
}

// TestS3Outage: a Create against a stopped server fails within a bounded
// time, whatever the SDK's retries, and the same Create succeeds once the
// server is back.
func TestS3Outage(t *testing.T) {
	srv := s3test.Start(t)
	srv.Setenv(t)
	st := open(t, srv.URL("outage"))
	mustCreate(t, st, "before", []byte("x"), nil)

	srv.Stop()
	for _, limit := range []time.Duration{2 * time.Second, 20 * time.Second} {
		c, cancel := context.WithTimeout(context.Background(), limit)
		start := time.Now()
		err := st.Create(c, "during", []byte("y"), nil)
		took := time.Since(start)
		cancel()
		if err == nil || errors.Is(err, objstore.ErrExists) {
			t.Fatalf("Create with the server down (deadline %s): %v", limit, err)
		}
		if took > limit+2*time.Second {
			t.Fatalf("Create with the server down took %s, deadline %s", took, limit)
		}
		t.Logf("deadline %s: failed after %s: %v", limit, took.Round(time.Millisecond), err)
	}
	if _, err := st.Head(ctx(t), "before"); err == nil || errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Head with the server down: %v, want a transport error (not ErrNotFound)", err)
	}

	// A hung server (accepts, never answers): the caller's deadline bounds
	// the call.
	srv.Restart()
	srv.Freeze()
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	start := time.Now()
	err := st.Create(c, "during", []byte("y"), nil)
	took := time.Since(start)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || took > 4*time.Second {
		t.Fatalf("Create against a hung server: %v after %s, want the context deadline after ~2s", err, took)
	}
	t.Logf("hung server: failed after %s: %v", took.Round(time.Millisecond), err)
	srv.Thaw()

	// The server resumes with the abandoned request in its socket buffer
	// and may still store it, racing with the next Create (a 409, or a
	// 412 if it got there first). Retry as a caller does: the key ends up
	// holding "y" exactly once.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := st.Create(ctx(t), "during", []byte("y"), nil)
		if err == nil || errors.Is(err, objstore.ErrExists) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Create after the outage: %v", err)
		}
		t.Logf("Create after the outage, retrying: %v", err)
		time.Sleep(100 * time.Millisecond)
	}
	if data, _ := mustGet(t, st, "during"); string(data) != "y" {
		t.Fatalf("after restart: %q", data)
	}
	if data, _ := mustGet(t, st, "before"); string(data) != "x" {
		t.Fatalf("object from before the outage: %q", data)
	}
}

// TestS3MissingBucket: a wrong bucket is not "object not found" on GET.
func TestS3MissingBucket(t *testing.T) {
	srv := s3test.Start(t)
	srv.Setenv(t)
	st := open(t, "s3://no-such-bucket/p")
	_, _, err := st.Get(ctx(t), "k")
	if err == nil || errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get in a missing bucket: %v, want an error other than ErrNotFound", err)
	}
	if err := st.Create(ctx(t), "k", []byte("x"), nil); err == nil {
		t.Fatal("Create in a missing bucket succeeded")
	}
}

// TestS3ClientOptions: checksum settings follow the endpoint; retries,
// region and HTTP timeouts are as documented.
func TestS3ClientOptions(t *testing.T) {
	srv := s3test.Start(t)
	srv.Setenv(t)
	st := open(t, srv.URL(""))
	o := st.(*objstore.S3Store).Client().Options()
	if o.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired ||
		o.ResponseChecksumValidation != aws.ResponseChecksumValidationWhenRequired {
		t.Fatalf("custom endpoint: checksum settings %v/%v, want when_required", o.RequestChecksumCalculation, o.ResponseChecksumValidation)
	}
	if !o.UsePathStyle || o.RetryMaxAttempts != 3 || aws.ToString(o.BaseEndpoint) != srv.Endpoint() || o.Region != "us-east-1" {
		t.Fatalf("options: path style %v, attempts %d, endpoint %s, region %s", o.UsePathStyle, o.RetryMaxAttempts, aws.ToString(o.BaseEndpoint), o.Region)
	}
	hc, ok := o.HTTPClient.(*awshttp.BuildableClient)
	if !ok {
		t.Fatalf("HTTP client is a %T, want *awshttp.BuildableClient (needed for AWS_CA_BUNDLE)", o.HTTPClient)
	}
	if d, tr := hc.GetDialer(), hc.GetTransport(); d.Timeout != 5*time.Second || tr.ResponseHeaderTimeout != 30*time.Second {
		t.Fatalf("dial timeout %s, response header timeout %s", d.Timeout, tr.ResponseHeaderTimeout)
	}

	// Without an endpoint (real AWS) and without a region: SDK defaults
	// for checksums, us-east-1.
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	t.Setenv("AWS_REGION", "")
	st, err := objstore.Open(ctx(t), "s3://bucket/x", objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o = st.(*objstore.S3Store).Client().Options()
	if o.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenSupported || o.BaseEndpoint != nil || o.Region != "us-east-1" || o.UsePathStyle {
		t.Fatalf("AWS: checksum %v endpoint %v region %q path style %v", o.RequestChecksumCalculation, o.BaseEndpoint, o.Region, o.UsePathStyle)
	}
	// AWS_ENDPOINT_URL (all services) counts as a custom endpoint too.
	t.Setenv("AWS_ENDPOINT_URL", srv.Endpoint())
	t.Setenv("AWS_REGION", "eu-west-1")
	st, err = objstore.Open(ctx(t), "s3://bucket/x", objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o = st.(*objstore.S3Store).Client().Options()
	if o.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired || o.Region != "eu-west-1" {
		t.Fatalf("AWS_ENDPOINT_URL: checksum %v region %q", o.RequestChecksumCalculation, o.Region)
	}

	for ep, custom := range map[string]bool{
		"https://s3.eu-west-1.amazonaws.com":     false,
		"https://bucket.s3.amazonaws.com":        false,
		"https://s3.cn-north-1.amazonaws.com.cn": false,
		"http://127.0.0.1:9000":                  true,
		"https://minio.example.com":              true,
		"https://amazonaws.com.evil.example":     true,
	} {
		got, err := objstore.IsCustomEndpoint(ep)
		if err != nil || got != custom {
			t.Errorf("IsCustomEndpoint(%s) = %v, %v; want %v", ep, got, err, custom)
		}
	}
	if _, err := objstore.IsCustomEndpoint("localhost:9000"); err == nil {
		t.Error("IsCustomEndpoint accepted an endpoint without scheme")
	}
}

// TestS3TLSWithCABundle: AWS_CA_BUNDLE reaches the HTTP client objstore
// builds (it has timeouts of its own, so the SDK's CA-bundle hook must
// still apply to it).
func TestS3TLSWithCABundle(t *testing.T) {
	srv := s3test.StartTLS(t)
	srv.Setenv(t)
	st := open(t, srv.URL("tls"))
	mustCreate(t, st, "k", []byte("over TLS"), map[string]string{"a": "b"})
	if data, info := mustGet(t, st, "k"); string(data) != "over TLS" || info.Meta["a"] != "b" {
		t.Fatalf("over TLS: %q %+v", data, info)
	}

	// Without the bundle the server's certificate is not trusted.
	t.Setenv("AWS_CA_BUNDLE", "")
	st = open(t, srv.URL("tls"))
	if _, err := st.Head(ctx(t), "k"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Head without the CA bundle: %v, want a certificate error", err)
	}

	// A bundle that cannot be read fails Open, not the first request.
	t.Setenv("AWS_CA_BUNDLE", "/nonexistent/ca.pem")
	if _, err := objstore.Open(ctx(t), srv.URL("tls"), objstore.Options{S3PathStyle: true}); err == nil {
		t.Fatal("Open with an unreadable AWS_CA_BUNDLE succeeded")
	}
}
