// Package etcdtest runs a real etcd server for tests: etcd's own server
// (go.etcd.io/etcd/server/v3 at EtcdVersion), one member on loopback ports
// with its data in the test's temporary directory. No mocks: clients talk
// gRPC to it, leases expire in real time, and the process can be stopped,
// restarted on the same ports with the same data, or suspended.
//
// The binary is $SAFEKEEPER_ETCD, else <repo>/.tools/bin/etcd (git-ignored),
// built from the separate module tools/etcd so that the server's dependency
// graph stays out of safekeeper's go.mod. `make tools` builds it (`make
// test` depends on it). When it is missing or of another version, Binary
// builds it with `go build` in tools/etcd under an exclusive lock on
// .tools/etcd.lock, so concurrently running test packages build it once. If
// that fails the test is skipped; with CI=true a missing binary fails the
// test instead, as CI builds it beforehand.
//
// Start gives each test its own server and stops it when the test ends; the
// server's output goes to a log file whose tail is printed if the test
// failed. Stop and Restart simulate an outage or a crash of etcd, Pause and
// Resume (SIGSTOP/SIGCONT) a server that accepts connections but answers
// nothing, which is how leases expire under a client that still believes
// it is connected.
package etcdtest
