package walfetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/objstore"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

const (
	testSegSize  = 1 << 20
	testSystemID = 7300000000000000001
	testTenant   = "0123456789abcdef0123456789abcdef"
	testTimeline = "fedcba9876543210fedcba9876543210"
)

var testID = archive.Identity{SystemID: testSystemID, SegSize: testSegSize}

// testArchive is a file:// archive holding segments 1..3 of timeline 1
// (1 and 3 compressed, 2 not) and the history file of timeline 2.
type testArchive struct {
	root     string
	store    objstore.Store
	segments map[uint64][]byte
	history  []byte
}

func segmentBytes(seed int64) []byte {
	b := make([]byte, testSegSize)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func newTestArchive(t *testing.T) *testArchive {
	t.Helper()
	ctx := context.Background()
	ta := &testArchive{root: t.TempDir(), segments: map[uint64][]byte{}}
	var err error
	if ta.store, err = objstore.Open(ctx, "file://"+ta.root, objstore.Options{}); err != nil {
		t.Fatal(err)
	}
	zst, err := archive.New(ta.store, testTenant, testTimeline, archive.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := archive.New(ta.store, testTenant, testTimeline, archive.None)
	if err != nil {
		t.Fatal(err)
	}
	for segno := uint64(1); segno <= 3; segno++ {
		ta.segments[segno] = segmentBytes(int64(segno))
		ar := zst
		if segno == 2 {
			ar = plain
		}
		if _, err := ar.PutSegment(ctx, 1, segno, ta.segments[segno], testID); err != nil {
			t.Fatal(err)
		}
	}
	ta.history = []byte("1\t0/2800000\tno recovery target specified\n")
	if _, err := zst.PutHistory(ctx, 2, ta.history, testID); err != nil {
		t.Fatal(err)
	}
	return ta
}

// objectPath is the file of an archived object.
func (ta *testArchive) objectPath(name string) string {
	return filepath.Join(ta.root, testTenant, testTimeline, "wal", name)
}

// corrupt flips the last byte of an object's content on disk.
func (ta *testArchive) corrupt(t *testing.T, name string) {
	t.Helper()
	p := ta.objectPath(name)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func segName(segno uint64) string { return wal.SegmentFileName(1, segno, testSegSize) }

func quickFetcher(sources ...Source) *Fetcher {
	return &Fetcher{Sources: sources, Backoff: 10 * time.Millisecond}
}

func TestArchiveFetchFound(t *testing.T) {
	ta := newTestArchive(t)
	// Timeline from the flags, and found by listing the store.
	for _, src := range []*ArchiveSource{
		{Store: ta.store, TenantID: testTenant, TimelineID: testTimeline, Identity: testID},
		{Store: ta.store},
	} {
		f := quickFetcher(src)
		for segno, want := range ta.segments {
			res, err := f.Fetch(context.Background(), segName(segno))
			if err != nil {
				t.Fatalf("segment %d: %v", segno, err)
			}
			if !bytes.Equal(res.Data, want) || res.Partial() || !strings.Contains(res.From, "archive file://") {
				t.Fatalf("segment %d: wrong content or origin (%s, partial %v)", segno, res.From, res.Partial())
			}
		}
		res, err := f.Fetch(context.Background(), "00000002.history")
		if err != nil || !bytes.Equal(res.Data, ta.history) {
			t.Fatalf("history: %q %v", res.Data, err)
		}
		tenant, tl, err := src.Timeline(context.Background())
		if err != nil || tenant != testTenant || tl != testTimeline {
			t.Fatalf("timeline %s/%s %v", tenant, tl, err)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "RECOVERYXLOG")
	if err := os.WriteFile(p, []byte("old content"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := segmentBytes(9)
	if err := WriteFile(p, data); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content differs (%v)", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only RECOVERYXLOG", len(entries))
	}
	// A directory that does not exist: an error, nothing created.
	if err := WriteFile(filepath.Join(dir, "no", "such"), data); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestArchiveFetchMissing(t *testing.T) {
	ta := newTestArchive(t)
	f := quickFetcher(&ArchiveSource{Store: ta.store, TenantID: testTenant, TimelineID: testTimeline})
	for _, name := range []string{
		segName(4),              // not archived
		"00000003.history",      // not archived
		segName(2) + ".partial", // never asked of a source
		"000000010000000000000002.00000028.backup",
		"RECOVERYHISTORY",
		"",
	} {
		_, err := f.Fetch(context.Background(), name)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%q: %v, want ErrNotFound", name, err)
		}
	}
}

func TestArchiveFetchCorrupt(t *testing.T) {
	ta := newTestArchive(t)
	ta.corrupt(t, segName(2))                    // plain
	ta.corrupt(t, segName(3)+archive.ZstdSuffix) // compressed
	ta.corrupt(t, "00000002.history")
	var logged []string
	f := quickFetcher(&ArchiveSource{Store: ta.store, TenantID: testTenant, TimelineID: testTimeline})
	f.Logf = func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
	for _, name := range []string{segName(2), segName(3), "00000002.history"} {
		logged = nil
		_, err := f.Fetch(context.Background(), name)
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: %v, want a failure that is not ErrNotFound", name, err)
		}
		if !errors.Is(err, archive.ErrCorrupt) || !strings.Contains(err.Error(), "after 3 attempts") {
			t.Errorf("%s: %v", name, err)
		}
		if len(logged) != 2 {
			t.Errorf("%s: %d retries logged, want 2: %q", name, len(logged), logged)
		}
	}
	// Wrong system identifier expected: not ErrNotFound either.
	f = quickFetcher(&ArchiveSource{Store: ta.store, TenantID: testTenant, TimelineID: testTimeline,
		Identity: archive.Identity{SystemID: 42}})
	if _, err := f.Fetch(context.Background(), segName(1)); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("foreign system: %v", err)
	}
}

func TestArchiveTimelineChoice(t *testing.T) {
	ctx := context.Background()
	store, err := objstore.Open(ctx, "file://"+t.TempDir(), objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := quickFetcher(&ArchiveSource{Store: store})
	f.Attempts = 1
	if _, err := f.Fetch(ctx, segName(1)); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no timeline") {
		t.Fatalf("empty archive: %v", err)
	}
	for _, tl := range []string{testTimeline, strings.Repeat("1", 32)} {
		ar, _ := archive.New(store, testTenant, tl, archive.Zstd)
		if _, err := ar.PutSegment(ctx, 1, 1, segmentBytes(1), testID); err != nil {
			t.Fatal(err)
		}
	}
	f = quickFetcher(&ArchiveSource{Store: store})
	f.Attempts = 1
	if _, err := f.Fetch(ctx, segName(1)); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "2 timelines") {
		t.Fatalf("two timelines: %v", err)
	}
	f = quickFetcher(&ArchiveSource{Store: store, TenantID: testTenant, TimelineID: testTimeline})
	if _, err := f.Fetch(ctx, segName(1)); err != nil {
		t.Fatalf("named timeline: %v", err)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// unreachableS3 points the AWS SDK at a closed local port.
func unreachableS3(t *testing.T) string {
	t.Setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:"+strconv.Itoa(closedPort(t)))
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	return "s3://bucket/prefix"
}

func TestArchiveUnreachable(t *testing.T) {
	url := unreachableS3(t)
	store, err := objstore.Open(context.Background(), url, objstore.Options{S3PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []*ArchiveSource{
		{Store: store, TenantID: testTenant, TimelineID: testTimeline},
		{Store: store}, // the listing fails
	} {
		const timeout = 5 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		t0 := time.Now()
		_, err := quickFetcher(src).Fetch(ctx, segName(1))
		cancel()
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Fatalf("unreachable archive: %v, want a failure", err)
		}
		if d := time.Since(t0); d > timeout+time.Second {
			t.Fatalf("took %s, more than the timeout", d)
		}
	}
}

// fakeSource answers from a script.
type fakeSource struct {
	name    string
	answers []error // per call; the last one repeats; nil = found
	calls   int
}

func (s *fakeSource) String() string { return s.name }

func (s *fakeSource) Fetch(ctx context.Context, name string) (Result, error) {
	err := s.answers[min(s.calls, len(s.answers)-1)]
	s.calls++
	if err != nil {
		return Result{}, err
	}
	return Result{Data: []byte(s.name), Durable: len(s.name)}, nil
}

// partialSource returns a segment of which only the first durable bytes
// are WAL.
type partialSource struct {
	name    string
	durable int
}

func (s *partialSource) String() string { return s.name }

func (s *partialSource) Fetch(ctx context.Context, name string) (Result, error) {
	return Result{Data: make([]byte, 64), Durable: s.durable, From: s.name}, nil
}

func TestFetcherOutcomes(t *testing.T) {
	absent := fmt.Errorf("%w here", ErrNotFound)
	down := errors.New("connection refused")
	ctx := context.Background()
	name := segName(1)

	// Every source answers "not there": ErrNotFound, no retry.
	a, b := &fakeSource{name: "a", answers: []error{absent}}, &fakeSource{name: "b", answers: []error{absent}}
	if _, err := quickFetcher(a, b).Fetch(ctx, name); !errors.Is(err, ErrNotFound) || a.calls != 1 || b.calls != 1 {
		t.Fatalf("all absent: %v, calls %d %d", err, a.calls, b.calls)
	}
	// One cannot answer, the other has not got it: a failure, retried.
	a, b = &fakeSource{name: "a", answers: []error{down}}, &fakeSource{name: "b", answers: []error{absent}}
	_, err := quickFetcher(a, b).Fetch(ctx, name)
	if err == nil || errors.Is(err, ErrNotFound) || !errors.Is(err, down) || a.calls != 3 || b.calls != 3 {
		t.Fatalf("down + absent: %v, calls %d %d", err, a.calls, b.calls)
	}
	// The first fails, the second has it: found.
	a, b = &fakeSource{name: "a", answers: []error{down}}, &fakeSource{name: "b", answers: []error{nil}}
	res, err := quickFetcher(a, b).Fetch(ctx, name)
	if err != nil || res.From != "b" {
		t.Fatalf("down + found: %+v %v", res, err)
	}
	// The first has it: the second is not asked.
	a, b = &fakeSource{name: "a", answers: []error{nil}}, &fakeSource{name: "b", answers: []error{nil}}
	if res, err := quickFetcher(a, b).Fetch(ctx, name); err != nil || res.From != "a" || b.calls != 0 {
		t.Fatalf("found first: %+v %v", res, err)
	}
	// A failure that goes away: found on the second attempt.
	a = &fakeSource{name: "a", answers: []error{down, nil}}
	if res, err := quickFetcher(a).Fetch(ctx, name); err != nil || res.From != "a" || a.calls != 2 {
		t.Fatalf("transient: %+v %v", res, err)
	}
	// Out of time: the failure, promptly.
	a = &fakeSource{name: "a", answers: []error{down}}
	f := &Fetcher{Sources: []Source{a}, Backoff: time.Hour}
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := f.Fetch(tctx, name); err == nil || errors.Is(err, ErrNotFound) || a.calls != 1 {
		t.Fatalf("timeout: %v", err)
	}
	// A partial segment is the answer only when every source answered:
	// a source that could not be asked may hold more of it.
	part := &partialSource{name: "p", durable: 10}
	a = &fakeSource{name: "a", answers: []error{down}}
	if res, err := quickFetcher(a, part).Fetch(ctx, name); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("down + partial: %+v %v", res, err)
	}
	a = &fakeSource{name: "a", answers: []error{absent}}
	if res, err := quickFetcher(a, part).Fetch(ctx, name); err != nil || res.Durable != 10 {
		t.Fatalf("absent + partial: %+v %v", res, err)
	}
	// A complete one later wins over a partial one earlier; between two
	// partial ones, the longer.
	a = &fakeSource{name: "a", answers: []error{nil}}
	if res, err := quickFetcher(part, a).Fetch(ctx, name); err != nil || res.Partial() || res.From != "a" {
		t.Fatalf("partial + complete: %+v %v", res, err)
	}
	longer := &partialSource{name: "q", durable: 20}
	if res, err := quickFetcher(part, longer).Fetch(ctx, name); err != nil || res.Durable != 20 {
		t.Fatalf("partial + longer partial: %+v %v", res, err)
	}
	// No sources: a failure.
	if _, err := (&Fetcher{}).Fetch(ctx, name); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("no sources: %v", err)
	}
}

func TestClassify(t *testing.T) {
	for name, want := range map[string]Kind{
		"000000010000000000000003":                 Segment,
		"00000002.history":                         History,
		"00000000.history":                         NotWAL,
		"000000010000000000000003.partial":         NotWAL,
		"000000010000000000000003.00000028.backup": NotWAL,
		"00000001000000000000000a":                 NotWAL,
		"RECOVERYXLOG":                             NotWAL,
	} {
		if got := Classify(name); got != want {
			t.Errorf("%s: %d, want %d", name, got, want)
		}
	}
}
