package main

import (
	"bytes"
	"context"
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
	tSegSize  = 1 << 20
	tTenant   = "0123456789abcdef0123456789abcdef"
	tTimeline = "fedcba9876543210fedcba9876543210"
)

// cmdArchive is a file:// archive with segments 1..5 of timeline 1 and the
// history file of timeline 2.
type cmdArchive struct {
	root, url string
	segments  map[uint64][]byte
}

func newCmdArchive(t *testing.T) *cmdArchive {
	t.Helper()
	ctx := context.Background()
	a := &cmdArchive{root: t.TempDir(), segments: map[uint64][]byte{}}
	a.url = "file://" + a.root
	store, err := objstore.Open(ctx, a.url, objstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := archive.New(store, tTenant, tTimeline, archive.Zstd)
	if err != nil {
		t.Fatal(err)
	}
	id := archive.Identity{SystemID: 7300000000000000001, SegSize: tSegSize}
	for segno := uint64(1); segno <= 5; segno++ {
		b := make([]byte, tSegSize)
		rand.New(rand.NewSource(int64(segno))).Read(b)
		a.segments[segno] = b
		if _, err := ar.PutSegment(ctx, 1, segno, b, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ar.PutHistory(ctx, 2, []byte("1\t0/5800000\tno recovery target specified\n"), id); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *cmdArchive) objectPath(name string) string {
	return filepath.Join(a.root, tTenant, tTimeline, "wal", name)
}

func cmdSegName(segno uint64) string { return wal.SegmentFileName(1, segno, tSegSize) }

// runCmd runs realMain and returns its status and what it wrote to
// stdout and stderr.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = outW, errW
	done := make(chan [2]string)
	go func() {
		var o, e bytes.Buffer
		ch := make(chan struct{})
		go func() { o.ReadFrom(outR); close(ch) }()
		e.ReadFrom(errR)
		<-ch
		done <- [2]string{o.String(), e.String()}
	}()
	code := realMain(args)
	os.Stdout, os.Stderr = oldOut, oldErr
	outW.Close()
	errW.Close()
	got := <-done
	t.Logf("safekeeper %s: exit %d\n%s%s", strings.Join(args, " "), code, got[0], got[1])
	return code, got[0], got[1]
}

func TestWalFetchExitCodes(t *testing.T) {
	a := newCmdArchive(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "RECOVERYXLOG")

	// 0: found, written, identical; with and without the timeline named.
	for _, extra := range [][]string{nil, {"--tenant-id", tTenant, "--timeline-id", tTimeline}} {
		args := append([]string{"wal-fetch", "--archive", a.url}, extra...)
		code, _, stderr := runCmd(t, append(args, cmdSegName(3), p)...)
		if code != 0 {
			t.Fatalf("found: exit %d: %s", code, stderr)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, a.segments[3]) {
			t.Fatalf("written file differs (%v)", err)
		}
		if !strings.Contains(stderr, cmdSegName(3)+": restored from archive") {
			t.Errorf("log: %s", stderr)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Fatalf("%d files in the target directory", len(entries))
		}
	}
	// Flags after the arguments work too; a history file.
	code, _, stderr := runCmd(t, "wal-fetch", "00000002.history", p, "--archive", a.url)
	if got, _ := os.ReadFile(p); code != 0 || !strings.HasPrefix(string(got), "1\t0/5800000") {
		t.Fatalf("history: exit %d: %s", code, stderr)
	}

	// 1: not there (and the target left alone).
	for _, name := range []string{cmdSegName(9), "00000003.history", cmdSegName(3) + ".partial"} {
		code, _, stderr := runCmd(t, "wal-fetch", "--archive", a.url, name, filepath.Join(dir, "other"))
		if code != 1 || !strings.Contains(stderr, name+": not found") {
			t.Fatalf("%s: exit %d: %s", name, code, stderr)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("%d files in the target directory", len(entries))
	}

	// 126: a corrupt object, an unknown timeline choice.
	b, _ := os.ReadFile(a.objectPath(cmdSegName(4) + archive.ZstdSuffix))
	b[len(b)-1] ^= 0xff
	os.WriteFile(a.objectPath(cmdSegName(4)+archive.ZstdSuffix), b, 0o600)
	code, _, stderr = runCmd(t, "wal-fetch", "--archive", a.url, cmdSegName(4), p)
	if code != 126 || !strings.Contains(stderr, "failed") {
		t.Fatalf("corrupt: exit %d: %s", code, stderr)
	}
	code, _, stderr = runCmd(t, "wal-fetch", "--archive", "file://"+t.TempDir(), cmdSegName(4), p)
	if code != 126 || !strings.Contains(stderr, "no timeline") {
		t.Fatalf("empty archive: exit %d: %s", code, stderr)
	}

	// Usage errors: 126 too, so that a mistyped restore_command stops
	// recovery instead of ending it.
	for _, args := range [][]string{
		{"wal-fetch", cmdSegName(3), p},                                     // no source
		{"wal-fetch", "--archive", a.url, cmdSegName(3)},                    // no %p
		{"wal-fetch", "--archive", a.url, cmdSegName(3), p, "extra"},        // too many
		{"wal-fetch", "--archive", a.url, "--no-such-flag", "x", "y"},       // bad flag
		{"wal-fetch", "--archive", a.url, "--tenant-id", tTenant, "x", "y"}, // half a timeline
		{"wal-fetch", "--archive", a.url, "--tenant-id", "xyz", "--timeline-id", tTimeline, "x", "y"},
		{"wal-fetch", "--archive", a.url, "--timeout", "soon", "x", "y"},
	} {
		if code, _, stderr := runCmd(t, args...); code != 126 {
			t.Errorf("%q: exit %d: %s", args, code, stderr)
		}
	}
	if code, _, _ := runCmd(t, "wal-fetch", "-h"); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
}

// unreachableS3 points the AWS SDK at a closed loopback port, which it
// returns.
func unreachableS3(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	t.Setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:"+strconv.Itoa(port))
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	return port
}

func TestWalFetchUnreachable(t *testing.T) {
	port := unreachableS3(t)
	p := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	t0 := time.Now()
	code, _, stderr := runCmd(t, "wal-fetch", "--archive", "s3://bucket/prefix", "--archive-s3-path-style",
		"--tenant-id", tTenant, "--timeline-id", tTimeline, "--timeout", "5s", cmdSegName(3), p)
	if code != 126 {
		t.Fatalf("unreachable archive: exit %d: %s", code, stderr)
	}
	if d := time.Since(t0); d > 6*time.Second {
		t.Fatalf("took %s with --timeout 5s", d)
	}
	// An unreachable safekeeper while the archive does not have the file.
	a := newCmdArchive(t)
	code, _, stderr = runCmd(t, "wal-fetch", "--archive", a.url, "--safekeepers", "127.0.0.1:"+strconv.Itoa(port),
		"--timeout", "5s", cmdSegName(9), p)
	if code != 126 {
		t.Fatalf("unreachable safekeeper: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("target written: %v", err)
	}
}

func TestWalVerify(t *testing.T) {
	a := newCmdArchive(t)
	code, stdout, stderr := runCmd(t, "wal-verify", "--archive", a.url)
	if code != 0 || !strings.Contains(stdout, "segments: 5, "+cmdSegName(1)+" .. "+cmdSegName(5)) ||
		!strings.Contains(stdout, "00000002.history") || !strings.Contains(stdout, "OK") {
		t.Fatalf("clean: exit %d\n%s%s", code, stdout, stderr)
	}

	// A gap: segment 3 removed.
	if err := os.Remove(a.objectPath(cmdSegName(3) + archive.ZstdSuffix)); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runCmd(t, "wal-verify", "--archive", a.url, "--tenant-id", tTenant, "--timeline-id", tTimeline)
	if code != 1 || !strings.Contains(stdout, "missing "+cmdSegName(3)+" (1 segment") {
		t.Fatalf("gap: exit %d\n%s", code, stdout)
	}

	// A corrupt object, reported by name.
	key := a.objectPath(cmdSegName(4) + archive.ZstdSuffix)
	b, _ := os.ReadFile(key)
	b[len(b)-1] ^= 0xff
	os.WriteFile(key, b, 0o600)
	code, stdout, _ = runCmd(t, "wal-verify", "--archive", a.url, "--concurrency", "2")
	if code != 1 || !strings.Contains(stdout, "failed verification: 1") ||
		!strings.Contains(stdout, tTenant+"/"+tTimeline+"/wal/"+cmdSegName(4)+archive.ZstdSuffix+": corrupt: decompress") {
		t.Fatalf("corrupt: exit %d\n%s", code, stdout)
	}

	// A duplicate and an unrecognised key.
	store, _ := objstore.Open(context.Background(), a.url, objstore.Options{})
	if err := store.Create(context.Background(), archive.WALPrefix(tTenant, tTimeline)+cmdSegName(5), a.segments[5], nil); err != nil {
		t.Fatal(err)
	}
	if err := store.Create(context.Background(), archive.WALPrefix(tTenant, tTimeline)+"notes.txt", []byte("hi"), nil); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runCmd(t, "wal-verify", "--archive", a.url)
	if code != 1 || !strings.Contains(stdout, "duplicates (stored both plain and compressed): 1") || !strings.Contains(stdout, "notes.txt") {
		t.Fatalf("duplicate: exit %d\n%s", code, stdout)
	}

	// 2: usage; 3: unreadable; 1: an empty archive.
	for _, args := range [][]string{
		{"wal-verify"},
		{"wal-verify", "--archive", a.url, "extra"},
		{"wal-verify", "--archive", a.url, "--tenant-id", tTenant},
		{"wal-verify", "--archive", "ftp://x"},
	} {
		if code, _, stderr := runCmd(t, args...); code != 2 {
			t.Errorf("%q: exit %d: %s", args, code, stderr)
		}
	}
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	if code, _, stderr := runCmd(t, "wal-verify", "--archive", "file://"+notDir); code != 3 {
		t.Errorf("unreadable: exit %d: %s", code, stderr)
	}
	if code, stdout, _ := runCmd(t, "wal-verify", "--archive", "file://"+t.TempDir()); code != 1 {
		t.Errorf("empty: exit %d: %s", code, stdout)
	}
	unreachableS3(t)
	if code, _, stderr := runCmd(t, "wal-verify", "--archive", "s3://bucket/prefix", "--archive-s3-path-style"); code != 3 {
		t.Errorf("unreachable: exit %d: %s", code, stderr)
	}
}
