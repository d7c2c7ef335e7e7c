package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Module is the path of this repository's main module; RepoRoot looks for
// its go.mod.
const Module = "github.com/pgsafekeeper/safekeeper"

// RepoRoot returns the directory holding this module's go.mod, searching
// upwards from the working directory (a test runs in its package's
// directory).
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && ModulePath(data) == Module {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("cannot find the repository root (go.mod of %s) above %s", Module, wd)
		}
		dir = parent
	}
}

// ModulePath returns the module path the go.mod file gomod declares, or ""
// if it declares none.
func ModulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// RepoFile returns the contents of the file at the slash-separated path
// rel below the repository root, failing t if it cannot be read.
func RepoFile(t testing.TB, rel string) []byte {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// MakefileVar returns the value the repository's Makefile gives the
// variable name on a line of its own ("NAME = value" or "NAME ?= value"),
// failing t if there is none.
func MakefileVar(t testing.TB, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s*\??=\s*(\S+)`).FindSubmatch(RepoFile(t, "Makefile"))
	if m == nil {
		t.Fatalf("Makefile has no %s", name)
	}
	return string(m[1])
}

// metricName is how the code names a metric: a quoted "safekeeper_..."
// string.
var metricName = regexp.MustCompile(`"(safekeeper_[a-z_]+)"`)

// MetricNames returns the metric names the non-test Go files under the
// repository's pkg/ and cmd/ define, each with a file that defines it. It
// fails the test when it finds suspiciously few (the pattern no longer
// matches how metrics are defined).
func MetricNames(t testing.TB) map[string]string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, dir := range []string{"pkg", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range metricName.FindAllSubmatch(src, -1) {
				out[string(m[1])] = path
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d metric names in the code; the pattern no longer matches how they are defined", len(out))
	}
	return out
}
