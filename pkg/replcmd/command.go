package replcmd

import "github.com/pgsafekeeper/safekeeper/pkg/pgerr"

// Kind identifies a replication command.
type Kind int

// Replication commands.
const (
	IdentifySystem Kind = iota + 1
	Show
	TimelineHistory
	StartReplication
	CreateReplicationSlot
	DropReplicationSlot
	ReadReplicationSlot
	BaseBackup
	AlterReplicationSlot
	UploadManifest
)

// String returns the command keyword, e.g. "START_REPLICATION". It is also
// the CommandComplete tag PostgreSQL sends for the command.
func (k Kind) String() string {
	switch k {
	case IdentifySystem:
		return "IDENTIFY_SYSTEM"
	case Show:
		return "SHOW"
	case TimelineHistory:
		return "TIMELINE_HISTORY"
	case StartReplication:
		return "START_REPLICATION"
	case CreateReplicationSlot:
		return "CREATE_REPLICATION_SLOT"
	case DropReplicationSlot:
		return "DROP_REPLICATION_SLOT"
	case ReadReplicationSlot:
		return "READ_REPLICATION_SLOT"
	case BaseBackup:
		return "BASE_BACKUP"
	case AlterReplicationSlot:
		return "ALTER_REPLICATION_SLOT"
	case UploadManifest:
		return "UPLOAD_MANIFEST"
	}
	return "UNKNOWN"
}

// Command is a parsed replication command. Fields not used by Kind are zero.
type Command struct {
	Kind Kind
	// Name is the SHOW variable (down-cased unless quoted, dotted parts
	// joined with '.'), or the slot name of CREATE_, DROP_ and
	// READ_REPLICATION_SLOT.
	Name string
	// Slot is the START_REPLICATION slot name, "" if none.
	Slot string
	// Logical is set by START_REPLICATION SLOT x LOGICAL ... and
	// CREATE_REPLICATION_SLOT x LOGICAL ...
	Logical bool
	// LSN is the START_REPLICATION start point.
	LSN uint64
	// Timeline is the START_REPLICATION TIMELINE (0 if absent) or the
	// TIMELINE_HISTORY argument; HasTimeline says whether one was given.
	Timeline    uint32
	HasTimeline bool
	// Temporary is set by CREATE_REPLICATION_SLOT ... TEMPORARY.
	Temporary bool
	// ReserveWAL is set by the legacy RESERVE_WAL or (reserve_wal [bool]).
	ReserveWAL bool
	// Wait is set by DROP_REPLICATION_SLOT ... WAIT.
	Wait bool
	// Notices are the NOTICEs (severity pgerr.SeverityNotice) PostgreSQL's
	// scanner raises while reading the command: 42622 for each identifier
	// longer than 63 bytes, which is truncated.
	Notices []*pgerr.Error
}
