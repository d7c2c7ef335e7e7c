package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

var (
	// errNotEligible ends a campaign when the node stops holding the next
	// segment to archive.
	errNotEligible = errors.New("no longer eligible")
	// errCandidacyLost: the node's election key vanished under a session
	// that still looked alive, so its lease was revoked or expired.
	errCandidacyLost = errors.New("election key vanished (lease revoked or expired)")
	// errHandOver ends a term whose archive is stuck.
	errHandOver = errors.New("handing over a stalled archive")
	// errTermEnded ends a term whose LeadFunc returned.
	errTermEnded = errors.New("leader work returned")
)

// candidate campaigns while the node is eligible and runs a term each time
// it wins, until ctx (the epoch) ends. It ends the epoch (through end) when
// the session's lease is gone.
//
// The election is concurrency.Election's algorithm on its key layout
// (offloader/<lease id>, the lowest create revision leads), written here
// rather than called: Election.Campaign, when cancelled, resigns with the
// client's context and no deadline, which hangs while etcd is unreachable
// and would keep Run from returning, and its wait does not notice that the
// candidate's own key is gone. Here every check of "am I first?" is one
// transaction that also requires the candidate's key to still exist at its
// create revision, so a win is never reported for a lease that expired
// while waiting (phantom leadership).
func (m *Member) candidate(ctx context.Context, sess *concurrency.Session, end context.CancelCauseFunc) {
	retry := backoff{min: retryMin, max: retryMax}
	for {
		if !m.awaitEligible(ctx) {
			return
		}
		term, err := m.campaign(ctx, sess)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errNotEligible):
			m.log.Info("left the election: no longer eligible")
			continue
		case errors.Is(err, errCandidacyLost) || leaseGone(err):
			m.etcdFailed("campaign", err)
			end(err)
			return
		case err != nil:
			m.etcdFailed("campaign", err)
			if !sleepCtx(ctx, retry.next()) {
				return
			}
			continue
		}
		retry.reset()
		m.etcdOK()
		m.runTerm(ctx, sess, term)
	}
}

// awaitEligible waits until Local says the node is eligible and any
// hand-over cooldown has passed. It returns false when ctx ends first.
// Only a cooldown is waited out with a timer; eligibility changes are
// signalled.
func (m *Member) awaitEligible(ctx context.Context) bool {
	for {
		changed, viewChanged := m.local.Changed(), m.viewChanged.C()
		var cooldown *time.Timer
		var cooled <-chan time.Time
		if m.localInfo().Eligible {
			left := time.Until(m.cooldownUntil)
			if left <= 0 {
				return true
			}
			cooldown = time.NewTimer(left)
			cooled = cooldown.C
		}
		select {
		case <-changed:
		case <-viewChanged:
		case <-cooled:
		case <-ctx.Done():
		}
		if cooldown != nil {
			cooldown.Stop()
		}
		if ctx.Err() != nil {
			return false
		}
	}
}

// campaign enters the election and waits until the node leads. It stops
// waiting, and withdraws, when the node is no longer eligible; when ctx ends
// the epoch's lease revocation withdraws it.
func (m *Member) campaign(ctx context.Context, sess *concurrency.Session) (*Term, error) {
	cctx, stop := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop(nil)
		wg.Wait()
	}()
	wg.Go(func() {
		for {
			changed, viewChanged := m.local.Changed(), m.viewChanged.C()
			if !m.localInfo().Eligible {
				stop(errNotEligible)
				return
			}
			select {
			case <-changed:
			case <-viewChanged:
			case <-cctx.Done():
				return
			}
		}
	})

	m.setCampaigning(true)
	defer m.setCampaigning(false)
	key := m.keys.candidate(sess.Lease())
	rev, err := m.enter(cctx, key, sess.Lease())
	var term *Term
	if err == nil {
		term, err = m.awaitTurn(cctx, key, rev)
	}
	if err == nil {
		return term, nil
	}
	if ctx.Err() == nil && errors.Is(context.Cause(cctx), errNotEligible) {
		m.withdraw(ctx, key, sess.Lease())
		return nil, errNotEligible
	}
	return nil, err
}

// enter puts the node's election key unless it exists (a previous campaign
// of this session left it), and returns its create revision.
func (m *Member) enter(ctx context.Context, key string, lease clientv3.LeaseID) (int64, error) {
	tctx, cancel := context.WithTimeout(ctx, m.cfg.opTimeout())
	defer cancel()
	resp, err := m.cfg.Client.Txn(tctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, m.cfg.Name, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, err
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return 0, fmt.Errorf("election key %s neither absent nor present", key)
	}
	return kvs[0].CreateRevision, nil
}

// awaitTurn waits until the node's key, created at rev, is the oldest under
// the election prefix, then returns the new term with the backup position
// read in the same transaction.
func (m *Member) awaitTurn(ctx context.Context, key string, rev int64) (*Term, error) {
	ahead := append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1))
	for {
		tctx, cancel := context.WithTimeout(ctx, m.cfg.opTimeout())
		resp, err := m.cfg.Client.Txn(tctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
			Then(clientv3.OpGet(m.keys.election+"/", ahead...), clientv3.OpGet(m.keys.backup)).
			Commit()
		cancel()
		if err != nil {
			return nil, err
		}
		if !resp.Succeeded {
			return nil, errCandidacyLost
		}
		before := resp.Responses[0].GetResponseRange().Kvs
		if len(before) == 0 {
			start, _, _, err := backupFromKvs(resp.Responses[1].GetResponseRange().Kvs)
			if err != nil {
				return nil, err
			}
			return &Term{m: m, key: key, rev: rev, start: start}, nil
		}
		// Wait for the candidate just ahead to go; it waits for the one
		// ahead of it, and so on, so each deletion wakes one candidate.
		if err := m.waitDeleted(ctx, string(before[0].Key), resp.Header.Revision+1); err != nil {
			return nil, err
		}
	}
}

// waitDeleted waits until key is deleted at revision rev or later. A
// compacted revision returns nil: the caller checks again anyway.
func (m *Member) waitDeleted(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range m.cfg.Client.Watch(wctx, key, clientv3.WithRev(rev)) {
		if err := wr.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return nil
			}
			return fmt.Errorf("watch %s: %w", key, err)
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("watch %s: channel closed", key)
}

// withdraw deletes the node's election key while its session lives on.
func (m *Member) withdraw(ctx context.Context, key string, lease clientv3.LeaseID) {
	dctx, cancel := context.WithTimeout(ctx, resignTimeout)
	defer cancel()
	_, err := m.cfg.Client.Txn(dctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		m.etcdFailed("withdraw candidacy", err)
	}
}

// runTerm runs the leader's work for one term and ends the term: resigns
// (unless the session is lost, and with it the key), and after a hand-over
// starts the cooldown.
func (m *Member) runTerm(ctx context.Context, sess *concurrency.Session, term *Term) {
	select {
	case <-sess.Done():
		// Won, but the lease expired meanwhile: nothing to lead.
		m.log.Warn("lost leadership (session expired) right after winning")
		return
	default:
	}
	lctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	m.setLeading(true)
	m.log.Info("became the offloader", zap.String("key", term.key), zap.Int64("rev", term.rev),
		zap.Stringer("backup", term.start))
	var wg sync.WaitGroup
	wg.Go(func() { m.watchStall(lctx, stop) })
	leadErr := m.lead(lctx, term)
	m.setLeading(false)
	stop(errTermEnded) // no effect if the term already ended otherwise
	wg.Wait()

	switch cause := context.Cause(lctx); {
	case errors.Is(context.Cause(ctx), errSessionLost):
		m.log.Warn("lost leadership (session expired)", zap.NamedError("lead_error", leadErr))
	case ctx.Err() != nil:
		m.resign(ctx, term)
		m.log.Info("resigned", zap.String("reason", "shutting down or reconnecting"), zap.NamedError("lead_error", leadErr))
	case errors.Is(cause, errHandOver):
		m.resign(ctx, term)
		m.cooldownUntil = time.Now().Add(m.cfg.StallTimeout)
		m.log.Info("resigned", zap.String("reason", "handed over"), zap.Duration("cooldown", m.cfg.StallTimeout))
	case errors.Is(leadErr, ErrLostLeadership):
		m.log.Warn("lost leadership (election key no longer ours)", zap.Error(leadErr))
		m.resign(ctx, term)
		sleepCtx(ctx, termRetryDelay)
	default:
		m.resign(ctx, term)
		m.log.Warn("resigned", zap.String("reason", "leader work returned"), zap.NamedError("lead_error", leadErr))
		sleepCtx(ctx, termRetryDelay)
	}
}

// resign deletes the term's election key if it is still the term's.
func (m *Member) resign(ctx context.Context, term *Term) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resignTimeout)
	defer cancel()
	_, err := m.cfg.Client.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(term.key), "=", term.rev)).
		Then(clientv3.OpDelete(term.key)).
		Commit()
	if err != nil {
		m.etcdFailed("resign", err)
	}
}

// watchStall ends the term (errHandOver) when the archive lag has exceeded
// MaxLag without the backup position advancing for StallTimeout and a peer
// is eligible to take over. A stall with no eligible peer is only logged:
// handing over to no one would stop archiving altogether.
//
// While the lag is within MaxLag nothing can stall, and it waits for
// Local.Changed with no timer (only WAL arriving makes the lag grow);
// beyond it, it looks every stallCheckInterval rather than at every flush.
func (m *Member) watchStall(ctx context.Context, stop context.CancelCauseFunc) {
	lastBackup := m.local.Info().BackupLSN
	since := time.Now() // start of the current stall
	warned := false
	lagging := false // the lag exceeded MaxLag at the last look
	for {
		changed := m.local.Changed()
		info := m.local.Info()
		now := time.Now()
		lag := archiveLag(info)
		var check *time.Timer
		var checkC <-chan time.Time
		if info.BackupLSN != lastBackup || lag <= m.cfg.MaxLag {
			lastBackup, since, warned, lagging = info.BackupLSN, now, false, false
		} else {
			if !lagging {
				// The lag was within MaxLag until the change that
				// woke us: the stall starts now.
				since, lagging = now, true
			}
			if stalled := now.Sub(since); stalled >= m.cfg.StallTimeout {
				peer, ok := m.anyPeerEligible()
				if ok {
					m.log.Warn(fmt.Sprintf("handing over offloading: archive lag %d bytes with no progress for %s", lag, stalled.Round(time.Millisecond)),
						zap.Uint64("lag", lag), zap.Uint64("max_lag", m.cfg.MaxLag), zap.Stringer("backup_lsn", info.BackupLSN),
						zap.Duration("stalled_for", stalled), zap.String("eligible_peer", peer))
					stop(errHandOver)
					return
				}
				if !warned {
					m.log.Warn("archive lag exceeds the maximum with no progress, but no eligible peer can take over",
						zap.Uint64("lag", lag), zap.Uint64("max_lag", m.cfg.MaxLag), zap.Duration("stalled_for", stalled))
					warned = true
				}
			}
			changed = nil
			check = time.NewTimer(stallCheckInterval)
			checkC = check.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-checkC:
		}
		if check != nil {
			check.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// archiveLag is how far the archive is behind the last complete segment:
// the start of the segment holding the flush position, less the backup
// position.
func archiveLag(info NodeInfo) uint64 {
	end := info.FlushLSN
	if wal.ValidSegmentSize(info.WalSegSize) {
		end = wal.SegmentStart(end, info.WalSegSize)
	}
	if end <= info.BackupLSN {
		return 0
	}
	return uint64(end - info.BackupLSN)
}
