package httpapi

import (
	"strings"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/offload"
	"github.com/pgsafekeeper/safekeeper/pkg/supervisor"
	"github.com/pgsafekeeper/safekeeper/pkg/upstream"
)

func TestNotReady(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	longAgo := now.Add(-10 * time.Minute)
	recent := now.Add(-10 * time.Second)
	opt := Readiness{MaxLag: 1 << 20, ArchiveFailFor: 5 * time.Minute}
	tl := func(u upstream.Status, a *supervisor.ArchiveStatus) supervisor.Status {
		return supervisor.Status{TenantID: "t", TimelineID: "l", Upstream: u, Archive: a}
	}
	streaming := upstream.Status{State: upstream.StateStreaming}
	twoMB := uint64(2 << 20)
	cases := []struct {
		name string
		tls  []supervisor.Status
		want string // substring of the only reason; "" = ready
	}{
		{"no timeline", nil, "no timeline yet"},
		{"healthy", []supervisor.Status{tl(streaming, nil)}, ""},
		{"no upstream configured", []supervisor.Status{tl(upstream.Status{State: upstream.StateNone}, nil)}, ""},
		{"down", []supervisor.Status{tl(upstream.Status{State: upstream.StateWaiting, LastError: "connection refused"}, nil)}, "upstream not connected (waiting to reconnect): connection refused"},
		{"wrong password", []supervisor.Status{tl(upstream.Status{State: upstream.StateWaiting, LastError: "FATAL: password authentication failed for user \"x\" (SQLSTATE 28P01)"}, nil)}, "password authentication failed"},
		{"refused", []supervisor.Status{tl(upstream.Status{State: upstream.StateRefused, LastError: "system identifier differs"}, nil)}, "upstream refused: system identifier differs"},
		{"behind", []supervisor.Status{tl(upstream.Status{State: upstream.StateBehind, LastError: "requested WAL segment has already been removed"}, nil)}, "behind: the upstream removed WAL"},
		{"recovering", []supervisor.Status{tl(upstream.Status{State: upstream.StateRecovering, Recovery: &upstream.RecoveryStatus{Source: "peer sk1"}}, nil)}, "from peer sk1"},
		{"lagging", []supervisor.Status{tl(upstream.Status{State: upstream.StateStreaming, LagBytes: &twoMB}, nil)}, "behind the upstream by 2097152 bytes"},
		{"archive failing long", []supervisor.Status{tl(streaming, &supervisor.ArchiveStatus{Status: offload.Status{FailingSince: &longAgo, LastError: "503 Slow Down"}})}, "archive failing for 10m0s: 503 Slow Down"},
		{"archive failing briefly", []supervisor.Status{tl(streaming, &supervisor.ArchiveStatus{Status: offload.Status{FailingSince: &recent}})}, ""},
		{"archive conflict", []supervisor.Status{tl(streaming, &supervisor.ArchiveStatus{Status: offload.Status{Conflict: "different object"}})}, "archive conflict"},
	}
	pending := opt
	pending.Pending = func() string { return "FATAL: password authentication failed for user \"rep\" (SQLSTATE 28P01)" }
	if got := notReady(nil, pending, now); len(got) != 1 || !strings.Contains(got[0], "no timeline yet") || !strings.Contains(got[0], "password authentication failed") {
		t.Errorf("no timeline, upstream refusing the password: %q", got)
	}
	for _, c := range cases {
		got := notReady(c.tls, opt, now)
		switch {
		case c.want == "" && len(got) != 0:
			t.Errorf("%s: not ready: %v", c.name, got)
		case c.want != "" && (len(got) != 1 || !strings.Contains(got[0], c.want)):
			t.Errorf("%s: reasons %q, want one containing %q", c.name, got, c.want)
		}
	}
}
