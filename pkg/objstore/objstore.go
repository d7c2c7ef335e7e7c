package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"
)

var (
	// ErrExists is wrapped by Create when an object with the key is already
	// stored. Nothing was changed.
	ErrExists = errors.New("objstore: object already exists")

	// ErrNotFound is wrapped by Get and Head when no object has the key.
	// Delete of an absent key is not an error and does not return it.
	ErrNotFound = errors.New("objstore: object not found")

	// ErrInvalidKey is wrapped when a key, a list prefix or metadata breaks
	// the rules in the package documentation.
	ErrInvalidKey = errors.New("objstore: invalid key")

	// ErrInvalidMeta is wrapped by Create when the metadata breaks the rules
	// in the package documentation.
	ErrInvalidMeta = errors.New("objstore: invalid metadata")

	// ErrCorrupt is wrapped by the file backend when a file starts with the
	// object header magic but the header that follows does not parse.
	ErrCorrupt = errors.New("objstore: corrupt object header")
)

// MaxKeyLen is the longest key accepted, in bytes (S3's limit).
const MaxKeyLen = 1024

// MaxMetaSize bounds the metadata of one object: the sum of the lengths of
// its keys and values, in bytes (S3's limit for user metadata).
const MaxMetaSize = 2048

// Info describes a stored object.
type Info struct {
	// Key is the object's key relative to the store root.
	Key string
	// Size is the length of the object's content in bytes.
	Size int64
	// Meta is the user metadata given to Create, keys lower-case. Get and
	// Head always return a non-nil map; List leaves it nil (it reports only
	// Key and Size).
	Meta map[string]string
}

// Store is an object store holding immutable objects: an object is created
// once and never overwritten. It can be deleted, on an operator's explicit
// request only (a timeline's archive going with the timeline); after that
// the key is free for Create again. All implementations are safe for
// concurrent use.
type Store interface {
	// Create stores body under key only if no object has that key;
	// otherwise it returns an error wrapping ErrExists and changes nothing.
	// Metadata keys are stored lower-cased.
	//
	// On the s3 backend a Create whose first attempt landed but whose
	// response was lost is retried by the SDK and then reports ErrExists:
	// a caller that must tell "mine" from "someone else's" compares the
	// stored content or metadata (e.g. a checksum) with what it wrote.
	Create(ctx context.Context, key string, body []byte, meta map[string]string) error

	// Get returns the object's content and info; an error wrapping
	// ErrNotFound if there is no such object. The caller closes the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)

	// Head returns the object's info; an error wrapping ErrNotFound if
	// there is no such object.
	Head(ctx context.Context, key string) (Info, error)

	// List returns every object whose key starts with prefix (a plain
	// string prefix, not necessarily ending in "/"), sorted by key. Only
	// Key and Size are filled in.
	List(ctx context.Context, prefix string) ([]Info, error)

	// Delete removes the object with key, durably (the file backend
	// fsyncs the directory). Deleting an absent key is not an error:
	// retries and concurrent deletes need no special case. A key that is
	// only a prefix of other keys ("a" of "a/b") names no object; deleting
	// it removes nothing.
	Delete(ctx context.Context, key string) error

	// String returns the URL the store was opened with, without
	// credentials, for logs.
	String() string
}

// Options tune Open.
type Options struct {
	// S3PathStyle addresses buckets as http://host/bucket/key instead of
	// http://bucket.host/key; most S3-compatible servers (MinIO,
	// versitygw, Ceph without wildcard DNS) need it.
	S3PathStyle bool
}

// Open opens the store named by rawURL:
//
//	file:///absolute/path      a directory (created on the first Create)
//	s3://bucket[/prefix]       a bucket, optionally below a key prefix
//
// Open does no I/O against S3: a store can be opened while the server is
// unreachable, and requests fail until it is back.
func Open(ctx context.Context, rawURL string, opt Options) (Store, error) {
	if rawURL == "" {
		return nil, errors.New("objstore: empty store URL (want file:///abs/path or s3://bucket[/prefix])")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, which may carry credentials.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("objstore: store URL does not parse: %w", err)
	}
	switch u.Scheme {
	case "file":
		return openFileURL(u)
	case "s3":
		return openS3URL(ctx, u, opt)
	case "":
		return nil, fmt.Errorf("objstore: store URL %q has no scheme (want file:///abs/path or s3://bucket[/prefix])", redact(u))
	default:
		return nil, fmt.Errorf("objstore: unsupported store URL scheme %q in %q (want file:///abs/path or s3://bucket[/prefix])", u.Scheme, redact(u))
	}
}

// redact returns u as a string without its password.
func redact(u *url.URL) string { return u.Redacted() }

func openFileURL(u *url.URL) (Store, error) {
	if u.Opaque != "" {
		return nil, fmt.Errorf("objstore: file URL %q is not absolute (want file:///abs/path)", redact(u))
	}
	if u.User != nil {
		return nil, fmt.Errorf("objstore: file URL %q must not carry user information", redact(u))
	}
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("objstore: file URL %q names host %q; only local paths are supported (want file:///abs/path)", redact(u), u.Host)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("objstore: file URL %q must not have a query or fragment", redact(u))
	}
	if u.Path == "" || !filepath.IsAbs(u.Path) {
		return nil, fmt.Errorf("objstore: file URL %q has no absolute path (want file:///abs/path)", redact(u))
	}
	return NewFileStore(u.Path)
}

func openS3URL(ctx context.Context, u *url.URL, opt Options) (Store, error) {
	if u.Opaque != "" {
		return nil, fmt.Errorf("objstore: s3 URL %q is malformed (want s3://bucket[/prefix])", redact(u))
	}
	if u.User != nil {
		return nil, fmt.Errorf("objstore: s3 URL %q must not carry credentials; use the AWS configuration (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...)", redact(u))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("objstore: s3 URL %q must not have a query or fragment", redact(u))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("objstore: s3 URL %q has no bucket (want s3://bucket[/prefix])", redact(u))
	}
	if u.Port() != "" || strings.Contains(u.Host, ":") {
		return nil, fmt.Errorf("objstore: s3 URL %q: the bucket cannot have a port; set the endpoint with AWS_ENDPOINT_URL_S3", redact(u))
	}
	prefix := strings.TrimPrefix(u.Path, "/")
	if prefix != "" {
		p := strings.TrimSuffix(prefix, "/")
		if err := ValidateKey(p); err != nil {
			return nil, fmt.Errorf("objstore: s3 URL %q: bad prefix: %w", redact(u), err)
		}
		prefix = p + "/"
	}
	return newS3Store(ctx, u.Host, prefix, opt)
}

// ValidateKey reports whether key is acceptable to every backend: non-empty,
// at most MaxKeyLen bytes of UTF-8 without control characters, relative
// (no leading "/"), '/'-separated segments that are not empty, "." or "..",
// and no segment reserved for the file backend's temporary files (one that
// starts with "." and contains ".tmp-").
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidKey, key)
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %q contains a control character", ErrInvalidKey, key)
		}
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("%w: %q is absolute", ErrInvalidKey, key)
	}
	for _, seg := range strings.Split(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: %q has an empty segment", ErrInvalidKey, key)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: %q has a %q segment", ErrInvalidKey, key, seg)
		case isTempName(seg):
			return fmt.Errorf("%w: %q has segment %q, reserved for temporary files", ErrInvalidKey, key, seg)
		}
	}
	return nil
}

// validatePrefix checks a List prefix: "" or a string every "/"-terminated
// part of which is a valid key path, the last (partial) segment free of
// control characters.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if len(prefix) > MaxKeyLen || !utf8.ValidString(prefix) || strings.HasPrefix(prefix, "/") {
		return fmt.Errorf("%w: bad list prefix %q", ErrInvalidKey, prefix)
	}
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		if err := ValidateKey(prefix[:i]); err != nil {
			return fmt.Errorf("bad list prefix %q: %w", prefix, err)
		}
	}
	for _, r := range prefix {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: list prefix %q contains a control character", ErrInvalidKey, prefix)
		}
	}
	return nil
}

// normalizeMeta validates meta and returns a copy with lower-cased keys.
// Keys: lower-case letters, digits and '-', starting with a letter or
// digit (upper case is folded). Values: printable ASCII without leading or
// trailing spaces (HTTP trims them). Total size at most MaxMetaSize.
func normalizeMeta(meta map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(meta))
	size := 0
	for k, v := range meta {
		lk := strings.ToLower(k)
		if lk == "" {
			return nil, fmt.Errorf("%w: empty key", ErrInvalidMeta)
		}
		for i := 0; i < len(lk); i++ {
			c := lk[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0
			if !ok {
				return nil, fmt.Errorf("%w: key %q: only letters, digits and '-' (not first) are allowed", ErrInvalidMeta, k)
			}
		}
		if _, dup := out[lk]; dup {
			return nil, fmt.Errorf("%w: key %q given twice (keys are case-insensitive)", ErrInvalidMeta, lk)
		}
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] > 0x7e {
				return nil, fmt.Errorf("%w: value of %q: only printable ASCII is allowed", ErrInvalidMeta, lk)
			}
		}
		if strings.TrimSpace(v) != v {
			return nil, fmt.Errorf("%w: value of %q has leading or trailing spaces", ErrInvalidMeta, lk)
		}
		size += len(lk) + len(v)
		out[lk] = v
	}
	if size > MaxMetaSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidMeta, size, MaxMetaSize)
	}
	return out, nil
}

func sortInfos(infos []Info) {
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
}
