package httpapi

import (
	"fmt"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/supervisor"
	"github.com/pgsafekeeper/safekeeper/pkg/upstream"
)

// Readiness tunes GET /readyz.
type Readiness struct {
	// MaxLag is how far behind the upstream's end of WAL a ready node may
	// be (--ready-max-lag); 0 disables the check.
	MaxLag uint64
	// ArchiveFailFor is how long archive operations may fail in a row
	// before the node is not ready; 0 disables the check.
	ArchiveFailFor time.Duration
	// Pending, when set, says why no timeline is hosted yet (the last
	// error asking the upstream for its system identifier).
	Pending func() string
	// NoTimelineOK: hosting no timeline is not a reason to be unready (a
	// node without --upstream, whose timelines come from the API).
	NoTimelineOK bool
}

// Ready is the body of GET /readyz.
type Ready struct {
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons"`
}

// notReady lists why the node should not take traffic: per timeline, an
// upstream that is not streaming (and why), WAL it lacks that nobody could
// provide, a lag past the limit, and an archive failing for too long.
func notReady(tls []supervisor.Status, opt Readiness, now time.Time) []string {
	reasons := []string{}
	if len(tls) == 0 && opt.NoTimelineOK {
		return reasons
	}
	if len(tls) == 0 {
		why := "no timeline yet: waiting for the upstream to learn the timeline's ids"
		if opt.Pending != nil {
			if p := opt.Pending(); p != "" {
				why += " (" + p + ")"
			}
		}
		return append(reasons, why)
	}
	for _, st := range tls {
		id := st.TenantID + "/" + st.TimelineID
		add := func(format string, args ...any) {
			reasons = append(reasons, id+": "+fmt.Sprintf(format, args...))
		}
		u := st.Upstream
		switch u.State {
		case upstream.StateStreaming, upstream.StateNone:
		case upstream.StateRecovering:
			add("recovering WAL the upstream cannot give (%s)", recoveryText(u))
		case upstream.StateBehind:
			add("behind: the upstream removed WAL this node lacks and no peer or archive could provide it (%s)", u.LastError)
		case upstream.StateDiskFull:
			add("storage full, not taking WAL until space frees: %s", u.LastError)
		case upstream.StateRefused:
			add("upstream refused: %s", u.LastError)
		default:
			if u.LastError != "" {
				add("upstream not connected (%s): %s", u.State, u.LastError)
			} else {
				add("upstream not connected (%s)", u.State)
			}
		}
		if lag, ok := u.Lag(); ok && opt.MaxLag > 0 && u.State == upstream.StateStreaming && lag > opt.MaxLag {
			add("behind the upstream by %d bytes (more than %d)", lag, opt.MaxLag)
		}
		if a := st.Archive; a != nil && opt.ArchiveFailFor > 0 && a.FailingSince != nil && now.Sub(*a.FailingSince) > opt.ArchiveFailFor {
			add("archive failing for %s: %s", now.Sub(*a.FailingSince).Round(time.Second), a.LastError)
		}
		if a := st.Archive; a != nil && a.Conflict != "" {
			add("archive conflict, offloading stopped: %s", a.Conflict)
		}
	}
	return reasons
}

func recoveryText(u upstream.Status) string {
	if u.Recovery == nil || u.Recovery.Source == "" {
		return u.LastError
	}
	return "from " + u.Recovery.Source
}
