package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
