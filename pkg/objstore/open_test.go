package objstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
)

func TestOpenErrors(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	for _, c := range []struct{ url, want string }{
		{"", "empty store URL"},
		{"relative/path", "no scheme"},
		{"/abs/path", "no scheme"},
		{"file:relative", "not absolute"},
		{"file://", "no absolute path"},
		{"file://host/x", "only local paths"},
		{"file:///x?mode=1", "query"},
		{"file://user:hunter2@/x", "user information"},
		{"gs://bucket/x", `unsupported store URL scheme "gs"`},
		{"http://example.com/x", `unsupported store URL scheme "http"`},
		{"s3://", "no bucket"},
		{"s3:///prefix", "no bucket"},
		{"s3:bucket", "malformed"},
		{"s3://AKIA:hunter2@bucket/x", "must not carry credentials"},
		{"s3://bucket:9000/x", "cannot have a port"},
		{"s3://bucket//x", "bad prefix"},
		{"s3://bucket/a/../x", "bad prefix"},
		{"s3://bucket/./x", "bad prefix"},
		{"s3://bucket/x?region=eu", "query"},
		{"s3://bucket/x#frag", "fragment"},
		{"s3://bu cket/x", "does not parse"},
		{"::", "does not parse"},
	} {
		st, err := objstore.Open(context.Background(), c.url, objstore.Options{})
		if err == nil {
			t.Errorf("Open(%q) = %v, want an error containing %q", c.url, st, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) error %q does not contain %q", c.url, err, c.want)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) error leaks the password: %v", c.url, err)
		}
	}
}

func TestOpenString(t *testing.T) {
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	for url, want := range map[string]string{
		"file:///tmp/x/../store/": "file:///tmp/store",
		"file://localhost/tmp/s":  "file:///tmp/s",
		"s3://bucket":             "s3://bucket",
		"s3://bucket/":            "s3://bucket",
		"s3://bucket/wal/t1/":     "s3://bucket/wal/t1",
		"s3://bucket/wal/t1":      "s3://bucket/wal/t1",
	} {
		st, err := objstore.Open(context.Background(), url, objstore.Options{})
		if err != nil {
			t.Errorf("Open(%q): %v", url, err)
			continue
		}
		if st.String() != want {
			t.Errorf("Open(%q).String() = %q, want %q", url, st.String(), want)
		}
	}
}

func TestValidateKey(t *testing.T) {
	for _, k := range badKeys {
		if err := objstore.ValidateKey(k); err == nil {
			t.Errorf("ValidateKey(%q) accepted it", k)
		}
	}
	for _, k := range []string{"a", "a/b/c", "tenant/timeline/000000010000000000000003.partial", "a..b", strings.Repeat("k", objstore.MaxKeyLen)} {
		if err := objstore.ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q): %v", k, err)
		}
	}
}
