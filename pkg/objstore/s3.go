package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

const (
	// defaultRegion is used when the AWS configuration names none.
	defaultRegion = "us-east-1"
	// s3MaxAttempts is the SDK's attempts per request (standard retry
	// mode: exponential backoff with jitter and a retry quota). Callers
	// wrap whole operations in their own retry loops.
	s3MaxAttempts = 3
	// s3DialTimeout bounds connecting to the endpoint.
	s3DialTimeout = 5 * time.Second
	// s3ResponseHeaderTimeout bounds the wait for a response's headers
	// after the request was sent, so a server that accepts and then hangs
	// does not hang the caller past it even with a context without
	// deadline.
	s3ResponseHeaderTimeout = 30 * time.Second
	// s3TLSHandshakeTimeout bounds the TLS handshake.
	s3TLSHandshakeTimeout = 10 * time.Second
)

// S3Store keeps objects in an S3 bucket below a key prefix. Configuration
// other than the bucket and prefix comes from the standard AWS chain; see
// the package documentation.
type S3Store struct {
	client *s3.Client
	bucket string
	prefix string // "" or ending in "/"

	// listPageSize is MaxKeys for ListObjectsV2; 0 lets the server choose
	// (1000 on AWS). Tests lower it to exercise pagination.
	listPageSize int32
}

var _ Store = (*S3Store)(nil)

// newS3Store loads the AWS configuration and builds the client. It does
// not contact the server.
func newS3Store(ctx context.Context, bucket, prefix string, opt Options) (*S3Store, error) {
	// A BuildableClient keeps AWS_CA_BUNDLE working: the config loader adds
	// the bundle's roots to it, and refuses other client types.
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = s3DialTimeout }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.ResponseHeaderTimeout = s3ResponseHeaderTimeout
			tr.TLSHandshakeTimeout = s3TLSHandshakeTimeout
		})
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithHTTPClient(httpClient),
		config.WithDefaultRegion(defaultRegion),
		config.WithRetryMode(aws.RetryModeStandard),
		config.WithRetryMaxAttempts(s3MaxAttempts),
	)
	if err != nil {
		return nil, fmt.Errorf("objstore: s3://%s: load AWS configuration: %w", bucket, err)
	}
	var endpointErr error
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = opt.S3PathStyle
		// o.BaseEndpoint is resolved by now from AWS_ENDPOINT_URL_S3,
		// AWS_ENDPOINT_URL or the shared config's endpoint_url.
		custom, err := isCustomEndpoint(aws.ToString(o.BaseEndpoint))
		if err != nil {
			endpointErr = err
			return
		}
		if custom {
			// S3-compatible servers lag behind the SDK's checksum
			// defaults of January 2025 (aws-chunked trailers, CRC32
			// headers, X-Amz-Checksum-Mode on GET): only send and check
			// checksums where the API requires them.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
	})
	if endpointErr != nil {
		return nil, fmt.Errorf("objstore: s3://%s: %w", bucket, endpointErr)
	}
	return &S3Store{client: client, bucket: bucket, prefix: prefix}, nil
}

// isCustomEndpoint reports whether endpoint (empty: the SDK's default) is
// something other than AWS's own S3.
func isCustomEndpoint(endpoint string) (bool, error) {
	if endpoint == "" {
		return false, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false, fmt.Errorf("S3 endpoint %q is not an http(s) URL", endpoint)
	}
	host := strings.ToLower(u.Hostname())
	aws := host == "amazonaws.com" || strings.HasSuffix(host, ".amazonaws.com") ||
		host == "amazonaws.com.cn" || strings.HasSuffix(host, ".amazonaws.com.cn")
	return !aws, nil
}

// String implements Store.
func (s *S3Store) String() string {
	if s.prefix == "" {
		return "s3://" + s.bucket
	}
	return "s3://" + s.bucket + "/" + strings.TrimSuffix(s.prefix, "/")
}

// Bucket returns the bucket's name.
func (s *S3Store) Bucket() string { return s.bucket }

// Prefix returns the key prefix below which the store's objects live ("" or
// ending in "/").
func (s *S3Store) Prefix() string { return s.prefix }

// Client returns the underlying S3 client, for tests and tools.
func (s *S3Store) Client() *s3.Client { return s.client }

// Create implements Store with a conditional PutObject (If-None-Match: *).
func (s *S3Store) Create(ctx context.Context, key string, body []byte, meta map[string]string) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("objstore: create: %w", err)
	}
	meta, err := normalizeMeta(meta)
	if err != nil {
		return fmt.Errorf("objstore: create %s: %w", key, err)
	}
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.prefix + key),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		Metadata:      meta,
		IfNoneMatch:   aws.String("*"),
	})
	if err != nil {
		switch httpStatus(err) {
		case http.StatusPreconditionFailed:
			return fmt.Errorf("objstore: create %s: %w", key, ErrExists)
		case http.StatusConflict:
			// ConditionalRequestConflict: a concurrent write to the key
			// was in progress. Which one wins is undecided; retrying
			// tells.
			return fmt.Errorf("objstore: create %s: concurrent write, retry: %w", key, err)
		}
		return fmt.Errorf("objstore: create %s: %w", key, err)
	}
	return nil
}

// Get implements Store.
func (s *S3Store) Get(ctx context.Context, key string) (io.ReadCloser, Info, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Info{}, fmt.Errorf("objstore: get: %w", err)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.prefix + key),
	})
	if err != nil {
		return nil, Info{}, fmt.Errorf("objstore: get %s: %w", key, notFound(err))
	}
	return out.Body, Info{Key: key, Size: aws.ToInt64(out.ContentLength), Meta: nonNil(out.Metadata)}, nil
}

// Head implements Store.
func (s *S3Store) Head(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, fmt.Errorf("objstore: head: %w", err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.prefix + key),
	})
	if err != nil {
		return Info{}, fmt.Errorf("objstore: head %s: %w", key, notFound(err))
	}
	return Info{Key: key, Size: aws.ToInt64(out.ContentLength), Meta: nonNil(out.Metadata)}, nil
}

// List implements Store with ListObjectsV2, following every page. Keys
// below the store's prefix that are not valid keys (such as "dir/" markers
// made by consoles) are skipped.
func (s *S3Store) List(ctx context.Context, prefix string) ([]Info, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("objstore: list: %w", err)
	}
	in := &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket),
		Prefix: aws.String(s.prefix + prefix),
	}
	if s.listPageSize > 0 {
		in.MaxKeys = aws.Int32(s.listPageSize)
	}
	var out []Info
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("objstore: list %q: %w", prefix, err)
		}
		for _, o := range page.Contents {
			full := aws.ToString(o.Key)
			key, ok := strings.CutPrefix(full, s.prefix)
			if !ok || !strings.HasPrefix(key, prefix) || ValidateKey(key) != nil {
				continue
			}
			out = append(out, Info{Key: key, Size: aws.ToInt64(o.Size)})
		}
	}
	sortInfos(out)
	return out, nil
}

// Delete implements Store with DeleteObject. S3 answers 204 for an
// absent key as well; a 404 other than NoSuchBucket (some compatible
// servers) is taken as "already gone".
func (s *S3Store) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("objstore: delete: %w", err)
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(s.prefix + key),
	})
	if err != nil && !errors.Is(notFound(err), ErrNotFound) {
		return fmt.Errorf("objstore: delete %s: %w", key, err)
	}
	return nil
}

// httpStatus returns the HTTP status of a failed S3 call, or 0 when the
// call got no response.
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// notFound wraps ErrNotFound around err if it says the object does not
// exist: NoSuchKey (GET), NotFound (HEAD, which has no error body), or a
// bare 404. A missing bucket (NoSuchBucket) is a configuration error, not
// an absent object, and is returned as it is; HEAD cannot tell the two
// apart, as S3 sends no body with it.
func notFound(err error) error {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "NoSuchBucket" {
		return err
	}
	if httpStatus(err) == http.StatusNotFound {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
