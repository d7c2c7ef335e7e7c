package etcdtest

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

// EnvBinary names the environment variable that overrides the etcd
// binary's path.
const EnvBinary = "SAFEKEEPER_ETCD"

// ToolModule is the module (tools/etcd in this repository) the binary is
// built from; ServerModule at EtcdVersion is the etcd server it wraps. Keep
// EtcdVersion equal to ETCD_VERSION in the Makefile and to the version
// tools/etcd/go.mod requires (a test checks both).
const (
	ToolModule   = "github.com/pgsafekeeper/safekeeper/tools/etcd"
	ServerModule = "go.etcd.io/etcd/server/v3"
	EtcdVersion  = "v3.7.3"
)

// buildTimeout bounds building etcd from source (module download and
// compilation on a small machine).
const buildTimeout = 20 * time.Minute

var (
	binOnce     sync.Once
	binPath     string
	binErr      error
	binExplicit bool // SAFEKEEPER_ETCD was set
)

// Binary returns the path of the etcd binary: $SAFEKEEPER_ETCD if set, else
// <repo>/.tools/bin/etcd, built from tools/etcd when it is missing or wraps
// another etcd version. When it cannot be had the test is skipped, or fails
// if $CI is true; a $SAFEKEEPER_ETCD that does not name an executable always
// fails the test.
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
			// A broken override is a configuration error, not a missing
			// optional component.
			t.Fatalf("etcdtest: %v", binErr)
		}
		testenv.Unavailable(t, "etcdtest", binErr.Error(), "run `make tools` or set "+EnvBinary)
	}
	return binPath
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

// defaultBinary finds or builds <repo>/.tools/bin/etcd.
func defaultBinary(t testing.TB) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	toolsDir := filepath.Join(root, ".tools")
	bin := filepath.Join(toolsDir, "bin", "etcd")
	ok, why := hasPinnedVersion(bin)
	if ok {
		return bin, nil
	}
	if testenv.CI() {
		// CI runs `make tools` before the tests; a missing or stale
		// binary there is a broken pipeline, not something to paper over.
		return "", fmt.Errorf("etcd %s not usable at %s: %v", EtcdVersion, bin, why)
	}
	if err := build(t, root, toolsDir, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// hasPinnedVersion reports whether bin is an executable built from
// ToolModule with ServerModule at EtcdVersion, and if not, why.
func hasPinnedVersion(bin string) (bool, error) {
	if !isExecutable(bin) {
		return false, errors.New("no executable file")
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return false, fmt.Errorf("reading its build information: %v", err)
	}
	if bi.Main.Path != ToolModule {
		return false, fmt.Errorf("it was built from %s, not %s", bi.Main.Path, ToolModule)
	}
	for _, dep := range bi.Deps {
		if dep.Path != ServerModule {
			continue
		}
		if dep.Replace != nil {
			return false, fmt.Errorf("its %s is replaced by %s %s", ServerModule, dep.Replace.Path, dep.Replace.Version)
		}
		if dep.Version != EtcdVersion {
			return false, fmt.Errorf("it wraps %s %s, want %s", ServerModule, dep.Version, EtcdVersion)
		}
		return true, nil
	}
	return false, fmt.Errorf("it does not depend on %s", ServerModule)
}

// build runs `go build` in <repo>/tools/etcd, holding an exclusive lock on
// <tools>/etcd.lock so that test binaries of several packages running at
// once build it once.
func build(t testing.TB, root, toolsDir, bin string) error {
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return fmt.Errorf("building etcd: %v", err)
	}
	lock, err := os.OpenFile(filepath.Join(toolsDir, "etcd.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("building etcd: %v", err)
	}
	defer lock.Close()
	if err := flock(lock); err != nil {
		return fmt.Errorf("building etcd: lock %s: %v", lock.Name(), err)
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
			return fmt.Errorf("etcd missing at %s, and no go command to build it: %v", bin, err)
		}
	}
	srcDir := filepath.Join(root, "tools", "etcd")
	t.Logf("etcdtest: building etcd %s from %s into %s (once; `make tools` does the same)", EtcdVersion, srcDir, filepath.Dir(bin))
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	// -buildvcs=false: the tool needs no VCS stamp, and stamping would
	// need a working git in the repository.
	cmd := exec.CommandContext(ctx, goBin, "build", "-buildvcs=false", "-o", bin, ".")
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("etcd missing at %s and `go build` in %s failed after %s: %v: %s",
			bin, srcDir, time.Since(start).Round(time.Second), err, lastLines(out, 20))
	}
	if ok, why := hasPinnedVersion(bin); !ok {
		return fmt.Errorf("built etcd, but %s is not usable: %v", bin, why)
	}
	t.Logf("etcdtest: built etcd in %s", time.Since(start).Round(time.Second))
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
			return "", fmt.Errorf("cannot find the repository root (go.mod of %s) above %s to locate .tools/bin/etcd", module, wd)
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
