package upstream

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestWithReplicationDB(t *testing.T) {
	for in, want := range map[string]string{
		"host=a user=b":                     "replication",
		"host=a user=b dbname=x":            "x",
		"postgres://u@h:5432":               "replication",
		"postgres://u@h:5432/other":         "other",
		"postgresql://u@h/?sslmode=disable": "replication",
	} {
		cfg, err := pgconn.ParseConfig(withReplicationDB(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if cfg.Database != want {
			t.Errorf("%s: database %q, want %q", in, cfg.Database, want)
		}
	}
}
