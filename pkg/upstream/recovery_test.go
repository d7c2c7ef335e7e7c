package upstream

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRecoveryReason(t *testing.T) {
	removed := &pgconn.PgError{Severity: "ERROR", Code: "58P01",
		Message: "requested WAL segment 000000010000000000000003 has already been removed"}
	translated := &pgconn.PgError{Severity: "ERROR", Code: "58P01",
		Message: "das angeforderte WAL-Segment 000000010000000000000003 wurde schon entfernt"}
	readErr := &pgconn.PgError{Severity: "ERROR", Code: "XX000",
		Message: "requested WAL segment 000000010000000000000003 has already been removed"}
	other := &pgconn.PgError{Severity: "ERROR", Code: "58P01", Message: "could not open file \"pg_wal/00000002.history\""}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"START_REPLICATION removed", &errStream{fmt.Errorf("START_REPLICATION: %w", removed)}, reasonRemoved},
		{"translated text", &errStream{fmt.Errorf("START_REPLICATION: %w", translated)}, reasonRemoved},
		{"removed while reading, other code", fmt.Errorf("session: %w", &errStream{readErr}), reasonRemoved},
		{"58P01 outside streaming (TIMELINE_HISTORY)", fmt.Errorf("TIMELINE_HISTORY 2: %w", other), ""},
		{"unreachable", &errConnect{errors.New("connect to upstream: dial tcp: connection refused")}, reasonUnreachable},
		{"other", errors.New("receive from upstream: EOF"), ""},
		{"nil", nil, ""},
	}
	for _, c := range cases {
		if got := recoveryReason(c.err); got != c.want {
			t.Errorf("%s: recoveryReason = %q, want %q", c.name, got, c.want)
		}
	}
}

func TestSlotName(t *testing.T) {
	cases := map[string]string{
		"sk1":          "sk1",
		"SK-1.eu-west": "sk_1_eu_west",
		"safekeeper":   "safekeeper",
		"ünïcode":      "__n__code",
		string(make([]byte, 70)): string(func() []byte {
			b := make([]byte, 63)
			for i := range b {
				b[i] = '_'
			}
			return b
		}()),
	}
	for in, want := range cases {
		if got := SlotName(in); got != want {
			t.Errorf("SlotName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOneLine(t *testing.T) {
	err := errors.New("failed to connect to `user=postgres database=replication`:\n\t127.0.0.1:1 (127.0.0.1): dial error: refused\n\t[::1]:1 (::1): dial error: refused\n")
	want := "failed to connect to `user=postgres database=replication`: 127.0.0.1:1 (127.0.0.1): dial error: refused; [::1]:1 (::1): dial error: refused"
	if got := OneLine(err); got != want {
		t.Fatalf("OneLine = %q, want %q", got, want)
	}
}
