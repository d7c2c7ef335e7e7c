package manager

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// DefinitionFile is the name of a timeline's definition in its directory.
const DefinitionFile = "timeline.json"

// Definition says how a timeline is hosted.
type Definition struct {
	TenantID   string `json:"tenant_id"`
	TimelineID string `json:"timeline_id"`
	// Upstream feeds the timeline; nil: none (the timeline serves the
	// WAL it holds).
	Upstream *Upstream `json:"upstream,omitempty"`
	// Detached timelines keep their data but are not hosted.
	Detached bool `json:"detached,omitempty"`
	// FromFlags marks the timeline the command line defines (--upstream):
	// it is not written to disk, the flags define it at every start.
	FromFlags bool `json:"-"`
}

// Upstream is a timeline's upstream PostgreSQL server.
type Upstream struct {
	// ConnInfo is a libpq connection string or URL. A password in it is
	// stored in the definition file (mode 0600); PasswordFile keeps it
	// out of the data directory.
	ConnInfo     string `json:"conninfo"`
	Slot         string `json:"slot,omitempty"` // "" = the node's default, "none" = no slot
	PasswordFile string `json:"password_file,omitempty"`
	StartLSN     string `json:"start_lsn,omitempty"` // where a new timeline starts ("" = the primary's position)
}

// ID returns the definition's timeline id.
func (d Definition) ID() timeline.ID {
	return timeline.ID{TenantID: d.TenantID, TimelineID: d.TimelineID}
}

// Validate checks the ids, the connection string and the start LSN.
func (d Definition) Validate() error {
	if _, err := timeline.ParseHexID(d.TenantID); err != nil || d.TenantID != strings.ToLower(d.TenantID) {
		return fmt.Errorf("invalid tenant_id %q: want 32 lower-case hexadecimal characters", d.TenantID)
	}
	if _, err := timeline.ParseHexID(d.TimelineID); err != nil || d.TimelineID != strings.ToLower(d.TimelineID) {
		return fmt.Errorf("invalid timeline_id %q: want 32 lower-case hexadecimal characters", d.TimelineID)
	}
	if u := d.Upstream; u != nil {
		if u.ConnInfo == "" {
			return errors.New("upstream.conninfo is empty")
		}
		if _, err := pgconn.ParseConfig(u.ConnInfo); err != nil {
			return fmt.Errorf("upstream.conninfo: %w", err) // pgconn hides the password
		}
		if u.StartLSN != "" {
			if _, err := wal.ParseLSN(u.StartLSN); err != nil {
				return fmt.Errorf("upstream.start_lsn: %w", err)
			}
		}
	}
	return nil
}

// Redacted returns d with any password in the connection string replaced,
// for answers and logs.
func (d Definition) Redacted() Definition {
	if d.Upstream == nil {
		return d
	}
	u := *d.Upstream
	u.ConnInfo = RedactConnInfo(u.ConnInfo)
	d.Upstream = &u
	return d
}

// RedactConnInfo hides the password of a libpq connection string or URL.
func RedactConnInfo(s string) string {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return "(unparsable URL)"
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	var out []string
	for _, f := range splitConnInfo(s) {
		if k, _, ok := strings.Cut(f, "="); ok && strings.TrimSpace(k) == "password" {
			f = "password=xxxxx"
		}
		out = append(out, f)
	}
	return strings.Join(out, " ")
}

// splitConnInfo splits a key=value connection string into its fields,
// keeping quoted values (with their quotes) whole.
func splitConnInfo(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, esc := false, false
	for _, r := range s {
		switch {
		case esc:
			esc = false
		case r == '\\':
			esc = true
		case r == '\'':
			quoted = !quoted
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
			continue
		}
		cur.WriteRune(r)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// readDefinition reads dir's definition; ok=false when there is none.
func readDefinition(dir string) (Definition, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, DefinitionFile))
	if errors.Is(err, os.ErrNotExist) {
		return Definition{}, false, nil
	}
	if err != nil {
		return Definition{}, false, err
	}
	var d Definition
	if err := json.Unmarshal(b, &d); err != nil {
		return Definition{}, false, fmt.Errorf("%s: %w", filepath.Join(dir, DefinitionFile), err)
	}
	return d, true, nil
}

// writeDefinition replaces dir's definition atomically, creating dir (and
// making its creation durable) when needed.
func writeDefinition(dir string, d Definition) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	if err := walstore.WriteFileAtomic(filepath.Join(dir, DefinitionFile), append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := walstore.SyncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	return walstore.SyncDir(filepath.Dir(filepath.Dir(dir)))
}
