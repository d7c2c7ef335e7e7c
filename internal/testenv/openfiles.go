package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// OpenFilesIn lists the base names of the files under dir that this
// process holds open (from /proc/self/fd).
func OpenFilesIn(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		Unavailable(t, "openfiles", "cannot list /proc/self/fd: "+err.Error(), "run the tests on Linux")
		return nil
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, real+string(filepath.Separator)) {
			out = append(out, filepath.Base(target))
		}
	}
	return out
}

// WaitOpenFilesIn waits up to timeout for OpenFilesIn(dir) to list want
// files and returns the last list: a descriptor held by a background task
// that is about to finish (a segment's preallocation) is waited out.
func WaitOpenFilesIn(t testing.TB, dir string, want int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := OpenFilesIn(t, dir)
		if len(got) == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}
