package election

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/internal/notify"
)

// errSessionLost is the cause of an epoch's end when its session's lease
// stopped being kept alive (expired, revoked, or etcd unreachable past the
// TTL).
var errSessionLost = errors.New("etcd session lost")

// Member is one node's participation in one timeline's election: it
// publishes the node's NodeInfo, observes the other nodes, the leader and
// the shared backup position, and campaigns while the node is eligible,
// running the LeadFunc while it leads. Create it with NewMember and call Run
// once.
type Member struct {
	cfg        Config
	cfgErr     error
	tenantID   string
	timelineID string
	addr       string
	keys       keys
	local      Local
	lead       LeadFunc
	log        *zap.Logger

	// cooldownUntil is when a member that handed over may campaign
	// again. Only the candidate goroutine uses it, and epochs (with their
	// candidate goroutine) run one after another.
	cooldownUntil time.Time
	// staleLease is the lease of the previous session when revoking it
	// failed (etcd unreachable): revoked as soon as a new session works,
	// so that the old session's election key stops blocking everyone
	// (this node included) until it expires. Only Run's goroutine uses it.
	staleLease clientv3.LeaseID

	mu          sync.Mutex
	nodes       map[string]NodeInfo // the latest view, this node included
	leader      string              // "" when none is known
	leaderSince time.Time
	lastLeader  string    // the last non-empty leader seen, for LeaderChanges
	lastSince   time.Time // when lastLeader was first seen leading
	shared      BackupPos
	haveShared  bool
	isLeader    bool
	campaigning bool
	eligible    bool
	etcdState   string
	lastErr     string

	// viewChanged wakes the member's own loops when its view of the
	// cluster changed, which Local.Info may depend on (the shared
	// backup position makes a node eligible or not).
	viewChanged notify.Broadcast
}

// NewMember returns the member of node cfg.Name in the election of timeline
// tenantID/timelineID. addr is how peers reach the node (--advertise-pg);
// it fills NodeInfo.Addr when Local leaves it empty. lead is the leader's
// work. log may be nil; the caller's logger names the node and timeline.
func NewMember(cfg Config, tenantID, timelineID, addr string, local Local, lead LeadFunc, log *zap.Logger) *Member {
	cfg = cfg.withDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	m := &Member{
		cfg: cfg, tenantID: tenantID, timelineID: timelineID, addr: addr,
		keys:  newKeys(cfg.Prefix, tenantID, timelineID),
		local: local, lead: lead,
		log:       log,
		nodes:     map[string]NodeInfo{},
		etcdState: "connecting",
	}
	m.cfgErr = errors.Join(cfg.validate(), validName("tenant id", tenantID), validName("timeline id", timelineID))
	if local == nil {
		m.cfgErr = errors.Join(m.cfgErr, errors.New("election: Local is nil"))
	}
	if lead == nil {
		m.cfgErr = errors.Join(m.cfgErr, errors.New("election: LeadFunc is nil"))
	}
	return m
}

// Run takes part in the election until ctx ends, then resigns, revokes the
// session's lease (removing the node's keys) and returns nil, within about
// 1.5s even when etcd does not answer. It returns an error only for an
// invalid configuration. It never gives up on etcd trouble: a failed
// session is rebuilt with a capped, jittered backoff, which recovers from
// expired leases ("requested lease not found"), etcd restarts and etcd
// leader changes. Every goroutine Run starts has ended when it returns.
func (m *Member) Run(ctx context.Context) error {
	if m.cfgErr != nil {
		return m.cfgErr
	}
	if mt := m.cfg.Metrics; mt != nil {
		mt.IsLeader.WithLabelValues(m.tenantID, m.timelineID).Set(0)
		mt.LeaderChanges.WithLabelValues(m.tenantID, m.timelineID)
		defer func() {
			mt.IsLeader.DeleteLabelValues(m.tenantID, m.timelineID)
			mt.LeaderChanges.DeleteLabelValues(m.tenantID, m.timelineID)
		}()
	}
	m.log.Info("joining the offloader election", zap.String("prefix", m.keys.timeline),
		zap.Duration("ttl", m.cfg.TTL), zap.Uint64("max_lag", m.cfg.MaxLag), zap.Duration("stall_timeout", m.cfg.StallTimeout))
	// Capped by the TTL too: after an etcd outage the next attempt comes
	// within a lease TTL of its return.
	retry := backoff{min: retryMin, max: min(retryMax, m.cfg.TTL)}
	for ctx.Err() == nil {
		lived, err := m.epoch(ctx)
		if ctx.Err() != nil {
			break
		}
		if lived >= m.cfg.TTL {
			retry.reset() // the session worked for a while: start over quickly
		}
		d := retry.next()
		if lived > 0 {
			m.log.Warn("etcd session ended; starting a new one", zap.Error(err), zap.Duration("lived", lived.Round(time.Millisecond)), zap.Duration("retry_in", d))
		} else {
			m.log.Warn("could not start an etcd session; retrying", zap.Error(err), zap.Duration("retry_in", d))
		}
		if !sleepCtx(ctx, d) {
			break
		}
	}
	m.log.Info("left the offloader election")
	return nil
}

// epoch runs one etcd session: it publishes, observes and campaigns until
// the session is lost or ctx ends, then revokes the lease. It returns how
// long the session lived and why it ended.
func (m *Member) epoch(ctx context.Context) (time.Duration, error) {
	granted := time.Now() // before the grant: the lease cannot expire before granted+TTL
	sess, err := m.newSession(ctx)
	if err != nil {
		m.etcdFailed("create session", err)
		return 0, err
	}
	started := time.Now()
	m.etcdOK()
	m.log.Debug("etcd session started", zap.String("lease", fmt.Sprintf("%x", int64(sess.Lease()))))
	if m.staleLease != 0 && m.revoke(ctx, m.staleLease) {
		m.staleLease = 0
	}

	ectx, end := context.WithCancelCause(ctx)
	defer end(nil)
	var wg sync.WaitGroup
	wg.Go(func() { m.watchLease(ectx, sess, granted, end) })
	wg.Go(func() { m.publish(ectx, sess, end) })
	wg.Go(func() { m.observe(ectx) })
	wg.Go(func() { m.candidate(ectx, sess, end) })
	wg.Wait()
	cause := context.Cause(ectx)

	// Whatever ended the epoch, drop the lease: a lease that is still
	// alive (the keep-alive stream broke, or we are shutting down) would
	// keep this node's candidacy ahead of others until it expired.
	sess.Orphan()
	if !m.revoke(ctx, sess.Lease()) && ctx.Err() == nil {
		m.staleLease = sess.Lease()
	}
	m.mu.Lock()
	m.leader, m.leaderSince = "", time.Time{} // unknown until observed again
	m.mu.Unlock()
	return time.Since(started), cause
}

// revoke revokes lease with a short timeout and reports whether it is
// gone.
func (m *Member) revoke(ctx context.Context, lease clientv3.LeaseID) bool {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	_, err := m.cfg.Client.Revoke(rctx, lease)
	if err != nil && !leaseGone(err) {
		m.etcdFailed("revoke lease", err)
		return false
	}
	return true
}

// watchLease ends the epoch (errSessionLost) when the session's lease may
// have expired: when the session says so (Done), or when no keep-alive
// response came for a TTL since the last one (since the grant at first).
//
// The second rule is stricter than Session.Done alone, which client/v3
// closes only on a 1s tick and, before the first keep-alive response,
// only after the client's dial timeout plus 1s, longer than short TTLs:
// leader work would go on after the lease could have expired on the
// server. Here it stops by the time the server's lease, renewed at the
// latest when the last response was received, can expire.
func (m *Member) watchLease(ctx context.Context, sess *concurrency.Session, granted time.Time, end context.CancelCauseFunc) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A second listener on the session's keep-alive: the client sends one
	// request stream per lease and copies each response to every
	// listener; cancelling kctx removes only ours.
	renewals, err := m.cfg.Client.KeepAlive(kctx, sess.Lease())
	if err != nil {
		end(fmt.Errorf("follow lease keep-alives: %w", err))
		return
	}
	expiry := time.NewTimer(time.Until(granted.Add(m.cfg.TTL)))
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			end(errSessionLost)
			return
		case resp, ok := <-renewals:
			if !ok {
				end(errSessionLost)
				return
			}
			expiry.Reset(time.Duration(resp.TTL) * time.Second)
		case <-expiry.C:
			m.log.Warn("etcd lease not renewed within its TTL; ending the session", zap.Duration("ttl", m.cfg.TTL))
			end(errSessionLost)
			return
		}
	}
}

// newSession grants a lease with a bounded request (so that an unreachable
// etcd shows in Status instead of blocking) and keeps it alive until ctx
// ends or the session is orphaned.
func (m *Member) newSession(ctx context.Context) (*concurrency.Session, error) {
	ttl := ttlSeconds(m.cfg.TTL)
	gctx, cancel := context.WithTimeout(ctx, m.cfg.opTimeout())
	lease, err := m.cfg.Client.Grant(gctx, ttl)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	sess, err := concurrency.NewSession(m.cfg.Client, concurrency.WithLease(lease.ID),
		concurrency.WithTTL(int(ttl)), concurrency.WithContext(ctx))
	if err != nil {
		m.revoke(ctx, lease.ID)
		return nil, fmt.Errorf("keep lease alive: %w", err)
	}
	return sess, nil
}

// Status returns the member's current state.
func (m *Member) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{
		Leader:      m.leader,
		IsLeader:    m.isLeader,
		Campaigning: m.campaigning,
		Eligible:    m.eligible,
		Etcd:        m.etcdState,
		LastError:   m.lastErr,
		Peers:       m.peersLocked(),
	}
	if m.leader != "" {
		since := m.leaderSince
		st.LeaderSince = &since
	}
	if m.haveShared {
		st.BackupLSN = m.shared.LSN.String()
	}
	return st
}

// Peers returns the other live nodes of the timeline (not this one) from
// the latest view, sorted by name.
func (m *Member) Peers() []NodeInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peersLocked()
}

func (m *Member) peersLocked() []NodeInfo {
	peers := make([]NodeInfo, 0, len(m.nodes))
	for name, n := range m.nodes {
		if name != m.cfg.Name {
			peers = append(peers, n)
		}
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	return peers
}

// Shared returns the shared backup position last seen in etcd, and whether
// one was seen.
func (m *Member) Shared() (BackupPos, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shared, m.haveShared
}

// anyPeerEligible reports whether some other live node can take over
// offloading.
func (m *Member) anyPeerEligible() (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, n := range m.nodes {
		if name != m.cfg.Name && n.Eligible {
			return name, true
		}
	}
	return "", false
}

// localInfo returns Local.Info with the node's name and address filled in,
// and records its eligibility for Status.
func (m *Member) localInfo() NodeInfo {
	info := m.local.Info()
	info.Name = m.cfg.Name
	if info.Addr == "" {
		info.Addr = m.addr
	}
	m.mu.Lock()
	m.eligible = info.Eligible
	m.mu.Unlock()
	return info
}

func (m *Member) setCampaigning(on bool) {
	m.mu.Lock()
	m.campaigning = on
	m.mu.Unlock()
}

func (m *Member) setLeading(on bool) {
	m.mu.Lock()
	m.isLeader = on
	m.mu.Unlock()
	if mt := m.cfg.Metrics; mt != nil {
		v := 0.0
		if on {
			v = 1
		}
		mt.IsLeader.WithLabelValues(m.tenantID, m.timelineID).Set(v)
	}
}

// etcdOK records that an etcd request succeeded.
func (m *Member) etcdOK() {
	m.mu.Lock()
	m.etcdState = "connected"
	m.mu.Unlock()
}

// etcdFailed counts and logs a failed etcd operation and records it for
// Status.
func (m *Member) etcdFailed(op string, err error) {
	if mt := m.cfg.Metrics; mt != nil {
		mt.EtcdErrors.Inc()
	}
	msg := op + ": " + err.Error()
	m.mu.Lock()
	m.lastErr = msg
	if isUnreachable(err) {
		m.etcdState = "unreachable: " + err.Error()
	}
	m.mu.Unlock()
	m.log.Warn("etcd operation failed", zap.String("op", op), zap.Error(err))
}

// isUnreachable tells errors that say nothing answered (timeouts,
// unavailable) from answers that refused a request.
func isUnreachable(err error) bool {
	var etcdErr rpctypes.EtcdError
	return !errors.As(err, &etcdErr) || errors.Is(err, rpctypes.ErrNoLeader) ||
		errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrLeaderChanged)
}

// leaseGone reports whether err says the session's lease no longer exists,
// which no retry within the session can fix.
func leaseGone(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound)
}

// backoff yields capped, jittered, doubling delays.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	// Between half and all of the current step, so that members that
	// failed together do not retry together.
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleepCtx waits d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
