package supervisor

import (
	"context"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/election"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/upstream"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
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

// TestChooseInitialStart: where a timeline with no WAL starts, from what
// the cluster shows. Peers known to the member but without a report of
// WAL on the timeline are waited for while WAL is archived: on a fast
// machine a wiped node came back within a second of the cluster's start,
// read its peers' first reports (made before their first contact with the
// upstream) and started at the archived end, holding less than they do.
func TestChooseInitialStart(t *testing.T) {
	const tli = 1
	archived := election.BackupPos{TLI: tli, LSN: 0x1100000}
	fresh := []election.NodeInfo{{Name: "sk1"}, {Name: "sk2"}}
	holding := []election.NodeInfo{{Name: "sk1", TLI: tli, LocalStartLSN: 0xB00000}, {Name: "sk2", TLI: tli, LocalStartLSN: 0x900000}, {Name: "sk4", TLI: 2, LocalStartLSN: 0x100000}}
	for _, c := range []struct {
		name     string
		pos      election.BackupPos
		shared   bool
		peers    []election.NodeInfo
		timedOut bool
		lsn      wal.LSN
		from     int
		decided  bool
	}{
		{name: "nothing known yet", decided: false},
		{name: "nothing known, wait over", timedOut: true, from: startFromUpstream, decided: true},
		{name: "peers holding WAL", pos: archived, shared: true, peers: holding, lsn: 0x900000, from: startFromPeers, decided: true},
		{name: "archived, no peers", pos: archived, shared: true, lsn: 0x1100000, from: startFromArchive, decided: true},
		{name: "archived, peers not reporting yet", pos: archived, shared: true, peers: fresh, decided: false},
		{name: "archived, peers not reporting, wait over", pos: archived, shared: true, peers: fresh, timedOut: true, lsn: 0x1100000, from: startFromArchive, decided: true},
		{name: "new cluster: peers, nothing archived", peers: fresh, from: startFromUpstream, decided: true},
		{name: "archived on another timeline", pos: election.BackupPos{TLI: 2, LSN: 0x100000}, shared: true, from: startFromUpstream, decided: true},
	} {
		lsn, from, decided := chooseInitialStart(c.pos, c.shared, c.peers, tli, c.timedOut)
		if lsn != c.lsn || from != c.from || decided != c.decided {
			t.Errorf("%s: %s from %d decided %v, want %s from %d decided %v", c.name, lsn, from, decided, c.lsn, c.from, c.decided)
		}
	}
}
