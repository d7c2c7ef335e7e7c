package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
)

// EnvBinDir names the environment variable that overrides binary discovery.
const EnvBinDir = "PG_BINDIR"

// ServerUser is the OS user that server-side commands run as when the test
// process is root.
const ServerUser = "postgres"

// coreBinaries must all be present for a directory to be accepted.
var coreBinaries = []string{"initdb", "pg_ctl", "postgres", "pg_basebackup"}

// Bins describes an installation of PostgreSQL binaries.
type Bins struct {
	// Dir is the absolute directory holding the binaries.
	Dir string

	major   int
	version string
}

// Path returns the absolute path of the named binary (e.g. "pg_receivewal")
// inside Dir. It does not check that the file exists; use Need for that.
func (b *Bins) Path(name string) string { return filepath.Join(b.Dir, name) }

// Major returns the PostgreSQL major version (e.g. 15).
func (b *Bins) Major() int { return b.major }

// Version returns the full version string reported by pg_ctl --version,
// e.g. "15.14 (Debian 15.14-1.pgdg12+1)".
func (b *Bins) Version() string { return b.version }

// Need checks that all named binaries exist in Dir, with the same
// skip-or-fail policy as Require.
func (b *Bins) Need(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if !isExecutable(b.Path(n)) {
			unavailable(t, fmt.Sprintf("PostgreSQL binary %q not found in %s", n, b.Dir))
		}
	}
}

var (
	discoverOnce     sync.Once
	discovered       *Bins
	discoverErr      error
	discoverExplicit bool // PG_BINDIR was set
)

// Require locates the PostgreSQL binaries. When they are missing it skips the
// test, or fails it if $CI is true; a $PG_BINDIR that does not hold them
// always fails the test. When running as root it also verifies that
// the OS user "postgres" exists and fails the test otherwise.
func Require(t testing.TB) *Bins {
	t.Helper()
	discoverOnce.Do(func() {
		discoverExplicit = os.Getenv(EnvBinDir) != ""
		discovered, discoverErr = discover()
	})
	if discoverErr != nil {
		if discoverExplicit {
			// An explicit override that does not work is a configuration
			// error, not a missing optional dependency.
			t.Fatalf("pgtest: %v", discoverErr)
		}
		unavailable(t, discoverErr.Error())
	}
	if os.Geteuid() == 0 {
		if _, err := serverCredential(); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	return discovered
}

// unavailable skips the test, or fails it when running in CI.
func unavailable(t testing.TB, msg string) {
	t.Helper()
	testenv.Unavailable(t, "pgtest", msg, "install PostgreSQL server binaries or set "+EnvBinDir)
}

func discover() (*Bins, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: %v", EnvBinDir, dir, err)
		}
		if missing := missingCore(abs); len(missing) > 0 {
			return nil, fmt.Errorf("%s=%q lacks %s", EnvBinDir, dir, strings.Join(missing, ", "))
		}
		return newBins(abs)
	}

	var candidates []string
	for _, pattern := range []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"} {
		m, _ := filepath.Glob(pattern)
		candidates = append(candidates, m...)
	}
	// Highest major first.
	sort.SliceStable(candidates, func(i, j int) bool {
		return dirMajor(candidates[i]) > dirMajor(candidates[j])
	})
	for _, dir := range candidates {
		if len(missingCore(dir)) == 0 {
			return newBins(dir)
		}
	}

	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dir := filepath.Dir(real)
			if len(missingCore(dir)) == 0 {
				return newBins(dir)
			}
		}
	}
	return nil, errors.New("no PostgreSQL server binaries (" + strings.Join(coreBinaries, ", ") +
		") found in $" + EnvBinDir + ", /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin or via pg_ctl on $PATH")
}

var digitsRE = regexp.MustCompile(`\d+`)

// dirMajor extracts N from .../postgresql/N/bin or .../pgsql-N/bin.
func dirMajor(dir string) int {
	base := filepath.Base(filepath.Dir(dir))
	n, err := strconv.Atoi(digitsRE.FindString(base))
	if err != nil {
		return -1
	}
	return n
}

func missingCore(dir string) []string {
	var missing []string
	for _, n := range coreBinaries {
		if !isExecutable(filepath.Join(dir, n)) {
			missing = append(missing, n)
		}
	}
	return missing
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\)\s+((\d+)\S*.*)$`)

func newBins(dir string) (*Bins, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "pg_ctl"), "--version").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s/pg_ctl --version: %v: %s", dir, err, out)
	}
	m := versionRE.FindStringSubmatch(strings.TrimSpace(string(out)))
	if m == nil {
		return nil, fmt.Errorf("%s/pg_ctl --version: cannot parse %q", dir, out)
	}
	major, _ := strconv.Atoi(m[2])
	return &Bins{Dir: dir, major: major, version: m[1]}, nil
}

var (
	credOnce sync.Once
	cred     *syscall.Credential
	credErr  error
)

// serverCredential returns the credential of the OS user "postgres".
func serverCredential() (*syscall.Credential, error) {
	credOnce.Do(func() {
		u, err := user.Lookup(ServerUser)
		if err != nil {
			credErr = fmt.Errorf("running as root, but OS user %q does not exist (%v); "+
				"PostgreSQL refuses to run as root, so tests run the server as %q: create it, e.g. "+
				"`useradd --system --home-dir /var/lib/postgresql %s`", ServerUser, err, ServerUser, ServerUser)
			return
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			credErr = fmt.Errorf("OS user %q has non-numeric uid/gid %q/%q", ServerUser, u.Uid, u.Gid)
			return
		}
		if uid == 0 {
			credErr = fmt.Errorf("OS user %q has uid 0; PostgreSQL will refuse to run", ServerUser)
			return
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	})
	return cred, credErr
}

// RunAsPostgres makes cmd run as the OS user "postgres" when the current
// process is root (PostgreSQL server programs refuse to run as root). When not
// root it does nothing: the command runs as the current user.
//
// The child's working directory (cmd.Dir, or the test's current directory when
// empty) and every path the command uses must be accessible to that user.
// Call Require first: RunAsPostgres panics if it is root and the user does not
// exist.
func RunAsPostgres(cmd *exec.Cmd) {
	if os.Geteuid() != 0 {
		return
	}
	c, err := serverCredential()
	if err != nil {
		panic("pgtest: " + err.Error())
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cc := *c
	cc.Groups = []uint32{}
	cmd.SysProcAttr.Credential = &cc
}

// chownServer hands path over to the server user when running as root.
func chownServer(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	c, err := serverCredential()
	if err != nil {
		return err
	}
	return os.Lchown(path, int(c.Uid), int(c.Gid))
}
