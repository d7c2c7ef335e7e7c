package s3test

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
)

// EnvBinary names the environment variable that overrides the versitygw
// binary's path.
const EnvBinary = "SAFEKEEPER_VERSITYGW"

// VersityGWModule and VersityGWVersion pin the server the tests run. Keep
// VersityGWVersion equal to VERSITYGW_VERSION in the Makefile (a test checks).
const (
	VersityGWModule  = "github.com/versity/versitygw"
	VersityGWVersion = "v1.8.0"
	versityGWPackage = VersityGWModule + "/cmd/versitygw"
)

// buildTimeout bounds building versitygw from source (module download and
// compilation of a large program on a small machine).
const buildTimeout = 20 * time.Minute

var (
	binOnce     sync.Once
	binPath     string
	binErr      error
	binExplicit bool // SAFEKEEPER_VERSITYGW was set
)

// Binary returns the path of the versitygw binary: $SAFEKEEPER_VERSITYGW
// if set, else <repo>/.tools/bin/versitygw, built from source at
// VersityGWVersion when it is missing or another version. When it cannot be
// had the test is skipped, or fails if $CI is true; a $SAFEKEEPER_VERSITYGW
// that does not name an executable always fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv(EnvBinary); p != "" {
			binExplicit = true
			binPath, binErr = explicitBinary(p)
			return
		}
		binPath, binErr = defaultBinary(t)
	})
	if binErr != nil {
		if binExplicit {
			// An override that does not work is a configuration error, not
			// a missing optional dependency.
			t.Fatalf("s3test: %v", binErr)
		}
		unavailable(t, binErr.Error())
	}
	return binPath
}

// unavailable skips the test, or fails it when running in CI.
func unavailable(t testing.TB, msg string) {
	t.Helper()
	testenv.Unavailable(t, "s3test", msg, "run `make tools` or set "+EnvBinary)
}

func explicitBinary(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s=%q: %v", EnvBinary, p, err)
	}
	if !isExecutable(abs) {
		return "", fmt.Errorf("%s=%q is not an executable file", EnvBinary, p)
	}
	return abs, nil
}

// defaultBinary finds or builds <repo>/.tools/bin/versitygw.
func defaultBinary(t testing.TB) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	toolsDir := filepath.Join(root, ".tools")
	bin := filepath.Join(toolsDir, "bin", "versitygw")
	if ok, _ := hasPinnedVersion(bin); ok {
		return bin, nil
	}
	if testenv.CI() {
		// CI builds the tools before the tests (make test -> unit ->
		// tools); a missing binary there is a broken pipeline.
		if _, why := hasPinnedVersion(bin); why != nil {
			return "", fmt.Errorf("versitygw %s not usable at %s: %v", VersityGWVersion, bin, why)
		}
	}
	if err := build(t, toolsDir, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// hasPinnedVersion reports whether bin is an executable built from
// VersityGWModule at VersityGWVersion, and if not, why.
func hasPinnedVersion(bin string) (bool, error) {
	if !isExecutable(bin) {
		return false, errors.New("no executable file")
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return false, fmt.Errorf("reading its build information: %v", err)
	}
	if bi.Main.Path != VersityGWModule || bi.Main.Version != VersityGWVersion {
		return false, fmt.Errorf("it was built from %s %s", bi.Main.Path, bi.Main.Version)
	}
	return true, nil
}

// build runs `go install versitygw@VersityGWVersion` with GOBIN set to the
// binary's directory, holding an exclusive lock on <tools>/versitygw.lock so
// that test binaries of several packages running at once build it once.
func build(t testing.TB, toolsDir, bin string) error {
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return fmt.Errorf("building versitygw: %v", err)
	}
	lock, err := os.OpenFile(filepath.Join(toolsDir, "versitygw.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("building versitygw: %v", err)
	}
	defer lock.Close()
	if err := flock(lock); err != nil {
		return fmt.Errorf("building versitygw: lock %s: %v", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if ok, _ := hasPinnedVersion(bin); ok {
		return nil // another test binary built it while we waited
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if gr := os.Getenv("GOROOT"); gr != "" && isExecutable(filepath.Join(gr, "bin", "go")) {
			goBin = filepath.Join(gr, "bin", "go")
		} else {
			return fmt.Errorf("versitygw missing at %s, and no go command to build it: %v", bin, err)
		}
	}
	t.Logf("s3test: building %s@%s into %s (once; `make tools` does the same)", versityGWPackage, VersityGWVersion, filepath.Dir(bin))
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", versityGWPackage+"@"+VersityGWVersion)
	cmd.Dir = os.TempDir() // outside any module or workspace
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin), "GOFLAGS=", "GOWORK=off")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("versitygw missing at %s and `go install %s@%s` failed after %s: %v: %s",
			bin, versityGWPackage, VersityGWVersion, time.Since(start).Round(time.Second), err, lastLines(out, 20))
	}
	if ok, why := hasPinnedVersion(bin); !ok {
		return fmt.Errorf("built versitygw, but %s is not usable: %v", bin, why)
	}
	t.Logf("s3test: built versitygw in %s", time.Since(start).Round(time.Second))
	return nil
}

func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// repoRoot returns the directory holding this module's go.mod, searching
// upwards from the working directory (a test runs in its package's
// directory).
func repoRoot() (string, error) {
	const module = "github.com/pgsafekeeper/safekeeper"
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(data) == module {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("cannot find the repository root (go.mod of %s) above %s to locate .tools/bin/versitygw", module, wd)
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// lastLines returns at most n trailing lines of b.
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
