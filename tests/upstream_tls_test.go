package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/internal/testcert"
)

// The safekeeper ingests from a primary over TLS (sslmode=verify-full),
// its socket read and written with raw calls beneath the TLS layer
// (pkg/upstream's pollConn), and acknowledges synchronous commits over it.
func TestUpstreamTLS(t *testing.T) {
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	files, err := testcert.Must(t).WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	primary.EnableTLS(t, files.Cert, files.Key)
	sk := StartSK(t, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=verify-full sslrootcert=%s", primary.Port, files.CA))
	primary.WaitForQuery(t, "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = 'safekeeper'", "t", 60*time.Second)

	// Some megabytes of WAL, across segments, arrive whole.
	primary.Exec(t, "CREATE TABLE tls_t AS SELECT g, repeat('x', 400) AS pad FROM generate_series(1, 20000) g")
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)

	// Commits that wait for the safekeeper's flush complete.
	primary.SetConf(t, "synchronous_standby_names", "safekeeper")
	primary.WaitForQuery(t, "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'safekeeper'", "sync", 30*time.Second)
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := primary.TryQueryValue(ctx, fmt.Sprintf("INSERT INTO tls_t VALUES (%d, 'sync') RETURNING g", -i))
		cancel()
		if err != nil {
			t.Fatalf("synchronous commit %d over TLS: %v", i, err)
		}
	}
}
