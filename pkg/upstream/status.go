package upstream

import (
	"sync"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// Upstream connection states.
const (
	StateConnecting = "connecting"
	StateStreaming  = "streaming"
	StateWaiting    = "waiting to reconnect"
	StateRefused    = "refused"
	StateNone       = "not configured"
)

type state struct {
	mu        sync.Mutex
	state     string
	lastError string
	since     time.Time
	walEnd    wal.LSN // the upstream's reported end of WAL
	lastMsg   time.Time
}

// Status is a snapshot of the upstream connection.
type Status struct {
	State       string     `json:"state"`
	Since       time.Time  `json:"since"`
	LastError   string     `json:"last_error,omitempty"`
	WalEnd      string     `json:"upstream_wal_end"`
	LagBytes    uint64     `json:"lag_bytes"`
	LastMessage *time.Time `json:"last_message_at,omitempty"`
}

// setState records a state change of the upstream connection.
func (r *Receiver) setState(state string, err error) {
	u := &r.state
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state != state {
		u.since = time.Now()
	}
	u.state = state
	if err != nil {
		u.lastError = err.Error()
	} else if state == StateStreaming {
		u.lastError = ""
	}
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
	s := Status{State: u.state, Since: u.since, LastError: u.lastError, WalEnd: u.walEnd.String()}
	if s.State == "" {
		s.State = StateNone
	}
	if f := r.tl.FlushLSN(); u.walEnd > f {
		s.LagBytes = uint64(u.walEnd - f)
	}
	if !u.lastMsg.IsZero() {
		lm := u.lastMsg
		s.LastMessage = &lm
	}
	return s
}
