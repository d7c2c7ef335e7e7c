package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/election"
	"github.com/pgsafekeeper/safekeeper/pkg/offload"
	"github.com/pgsafekeeper/safekeeper/pkg/upstream"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// ClusterConfig makes a timeline a member of a safekeeper cluster: its
// peers are found, and its offloader elected, through etcd.
type ClusterConfig struct {
	Election election.Config
	// Addr is how peers reach this node's replication listener
	// (--advertise-pg, host:port).
	Addr string
	// PeerConnString is the libpq key=value base used to connect to peers
	// when recovering WAL from them (host and port are added).
	PeerConnString string
	// InitialWait bounds how long a timeline holding no WAL waits for the
	// cluster's view before choosing where to start (default 5s).
	InitialWait time.Duration
}

// clusterLocal is the timeline as the election sees it.
type clusterLocal struct{ s *Supervisor }

func (l clusterLocal) Info() election.NodeInfo {
	s := l.s
	ctl := s.tl.Control()
	info := election.NodeInfo{
		TLI: ctl.TLI, FlushLSN: s.tl.FlushLSN(), LocalStartLSN: ctl.StartLSN,
		BackupLSN: ctl.BackupLSN, WalSegSize: ctl.WalSegSize,
	}
	if s.rcv != nil {
		info.State = s.rcv.Status().State
	} else {
		info.State = upstream.StateNone
	}
	info.Eligible = s.eligible(ctl.StartLSN, ctl.BackupLSN, info.FlushLSN, ctl.WalSegSize, ctl.TLI)
	return info
}

// Changed is closed when Info may have changed: the relay (relayClusterChanges)
// forwards the timeline's, the receiver's and the offloader's changes.
// The shared backup position, which eligibility also reads, is the
// member's own view: it wakes on that by itself.
func (l clusterLocal) Changed() <-chan struct{} { return l.s.clusterChanged.C() }

// relayClusterChanges wakes clusterLocal.Changed whenever something Info
// reads changes: the timeline's positions and TLI, the receiver's state,
// the offloader stopping on a conflict. The election does not poll Info,
// so each of these must be signalled; the relay is one blocked goroutine
// per clustered timeline, woken only by those changes.
func (s *Supervisor) relayClusterChanges(ctx context.Context) error {
	for {
		// Taken before the Notify: a change after it closes one of
		// these, one before it is seen by whoever the Notify wakes.
		tl := s.tl.Changed()
		var rcv, off <-chan struct{}
		if s.rcv != nil {
			rcv = s.rcv.StateChanged()
		}
		if s.off != nil {
			off = s.off.ConflictChanged()
		}
		s.clusterChanged.Notify()
		select {
		case <-ctx.Done():
			return nil
		case <-tl:
		case <-rcv:
		case <-off:
		}
	}
}

func (l clusterLocal) AdoptBackup(pos election.BackupPos) {
	if err := l.s.tl.SetBackupLSN(pos.LSN, pos.TLI); err != nil {
		l.s.log.Warn("recording the cluster's archived position failed; will retry at the next change", zap.Error(err))
	}
}

// eligible reports whether this node may offload: it has an archive that
// has not stopped on a conflict, and it holds the next segment to archive
// (local start at or below the shared backup_lsn, and that whole segment
// durable).
func (s *Supervisor) eligible(localStart, localBackup, flush wal.LSN, segSize uint64, tli uint32) bool {
	if s.off == nil || segSize == 0 || s.off.Conflicted() {
		return false
	}
	backup := localBackup
	if s.member != nil {
		if pos, ok := s.member.Shared(); ok {
			if pos.TLI > tli {
				// The cluster archives a newer PostgreSQL timeline than
				// this node has reached: it holds nothing to archive.
				return false
			}
			if pos.TLI == tli {
				backup = pos.LSN
			}
		}
	}
	return localStart <= backup && flush >= wal.SegmentStart(backup, segSize)+wal.LSN(segSize)
}

// lead runs the offloader for one leadership term.
func (s *Supervisor) lead(ctx context.Context, term *election.Term) error {
	if pos := term.Start(); pos.LSN != 0 {
		if err := s.tl.SetBackupLSN(pos.LSN, pos.TLI); err != nil {
			return fmt.Errorf("adopt the shared archived position: %w", err)
		}
	}
	defer s.off.SetFollower()
	return s.off.RunTerm(ctx, termProgress{term})
}

// termProgress records the offloader's progress in the cluster, fenced by
// the leadership term.
type termProgress struct{ t *election.Term }

func (p termProgress) Advance(ctx context.Context, lsn wal.LSN, tli uint32) error {
	err := p.t.Advance(ctx, election.BackupPos{TLI: tli, LSN: lsn})
	if errors.Is(err, election.ErrLostLeadership) {
		return fmt.Errorf("%w: %w", offload.ErrNotOffloader, err)
	}
	return err
}

// readoptOnSwitch applies the shared archived position again when this
// node moves to a new PostgreSQL timeline: a position on a timeline the
// node had not reached yet was ignored when it arrived.
func (s *Supervisor) readoptOnSwitch(ctx context.Context) error {
	last := s.tl.CurrentTLI()
	for {
		changed := s.tl.Changed()
		if cur := s.tl.CurrentTLI(); cur != last {
			last = cur
			if pos, ok := s.member.Shared(); ok {
				clusterLocal{s}.AdoptBackup(pos)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// peers lists the other safekeepers for the receiver's recovery.
func (s *Supervisor) peers() []upstream.Peer {
	var out []upstream.Peer
	for _, p := range s.member.Peers() {
		out = append(out, upstream.Peer{Name: p.Name, Addr: p.Addr, TLI: p.TLI, FlushLSN: p.FlushLSN, LocalStartLSN: p.LocalStartLSN})
	}
	return out
}

// initialStart proposes where a timeline with no WAL starts: the oldest
// WAL its peers hold (on the upstream's PostgreSQL timeline), so that this
// node holds what they hold and recovers it from them or the archive; else
// the cluster's archived position. It waits (up to Cluster.InitialWait)
// for what it needs to know (see chooseInitialStart).
func (s *Supervisor) initialStart(ctx context.Context, upstreamTLI uint32) (wal.LSN, bool) {
	wait := s.cfg.Cluster.InitialWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	timedOut := false
	for {
		pos, shared := s.member.Shared()
		lsn, from, decided := chooseInitialStart(pos, shared, s.member.Peers(), upstreamTLI, timedOut)
		if decided {
			switch from {
			case startFromPeers:
				s.log.Info("new timeline starts at the oldest WAL its peers hold", zap.Stringer("start_lsn", lsn))
			case startFromArchive:
				s.log.Info("new timeline starts at the cluster's archived position", zap.Stringer("backup_lsn", lsn))
			}
			return lsn, from != startFromUpstream
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-deadline.C:
			timedOut = true
		case <-tick.C:
		}
	}
}

// Where a new timeline's WAL starts (chooseInitialStart).
const (
	startFromUpstream = iota // the upstream's position: nothing proposed
	startFromPeers
	startFromArchive
)

// chooseInitialStart is initialStart's decision from what the member
// knows now: decided false means wait and ask again.
//   - A peer holding WAL on the timeline: the oldest such WAL.
//   - The cluster's archived position on the timeline, when there are no
//     peers, or once the wait is over. Peers that are known but have not
//     reported WAL yet are waited for: they report about once a second,
//     and a node that started at the archived end would hold less than
//     they do (their report may still be the one from before their own
//     first contact with the upstream).
//   - Nothing (the upstream's position) when peers or the shared state
//     are known but give no position on the timeline, or the wait is over.
func chooseInitialStart(pos election.BackupPos, shared bool, peers []election.NodeInfo, tli uint32, timedOut bool) (lsn wal.LSN, from int, decided bool) {
	var oldest wal.LSN
	for _, p := range peers {
		if p.TLI == tli && p.LocalStartLSN != 0 && (oldest == 0 || p.LocalStartLSN < oldest) {
			oldest = p.LocalStartLSN
		}
	}
	if oldest != 0 {
		return oldest, startFromPeers, true
	}
	archived := shared && pos.LSN != 0 && pos.TLI == tli
	switch {
	case archived && (len(peers) == 0 || timedOut):
		return pos.LSN, startFromArchive, true
	case !archived && (shared || len(peers) > 0 || timedOut):
		return 0, startFromUpstream, true
	}
	return 0, startFromUpstream, false
}
