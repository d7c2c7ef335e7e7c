package timeline

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
