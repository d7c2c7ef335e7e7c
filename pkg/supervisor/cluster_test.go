package supervisor

import (
	"context"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/upstream"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// The election does not poll this node's NodeInfo: the relay wakes it on
// each change Info reads (the timeline's positions, the receiver's
// state), and on nothing else.
func TestRelayClusterChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		id := timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()}
		cfg := Config{
			Dir: filepath.Join(t.TempDir(), "tl"), ID: id, NodeName: "a",
			// An upstream that cannot be reached: its state changes.
			Upstream: &upstream.Config{ConnString: "host=" + filepath.Join(t.TempDir(), "none") + " user=x sslmode=disable",
				MinBackoff: time.Hour, MaxBackoff: time.Hour},
		}
		s, err := Open(cfg, zap.NewNop(), metrics.New(prometheus.NewRegistry()))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		local := clusterLocal{s}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go s.relayClusterChanges(ctx)
		synctest.Wait()

		ch := local.Changed()
		if err := s.tl.Initialize(timeline.UpstreamInfo{SystemID: 1, WalSegSize: 1 << 20, TLI: 1}, 1<<20); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if !closed(ch) {
			t.Fatal("the timeline's first contact did not wake the election")
		}

		ch = local.Changed()
		rctx, stopReceiver := context.WithCancel(ctx)
		rdone := make(chan error, 1)
		go func() { rdone <- s.rcv.Run(rctx) }()
		synctest.Wait() // connecting, then waiting to reconnect
		if !closed(ch) || local.Info().State != upstream.StateWaiting {
			t.Fatalf("receiver state %q; the change woke the election: %v", local.Info().State, closed(ch))
		}
		stopReceiver()
		if err := <-rdone; err != nil {
			t.Fatal(err)
		}
		synctest.Wait()

		ch = local.Changed()
		time.Sleep(time.Hour)
		synctest.Wait()
		if closed(ch) {
			t.Fatal("woken in an hour without changes")
		}
	})
}
