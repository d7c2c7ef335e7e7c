// Package pgtest owns starting throwaway PostgreSQL clusters for tests.
//
// It locates real PostgreSQL server binaries (initdb, pg_ctl, postgres,
// pg_basebackup, ...), creates clusters in private temporary directories,
// starts them on free loopback ports and tears them down again when the test
// finishes. It is meant for integration tests that need a genuine primary
// streaming physical WAL, and standbys that replay it.
//
// Binary discovery (see Require):
//
//   - $PG_BINDIR, if set, must name a directory containing the binaries;
//   - otherwise the highest /usr/lib/postgresql/<N>/bin (Debian/Ubuntu) or
//     /usr/pgsql-<N>/bin (RHEL) that holds initdb, pg_ctl and postgres;
//   - otherwise the directory pg_ctl resolves to on $PATH (symlinks followed).
//
// When no binaries are found the test is skipped, unless $CI is "true" (or any
// other true value accepted by strconv.ParseBool), in which case it fails.
//
// PostgreSQL refuses to run as root. When the test process runs as root, every
// server-side command (initdb, postgres via pg_ctl, pg_basebackup) is run as the
// unprivileged OS user "postgres" (see RunAsPostgres), and the cluster
// directories are chowned to it. Client tools may be run as root. If the
// process is root and the user "postgres" does not exist, tests fail.
//
// Each cluster lives in its own directory created with os.MkdirTemp under
// os.TempDir() (short path, because Unix socket paths are limited to ~107
// bytes), holding:
//
//	<base>/data          the data directory (Cluster.DataDir)
//	<base>/sock          unix_socket_directories (Cluster.SocketDir)
//	<base>/postgres.log  the server log (Cluster.LogFile)
//
// The directory is removed when the test ends, unless $PGTEST_KEEP is set to a
// true value, in which case its path is logged. If the test failed, the last
// lines of every cluster's server log are written to the test log.
//
// All helpers that take a testing.TB report failures with t.Fatal and must
// therefore be called from the test goroutine. Functions are safe to use from
// parallel tests: ports come from FreePort, which never hands out the same port
// twice within a process, and starting a new cluster is retried on another port
// if the chosen one was taken in the meantime (e.g. by another test binary).
package pgtest
