package timeline

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
)

// ID identifies a timeline as Neon does: a tenant id and a timeline id,
// each 32 lower-case hex characters.
type ID struct {
	TenantID   string
	TimelineID string
}

func (id ID) String() string { return id.TenantID + "/" + id.TimelineID }

// ParseHexID validates a 32-hex-character id and returns it lower-cased.
func ParseHexID(s string) (string, error) {
	if len(s) != 32 {
		return "", fmt.Errorf("invalid id %q: want 32 hex characters", s)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("invalid id %q: %w", s, err)
	}
	return hex.EncodeToString(b), nil
}

// NewHexID returns a random 32-hex-character id.
func NewHexID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IDFromSystemID derives the default ids of the timeline that holds the
// WAL of the PostgreSQL cluster with database system identifier sysid (as
// pg_controldata and IDENTIFY_SYSTEM print it), so that every safekeeper
// of one primary agrees on them without configuration:
//
//	tenant_id   = first 16 bytes of SHA-256("safekeeper tenant <sysid>"), hex
//	timeline_id = first 16 bytes of SHA-256("safekeeper timeline <sysid>"), hex
//
// with <sysid> in decimal. In a shell:
//
//	printf 'safekeeper tenant %s' 7312345678901234567 | sha256sum | cut -c1-32
func IDFromSystemID(sysid uint64) ID {
	derive := func(kind string) string {
		sum := sha256.Sum256([]byte("safekeeper " + kind + " " + strconv.FormatUint(sysid, 10)))
		return hex.EncodeToString(sum[:16])
	}
	return ID{TenantID: derive("tenant"), TimelineID: derive("timeline")}
}
