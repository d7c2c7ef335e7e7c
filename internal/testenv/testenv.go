package testenv

import (
	"os"
	"strconv"
	"testing"
)

// CI reports whether the tests run in CI (CI=true).
func CI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// Unavailable skips t, or fails it in CI. prefix names the harness, what
// says what is missing and remedy how to get it.
func Unavailable(t testing.TB, prefix, what, remedy string) {
	t.Helper()
	if CI() {
		t.Fatalf("%s: %s (CI=true, so this is a failure; %s)", prefix, what, remedy)
		return
	}
	t.Skipf("%s: %s; skipping (%s)", prefix, what, remedy)
}
