package upstream

import (
	"strings"
	"sync"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/notify"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// Upstream connection states.
const (
	StateConnecting = "connecting"
	StateStreaming  = "streaming"
	StateWaiting    = "waiting to reconnect"
	StateRefused    = "refused"
	// StateBehind: the upstream no longer has the WAL this safekeeper
	// lacks, and neither the archive nor a peer could provide it yet.
	StateBehind = "behind: WAL removed upstream"
	// StateRecovering: fetching the WAL the upstream no longer has from
	// the archive or a peer safekeeper.
	StateRecovering = "recovering"
	// StateDiskFull: a WAL write found the disk full; ingest is paused
	// until space frees, the durable WAL is still served.
	StateDiskFull = "paused: disk full"
	StateNone     = "not configured"
)

type state struct {
	mu        sync.Mutex
	state     string
	lastError string
	since     time.Time
	walEnd    wal.LSN // the upstream's reported end of WAL
	lastMsg   time.Time
	recovery  *RecoveryStatus
	changed   notify.Broadcast // the state changed
}

// Status is a snapshot of the upstream connection.
type Status struct {
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	// WalEnd is the upstream's end of WAL as it last reported it
	// (IDENTIFY_SYSTEM, XLogData, keepalives), and LagBytes how far the
	// durable end is behind it; both null when not known: before the
	// first contact, and whenever the upstream is not answering (a stale
	// value is not the truth). LastMessage is the time of the last contact.
	WalEnd      *string    `json:"upstream_wal_end"`
	LagBytes    *uint64    `json:"lag_bytes"`
	LastMessage *time.Time `json:"last_message_at,omitempty"`
	// CatchingUp says that, streaming, this safekeeper is catching up on a
	// backlog (see Receiver.catchUp): its new segments are written once,
	// not zero-filled first.
	CatchingUp bool `json:"catching_up"`
	// Recovery describes the last recovery from the archive or a peer.
	Recovery *RecoveryStatus `json:"recovery,omitempty"`
}

// RecoveryStatus is the last recovery of WAL the upstream could not give.
type RecoveryStatus struct {
	Reason    string     `json:"reason"`
	Source    string     `json:"source"` // "archive", "peer <name>" or "" when none could help
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	FromLSN   string     `json:"from_lsn"`
	ToLSN     string     `json:"to_lsn,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// setState records a state change of the upstream connection.
func (r *Receiver) setState(state string, err error) {
	u := &r.state
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state != state {
		u.since = time.Now()
		u.changed.Notify()
	}
	u.state = state
	if err != nil {
		u.lastError = OneLine(err)
	} else if state == StateStreaming {
		u.lastError = ""
	}
}

// StateChanged returns a channel closed when Status().State changes
// (the cluster publishes it; nothing polls it).
func (r *Receiver) StateChanged() <-chan struct{} { return r.state.changed.C() }

// Lag returns the upstream's end of WAL and the lag behind it, ok=false
// when not known (see Status).
func (s Status) Lag() (uint64, bool) {
	if s.LagBytes == nil {
		return 0, false
	}
	return *s.LagBytes, true
}

// noteEnd records the upstream's end of WAL from XLogData or a keepalive.
func (r *Receiver) noteEnd(end wal.LSN) {
	u := &r.state
	u.mu.Lock()
	if end > u.walEnd {
		u.walEnd = end
	}
	u.lastMsg = time.Now()
	u.mu.Unlock()
}

// Status returns a snapshot of the upstream connection.
func (r *Receiver) Status() Status {
	u := &r.state
	u.mu.Lock()
	defer u.mu.Unlock()
	s := Status{State: u.state, Since: u.since, LastError: u.lastError}
	if s.State == "" {
		s.State = StateNone
	}
	if u.walEnd != 0 && (u.state == StateStreaming || u.state == StateBehind || u.state == StateRecovering) {
		end := u.walEnd.String()
		var lag uint64
		if f := r.tl.FlushLSN(); u.walEnd > f {
			lag = uint64(u.walEnd - f)
		}
		s.WalEnd, s.LagBytes = &end, &lag
	}
	s.CatchingUp = u.state == StateStreaming && r.tl.CatchingUp()
	if u.recovery != nil {
		rs := *u.recovery
		s.Recovery = &rs
	}
	if !u.lastMsg.IsZero() {
		lm := u.lastMsg
		s.LastMessage = &lm
	}
	return s
}

// noteRecovery records the state of a recovery.
func (r *Receiver) noteRecovery(rs RecoveryStatus) {
	u := &r.state
	u.mu.Lock()
	u.recovery = &rs
	u.mu.Unlock()
}

// resetEnd records the upstream's end of WAL at the start of a session.
func (r *Receiver) resetEnd(end wal.LSN) {
	u := &r.state
	u.mu.Lock()
	u.walEnd, u.lastMsg = end, time.Now()
	u.mu.Unlock()
}

// OneLine is err's message on one line: pgconn's connection errors list
// every address tried on lines of their own.
func OneLine(err error) string {
	return oneLineReplacer.Replace(strings.TrimSpace(err.Error()))
}

var oneLineReplacer = strings.NewReplacer(":\n\t", ": ", "\n\t", "; ", "\n", "; ", "\t", " ")
