// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3/etcdmain) at
// the version pinned in this module's go.mod. It is built only for the test
// harness (make tools) and kept in a module of its own so that the server's
// dependency graph never enters safekeeper's.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
