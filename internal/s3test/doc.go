// Package s3test runs a real S3-compatible server for tests: versitygw
// (Apache-2.0), pinned at VersityGWVersion, serving one bucket from a posix
// directory on a loopback port. No mocks: requests go over HTTP with SigV4,
// conditional writes, metadata and pagination as a real client sends them.
//
// The binary is $SAFEKEEPER_VERSITYGW, else <repo>/.tools/bin/versitygw
// (git-ignored), which `make tools` builds (`make test` depends on it).
// When it is missing or of another version, Binary builds it with
// `go install github.com/versity/versitygw/cmd/versitygw@<version>` under an
// exclusive lock on .tools/versitygw.lock, so concurrently running test
// packages build it once. If that fails the test is skipped; with CI=true a
// missing binary fails the test instead, as CI builds it beforehand.
//
// Start gives each test its own server and directory and stops it when the
// test ends; the server's output goes to a log file that is printed if the
// test failed. Stop and Restart (same port, same directory) simulate
// outages. Env and Setenv point the AWS SDK's default configuration (and so
// objstore.Open, or a child safekeeper process) at the server.
//
// From the repository it imports only internal/testenv, which finds or
// builds the binary and runs the process.
package s3test
