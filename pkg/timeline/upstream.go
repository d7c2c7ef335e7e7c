package timeline

import (
	"sync"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// Upstream connection states.
const (
	UpstreamConnecting = "connecting"
	UpstreamStreaming  = "streaming"
	UpstreamWaiting    = "waiting to reconnect"
	UpstreamRefused    = "refused"
	UpstreamNone       = "not configured"
)

type upstreamState struct {
	mu        sync.Mutex
	state     string
	lastError string
	since     time.Time
	walEnd    wal.LSN // the upstream's reported end of WAL
	lastMsg   time.Time
}

// UpstreamStatus is a snapshot of the upstream connection.
type UpstreamStatus struct {
	State       string     `json:"state"`
	Since       time.Time  `json:"since"`
	LastError   string     `json:"last_error,omitempty"`
	WalEnd      string     `json:"upstream_wal_end"`
	LagBytes    uint64     `json:"lag_bytes"`
	LastMessage *time.Time `json:"last_message_at,omitempty"`
}

// SetUpstreamState records a state change of the upstream connection.
func (t *Timeline) SetUpstreamState(state string, err error) {
	u := &t.upstream
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state != state {
		u.since = time.Now()
	}
	u.state = state
	if err != nil {
		u.lastError = err.Error()
	} else if state == UpstreamStreaming {
		u.lastError = ""
	}
}

// NoteUpstreamEnd records the upstream's end of WAL from XLogData or a keepalive.
func (t *Timeline) NoteUpstreamEnd(end wal.LSN) {
	u := &t.upstream
	u.mu.Lock()
	if end > u.walEnd {
		u.walEnd = end
	}
	u.lastMsg = time.Now()
	u.mu.Unlock()
}

// UpstreamStatus returns a snapshot of the upstream connection.
func (t *Timeline) UpstreamStatus() UpstreamStatus {
	u := &t.upstream
	u.mu.Lock()
	defer u.mu.Unlock()
	s := UpstreamStatus{State: u.state, Since: u.since, LastError: u.lastError, WalEnd: u.walEnd.String()}
	if s.State == "" {
		s.State = UpstreamNone
	}
	if f := t.FlushLSN(); u.walEnd > f {
		s.LagBytes = uint64(u.walEnd - f)
	}
	if !u.lastMsg.IsZero() {
		lm := u.lastMsg
		s.LastMessage = &lm
	}
	return s
}
