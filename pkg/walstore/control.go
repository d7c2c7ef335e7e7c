package walstore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// ControlFileName is the name of a timeline's control file.
const ControlFileName = "safekeeper.control"

const (
	controlMagic   uint32 = 0x534B4354 // "SKCT"
	controlVersion uint32 = 1
)

// Control is the persistent state of one timeline.
type Control struct {
	TenantID   string `json:"tenant_id"`
	TimelineID string `json:"timeline_id"`

	// What we learned from the upstream at first contact.
	SystemID         uint64 `json:"system_id"`
	WalSegSize       uint64 `json:"wal_seg_size"`
	ServerVersion    string `json:"server_version"`
	ServerVersionNum int    `json:"server_version_num"`
	PageMagic        uint16 `json:"page_magic,omitempty"`

	// TLI is the PostgreSQL timeline currently being written.
	TLI uint32 `json:"tli"`
	// StartLSN is the first WAL byte held locally (a segment start). It
	// advances when old segments are removed, always before the files go.
	StartLSN wal.LSN `json:"start_lsn"`
	// BackupLSN is the end of the contiguous run of segments archived from
	// the timeline's history (a segment boundary). It only moves forward,
	// except at a timeline switch whose switch point lies below it.
	BackupLSN wal.LSN `json:"backup_lsn,omitempty"`
	// Archive names the archive BackupLSN refers to (its URL without
	// credentials). Pointed at another archive, the timeline starts
	// archiving again from what it holds locally.
	Archive string `json:"archive,omitempty"`
	// FlushLSN is the last durable end of WAL recorded here. The segment
	// files may hold more durable WAL than this (the control file is not
	// rewritten on every fsync); Recover finds the true end.
	FlushLSN wal.LSN `json:"flush_lsn"`
}

// Initialized reports whether the timeline has had contact with an upstream.
func (c Control) Initialized() bool { return c.SystemID != 0 && c.WalSegSize != 0 }

// ErrNoControl is returned by ReadControl when there is no control file.
var ErrNoControl = errors.New("no control file")

// EncodeControl serializes c (see EncodeChecked).
func EncodeControl(c Control) ([]byte, error) {
	return EncodeChecked(controlMagic, controlVersion, c)
}

// DecodeControl parses and verifies a control file image.
func DecodeControl(b []byte) (Control, error) {
	var c Control
	err := DecodeChecked(b, controlMagic, controlVersion, &c)
	return c, err
}

// EncodeChecked serializes v as a small state file: magic, version,
// payload length, JSON payload, and a CRC-32C of everything before it. All
// integers little-endian.
func EncodeChecked(magic, version uint32, v any) ([]byte, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 12, 12+len(payload)+4)
	binary.LittleEndian.PutUint32(b[0:], magic)
	binary.LittleEndian.PutUint32(b[4:], version)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(payload)))
	b = append(b, payload...)
	b = binary.LittleEndian.AppendUint32(b, wal.CRC32C(b))
	return b, nil
}

// DecodeChecked verifies an EncodeChecked image and unmarshals it into v.
func DecodeChecked(b []byte, magic, version uint32, v any) error {
	if len(b) < 16 {
		return fmt.Errorf("state file too short (%d bytes)", len(b))
	}
	if m := binary.LittleEndian.Uint32(b); m != magic {
		return fmt.Errorf("state file has bad magic %#x", m)
	}
	if ver := binary.LittleEndian.Uint32(b[4:]); ver != version {
		return fmt.Errorf("state file version %d not supported (want %d)", ver, version)
	}
	n := binary.LittleEndian.Uint32(b[8:])
	if uint64(n)+16 != uint64(len(b)) {
		return fmt.Errorf("state file length mismatch: payload %d, file %d bytes", n, len(b))
	}
	want := binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := wal.CRC32C(b[:len(b)-4]); got != want {
		return fmt.Errorf("state file checksum mismatch: computed %08x, stored %08x", got, want)
	}
	if err := json.Unmarshal(b[12:len(b)-4], v); err != nil {
		return fmt.Errorf("state file payload: %w", err)
	}
	return nil
}

// ReadControl reads dir's control file.
func ReadControl(path string) (Control, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Control{}, ErrNoControl
	}
	if err != nil {
		return Control{}, err
	}
	return DecodeControl(b)
}

// WriteControl atomically replaces the control file at path.
func WriteControl(path string, c Control) error {
	b, err := EncodeControl(c)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, b, 0o600)
}
