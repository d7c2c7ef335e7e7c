package etcdtest

import (
	"debug/buildinfo"
	"fmt"
	"path/filepath"
	"testing"

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

// tool is <repo>/.tools/bin/etcd, built by `go build` in tools/etcd.
var tool = testenv.Tool{
	Name:    "etcd",
	Version: EtcdVersion,
	Harness: "etcdtest",
	Env:     EnvBinary,
	Pinned:  pinned,
	Build: func(root, bin string) testenv.GoCommand {
		src := filepath.Join(root, "tools", "etcd")
		return testenv.GoCommand{
			// -buildvcs=false: the tool needs no VCS stamp, and stamping
			// would need a working git in the repository.
			Args: []string{"build", "-buildvcs=false", "-o", bin, "."},
			Dir:  src,
			What: "`go build` in " + src,
		}
	},
}

// Binary returns the path of the etcd binary: $SAFEKEEPER_ETCD if set, else
// <repo>/.tools/bin/etcd, built from tools/etcd when it is missing or wraps
// another etcd version. When it cannot be had the test is skipped, or fails
// if $CI is true; a $SAFEKEEPER_ETCD that does not name an executable always
// fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	return tool.Path(t)
}

// pinned reports why a binary with build information bi is not built from
// ToolModule with ServerModule at EtcdVersion, or nil if it is.
func pinned(bi *buildinfo.BuildInfo) error {
	if bi.Main.Path != ToolModule {
		return fmt.Errorf("it was built from %s, not %s", bi.Main.Path, ToolModule)
	}
	for _, dep := range bi.Deps {
		if dep.Path != ServerModule {
			continue
		}
		if dep.Replace != nil {
			return fmt.Errorf("its %s is replaced by %s %s", ServerModule, dep.Replace.Path, dep.Replace.Version)
		}
		if dep.Version != EtcdVersion {
			return fmt.Errorf("it wraps %s %s, want %s", ServerModule, dep.Version, EtcdVersion)
		}
		return nil
	}
	return fmt.Errorf("it does not depend on %s", ServerModule)
}
