//go:build !linux

package testenv

import "testing"

// SmallFS mounts a small file system; only Linux has the harness for it.
func SmallFS(t testing.TB, size int64, maxFiles int) string {
	t.Helper()
	Unavailable(t, "smallfs", "mounting a small file system needs Linux", "run the tests on Linux as root")
	return ""
}
