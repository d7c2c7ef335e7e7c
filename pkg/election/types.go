package election

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// NodeInfo is what a node publishes for a timeline: JSON under
// <prefix>/timelines/<tenant>/<timeline>/nodes/<name>, bound to the node's
// session lease, so it disappears when the node stops or loses etcd. LSNs
// are PostgreSQL's "X/X" text in JSON.
type NodeInfo struct {
	Name          string    `json:"name"`
	Addr          string    `json:"addr"`                // --advertise-pg host:port, how peers reach it
	HTTPAddr      string    `json:"http_addr,omitempty"` // its status/metrics endpoint, if any
	TLI           uint32    `json:"tli"`
	FlushLSN      wal.LSN   `json:"flush_lsn"`
	LocalStartLSN wal.LSN   `json:"local_start_lsn"`
	BackupLSN     wal.LSN   `json:"backup_lsn"`
	WalSegSize    uint64    `json:"wal_seg_size"`
	State         string    `json:"state"`    // free text from the node, e.g. "streaming", "recovering"
	Eligible      bool      `json:"eligible"` // holds the next segment to archive
	UpdatedAt     time.Time `json:"updated_at"`
}

// nodeInfoJSON is NodeInfo's wire form.
type nodeInfoJSON struct {
	Name          string    `json:"name"`
	Addr          string    `json:"addr"`
	HTTPAddr      string    `json:"http_addr,omitempty"`
	TLI           uint32    `json:"tli"`
	FlushLSN      string    `json:"flush_lsn"`
	LocalStartLSN string    `json:"local_start_lsn"`
	BackupLSN     string    `json:"backup_lsn"`
	WalSegSize    uint64    `json:"wal_seg_size"`
	State         string    `json:"state"`
	Eligible      bool      `json:"eligible"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// MarshalJSON writes the LSNs in PostgreSQL's "X/X" form.
func (n NodeInfo) MarshalJSON() ([]byte, error) {
	return json.Marshal(nodeInfoJSON{
		Name: n.Name, Addr: n.Addr, HTTPAddr: n.HTTPAddr, TLI: n.TLI,
		FlushLSN: n.FlushLSN.String(), LocalStartLSN: n.LocalStartLSN.String(), BackupLSN: n.BackupLSN.String(),
		WalSegSize: n.WalSegSize, State: n.State, Eligible: n.Eligible, UpdatedAt: n.UpdatedAt,
	})
}

// UnmarshalJSON reads what MarshalJSON writes. An absent LSN is 0/0.
func (n *NodeInfo) UnmarshalJSON(data []byte) error {
	var j nodeInfoJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	out := NodeInfo{
		Name: j.Name, Addr: j.Addr, HTTPAddr: j.HTTPAddr, TLI: j.TLI,
		WalSegSize: j.WalSegSize, State: j.State, Eligible: j.Eligible, UpdatedAt: j.UpdatedAt,
	}
	for _, f := range []struct {
		name string
		text string
		dst  *wal.LSN
	}{
		{"flush_lsn", j.FlushLSN, &out.FlushLSN},
		{"local_start_lsn", j.LocalStartLSN, &out.LocalStartLSN},
		{"backup_lsn", j.BackupLSN, &out.BackupLSN},
	} {
		if f.text == "" {
			continue
		}
		lsn, err := wal.ParseLSN(f.text)
		if err != nil {
			return fmt.Errorf("election: node info %s: %v", f.name, err)
		}
		*f.dst = lsn
	}
	*n = out
	return nil
}

// BackupPos is the shared archived position: every segment of PostgreSQL
// timeline TLI's history below LSN is archived. Positions are ordered by
// (TLI, LSN).
type BackupPos struct {
	TLI uint32
	LSN wal.LSN
}

// Less reports whether p is before q in (TLI, LSN) order.
func (p BackupPos) Less(q BackupPos) bool {
	if p.TLI != q.TLI {
		return p.TLI < q.TLI
	}
	return p.LSN < q.LSN
}

// String returns the form stored in etcd: "%08X/%016X" (TLI, LSN),
// fixed-width upper-case hex, so that etcd's byte-wise order of values is
// the (TLI, LSN) order.
func (p BackupPos) String() string {
	return fmt.Sprintf("%08X/%016X", p.TLI, uint64(p.LSN))
}

// parseBackupPos parses String's form, strictly.
func parseBackupPos(s string) (BackupPos, error) {
	if len(s) != 8+1+16 || s[8] != '/' || !isUpperHex(s[:8]) || !isUpperHex(s[9:]) {
		return BackupPos{}, fmt.Errorf("election: invalid backup position %q: want %%08X/%%016X", s)
	}
	tli, err := strconv.ParseUint(s[:8], 16, 32)
	if err != nil {
		return BackupPos{}, fmt.Errorf("election: invalid backup position %q: %v", s, err)
	}
	lsn, err := strconv.ParseUint(s[9:], 16, 64)
	if err != nil {
		return BackupPos{}, fmt.Errorf("election: invalid backup position %q: %v", s, err)
	}
	return BackupPos{TLI: uint32(tli), LSN: wal.LSN(lsn)}, nil
}

func isUpperHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Local is this node's view of the timeline, implemented by the caller.
// Its methods are called from the Member's goroutines, concurrently.
type Local interface {
	// Info returns the node's current state. Name may be left empty and
	// Addr too; the Member fills them in (Name is always the configured
	// one).
	Info() NodeInfo
	// Changed returns a channel that is closed (or receives) when Info may
	// have changed. It is called again after every wake-up, like a
	// broadcast channel that is replaced on each change, and before Info
	// is read. Info is not polled: every change of it must be signalled,
	// except one that follows from a new shared backup position
	// (Member.Shared), on which the member wakes by itself.
	Changed() <-chan struct{}
	// AdoptBackup applies the shared position locally (persist it, remove
	// WAL it releases). It is called, from one goroutine at a time, with
	// every value of backup_lsn the member reads from etcd, including
	// repeats after a reconnection; a position below one already adopted
	// should be ignored (etcd only moves forward, unless it lost its data
	// or someone wrote the key by hand).
	AdoptBackup(pos BackupPos)
}

// LeadFunc is the leader's work. It runs until ctx ends (session lost,
// hand-over, shutdown) or it returns. It must stop every side effect when
// ctx ends, and return soon after: the term is resigned only then.
// Returning, with ErrLostLeadership from Term.Advance or anything else,
// ends the term; the member campaigns again.
type LeadFunc func(ctx context.Context, term *Term) error

// Status is a member's state for the status endpoint.
type Status struct {
	Leader      string     `json:"leader"`                 // name of the current offloader ("" when none is known)
	IsLeader    bool       `json:"is_leader"`              // this node runs the leader's work
	LeaderSince *time.Time `json:"leader_since,omitempty"` // when this node saw the current leader take over
	Campaigning bool       `json:"campaigning"`            // a candidate waiting to lead (false while leading)
	Eligible    bool       `json:"eligible"`               // as Local.Info last said
	BackupLSN   string     `json:"shared_backup_lsn"`      // the shared backup_lsn's LSN, "" when unknown
	Etcd        string     `json:"etcd"`                   // "connecting", "connected" or "unreachable: <error>"
	LastError   string     `json:"last_error,omitempty"`   // the last failed etcd operation
	Peers       []NodeInfo `json:"peers"`                  // the other live nodes of the timeline, by name
}
