package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// stateFile is the name of the state file inside --dir.
const stateFile = "zconsumer.state"

// State is what the consumer persists: which timeline it follows and how
// far its local copy is durable. It is rewritten atomically (temporary
// file, fsync, rename, fsync of the directory), and only after the WAL up
// to ConsistentLSN was fsynced, so after any crash the files hold at least
// what the state says.
type State struct {
	SystemID   uint64
	TenantID   string
	TimelineID string
	TLI        uint32
	WalSegSize uint64
	// ConsistentLSN is the end of the WAL durable locally: where streaming
	// resumes, and the disk_consistent_lsn the consumer reports.
	ConsistentLSN wal.LSN
}

// stateJSON is the file format: JSON with the LSN in PostgreSQL's text form
// and the 64-bit system identifier as a decimal string (JSON numbers are
// not exact beyond 2^53).
type stateJSON struct {
	SystemID      string `json:"system_id"`
	TenantID      string `json:"tenant_id"`
	TimelineID    string `json:"timeline_id"`
	TLI           uint32 `json:"tli"`
	WalSegSize    uint64 `json:"wal_seg_size"`
	ConsistentLSN string `json:"consistent_lsn"`
}

// loadState reads the state file of dir; ok is false when there is none.
func loadState(dir string) (st State, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, err
	}
	var j stateJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return State{}, false, fmt.Errorf("%s: %w", stateFile, err)
	}
	st = State{TenantID: j.TenantID, TimelineID: j.TimelineID, TLI: j.TLI, WalSegSize: j.WalSegSize}
	if st.SystemID, err = strconv.ParseUint(j.SystemID, 10, 64); err != nil {
		return State{}, false, fmt.Errorf("%s: system_id %q: %w", stateFile, j.SystemID, err)
	}
	if st.ConsistentLSN, err = wal.ParseLSN(j.ConsistentLSN); err != nil {
		return State{}, false, fmt.Errorf("%s: consistent_lsn: %w", stateFile, err)
	}
	if !wal.ValidSegmentSize(st.WalSegSize) || st.TLI == 0 {
		return State{}, false, fmt.Errorf("%s: invalid wal_seg_size %d or tli %d", stateFile, st.WalSegSize, st.TLI)
	}
	return st, true, nil
}

// saveState replaces the state file of dir atomically and durably.
func saveState(dir string, st State) error {
	b, err := json.MarshalIndent(stateJSON{
		SystemID: fmt.Sprint(st.SystemID), TenantID: st.TenantID, TimelineID: st.TimelineID,
		TLI: st.TLI, WalSegSize: st.WalSegSize, ConsistentLSN: st.ConsistentLSN.String(),
	}, "", "  ")
	if err != nil {
		return err
	}
	// Temp file, fsync, rename, fsync the directory; no temp file left
	// behind on failure.
	return walstore.WriteFileAtomic(filepath.Join(dir, stateFile), append(b, '\n'), 0o644)
}
