package s3test

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"path/filepath"
	"testing"

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

// tool is <repo>/.tools/bin/versitygw, built by `go install` of the pinned
// version.
var tool = testenv.Tool{
	Name:    "versitygw",
	Version: VersityGWVersion,
	Harness: "s3test",
	Env:     EnvBinary,
	Pinned:  pinned,
	Build: func(_, bin string) testenv.GoCommand {
		pkg := versityGWPackage + "@" + VersityGWVersion
		return testenv.GoCommand{
			Args: []string{"install", pkg},
			Dir:  os.TempDir(), // outside any module or workspace
			Env:  []string{"GOBIN=" + filepath.Dir(bin)},
			What: "`go install " + pkg + "`",
		}
	},
}

// Binary returns the path of the versitygw binary: $SAFEKEEPER_VERSITYGW
// if set, else <repo>/.tools/bin/versitygw, built from source at
// VersityGWVersion when it is missing or another version. When it cannot be
// had the test is skipped, or fails if $CI is true; a $SAFEKEEPER_VERSITYGW
// that does not name an executable always fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	return tool.Path(t)
}

// pinned reports why a binary with build information bi is not built from
// VersityGWModule at VersityGWVersion, or nil if it is.
func pinned(bi *buildinfo.BuildInfo) error {
	if bi.Main.Path != VersityGWModule || bi.Main.Version != VersityGWVersion {
		return fmt.Errorf("it was built from %s %s", bi.Main.Path, bi.Main.Version)
	}
	return nil
}
