package testenv

import (
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
)

// buildTimeout bounds building a tool from source (module download and
// compilation of a large program on a small machine).
const buildTimeout = 20 * time.Minute

// Tool is a test-only program pinned at a version: $Env if set, else
// <repo>/.tools/bin/<Name> (git-ignored), which `make tools` builds. Path
// builds it there when it is missing or not the pinned build. Declare a
// Tool as a package-level variable and share it: it finds or builds the
// binary once per test binary.
type Tool struct {
	Name    string // the file name in .tools/bin, and the program in messages
	Version string // the pinned version, for messages
	Harness string // the test harness, prefixing messages: "etcdtest"
	Env     string // the variable that overrides the binary's path

	// Pinned reports why the binary with build information bi is not the
	// pinned build, or nil when it is.
	Pinned func(bi *buildinfo.BuildInfo) error
	// Build says how the go command builds the binary at bin, in the
	// repository at root.
	Build func(root, bin string) GoCommand

	once     sync.Once
	path     string
	err      error
	explicit bool // Env was set
}

// GoCommand is a run of the go command that builds a Tool.
type GoCommand struct {
	Args []string // the go command's arguments: "build", "-o", bin, "."
	Dir  string   // the directory to run it in
	Env  []string // added to the environment, besides GOFLAGS= and GOWORK=off
	What string   // the step in messages: "`go build` in <repo>/tools/etcd"
}

// Path returns the absolute path of the tool's binary: $Env if set, else
// <repo>/.tools/bin/<Name>, built when it is missing or not the pinned
// build. When it cannot be had the test is skipped, or fails if $CI is
// true (see Unavailable); an $Env that does not name an executable always
// fails the test. The first caller's t logs the progress of a build.
func (tl *Tool) Path(t testing.TB) string {
	t.Helper()
	tl.once.Do(func() {
		if p := os.Getenv(tl.Env); p != "" {
			tl.explicit = true
			tl.path, tl.err = tl.explicitPath(p)
			return
		}
		tl.path, tl.err = tl.defaultPath(t)
	})
	if tl.err != nil {
		if tl.explicit {
			// A broken override is a configuration error, not a missing
			// optional component.
			t.Fatalf("%s: %v", tl.Harness, tl.err)
		}
		Unavailable(t, tl.Harness, tl.err.Error(), "run `make tools` or set "+tl.Env)
	}
	return tl.path
}

func (tl *Tool) explicitPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s=%q: %v", tl.Env, p, err)
	}
	if !isExecutable(abs) {
		return "", fmt.Errorf("%s=%q is not an executable file", tl.Env, p)
	}
	return abs, nil
}

// defaultPath finds or builds <repo>/.tools/bin/<Name>.
func (tl *Tool) defaultPath(t testing.TB) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("%v to locate .tools/bin/%s", err, tl.Name)
	}
	toolsDir := filepath.Join(root, ".tools")
	bin := filepath.Join(toolsDir, "bin", tl.Name)
	why := tl.check(bin)
	if why == nil {
		return bin, nil
	}
	if CI() {
		// CI runs `make tools` before the tests; a missing or stale
		// binary there is a broken pipeline, not something to paper over.
		return "", fmt.Errorf("%s %s not usable at %s: %v", tl.Name, tl.Version, bin, why)
	}
	if err := tl.build(t, root, toolsDir, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// check reports why bin is not usable: not an executable file, or not the
// pinned build.
func (tl *Tool) check(bin string) error {
	if !isExecutable(bin) {
		return errors.New("no executable file")
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("reading its build information: %v", err)
	}
	return tl.Pinned(bi)
}

// build runs the tool's GoCommand, holding an exclusive lock on
// <tools>/<Name>.lock so that test binaries of several packages running at
// once build it once.
func (tl *Tool) build(t testing.TB, root, toolsDir, bin string) error {
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return fmt.Errorf("building %s: %v", tl.Name, err)
	}
	lock, err := os.OpenFile(filepath.Join(toolsDir, tl.Name+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("building %s: %v", tl.Name, err)
	}
	defer lock.Close()
	if err := flock(lock); err != nil {
		return fmt.Errorf("building %s: lock %s: %v", tl.Name, lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if tl.check(bin) == nil {
		return nil // another test binary built it while we waited
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if gr := os.Getenv("GOROOT"); gr != "" && isExecutable(filepath.Join(gr, "bin", "go")) {
			goBin = filepath.Join(gr, "bin", "go")
		} else {
			return fmt.Errorf("%s missing at %s, and no go command to build it: %v", tl.Name, bin, err)
		}
	}
	gc := tl.Build(root, bin)
	t.Logf("%s: building %s %s into %s with %s (once; `make tools` does the same)", tl.Harness, tl.Name, tl.Version, filepath.Dir(bin), gc.What)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, gc.Args...)
	cmd.Dir = gc.Dir
	cmd.Env = append(append(os.Environ(), gc.Env...), "GOFLAGS=", "GOWORK=off")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s missing at %s and %s failed after %s: %v: %s",
			tl.Name, bin, gc.What, time.Since(start).Round(time.Second), err, lastLines(out, 20))
	}
	if why := tl.check(bin); why != nil {
		return fmt.Errorf("built %s, but %s is not usable: %v", tl.Name, bin, why)
	}
	t.Logf("%s: built %s in %s", tl.Harness, tl.Name, time.Since(start).Round(time.Second))
	return nil
}

// flock takes an exclusive lock on f, waiting for it.
func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
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
