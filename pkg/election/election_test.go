package election

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestThreeMembers: one leader at a time, everyone sees everyone, and the
// leader's Advance reaches every node's AdoptBackup and never goes back.
func TestThreeMembers(t *testing.T) {
	_, c, ctx, cfg := setup(t)
	// Metrics of their own, as if each node were a process.
	metrics := map[string]*Metrics{}
	var nodes []*node
	for _, name := range []string{"a", "b", "c"} {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
		metrics[name] = cfg.Metrics
		nodes = append(nodes, startNode(t, cfg, name, newFakeLocal(true)))
	}

	leader := waitLeader(t, ctx, c, 10*time.Second, nodes...)
	// Everyone sees the two others, with their published info.
	eventually(t, 5*time.Second, "peers", forEach(nodes, func(n *node) error {
		var names []string
		for _, p := range n.m.Peers() {
			names = append(names, p.Name)
			if p.Addr != p.Name+".example:5454" || p.FlushLSN != 0x3000060 || p.WalSegSize != segSize || !p.Eligible {
				return fmt.Errorf("%s sees peer %+v", n.name, p)
			}
		}
		want := slices.DeleteFunc([]string{"a", "b", "c"}, func(s string) bool { return s == n.name })
		if !slices.Equal(names, want) {
			return fmt.Errorf("%s sees peers %v, want %v", n.name, names, want)
		}
		return nil
	}))
	// The others wait in the election.
	eventually(t, 5*time.Second, "followers campaigning", forEach(nodes, func(n *node) error {
		if st := n.m.Status(); st.Campaigning == (n == leader) || st.Etcd != "connected" || !st.Eligible {
			return fmt.Errorf("%s: %+v", n.name, st)
		}
		return nil
	}))
	// Only one leads, for a while.
	during(t, time.Second, "a single leader", func() error {
		_, err := agreedLeader(ctx, c, nodes...)
		return err
	})
	for _, n := range nodes {
		want := 0.0
		if n == leader {
			want = 1
		}
		if got := metricValue(t, metrics[n.name].IsLeader.WithLabelValues(testTenant, testTimeline)); got != want {
			t.Errorf("%s: is_leader = %v, want %v", n.name, got, want)
		}
	}

	term := leader.current().term
	if term.Start() != (BackupPos{}) {
		t.Fatalf("term start %v, want none", term.Start())
	}
	p1 := pos(1, 0x5000000)
	advance(t, ctx, term, p1)
	adopted := func(want BackupPos) func() error {
		return forEach(nodes, func(n *node) error {
			if got, ok := n.local.lastAdopted(); !ok || got != want {
				return fmt.Errorf("%s adopted %v (%v), want %v", n.name, got, ok, want)
			}
			if got, ok := n.m.Shared(); !ok || got != want {
				return fmt.Errorf("%s shares %v (%v), want %v", n.name, got, ok, want)
			}
			if got := n.m.Status().BackupLSN; got != want.LSN.String() {
				return fmt.Errorf("%s status backup %s, want %s", n.name, got, want.LSN)
			}
			return nil
		})
	}
	eventually(t, 5*time.Second, "adopt "+p1.String(), adopted(p1))

	// Lower or equal positions are no-ops.
	for _, p := range []BackupPos{pos(1, 0x4000000), p1, pos(0, 0x9000000)} {
		advance(t, ctx, term, p)
		if got, err := storedBackup(ctx, c); err != nil || got != p1.String() {
			t.Fatalf("after Advance(%v): stored %q (%v), want %s", p, got, err, p1)
		}
	}
	// A higher timeline is ahead whatever its LSN.
	p2 := pos(2, 0x100)
	advance(t, ctx, term, p2)
	eventually(t, 5*time.Second, "adopt "+p2.String(), adopted(p2))
	if got, _ := storedBackup(ctx, c); got != "00000002/0000000000000100" {
		t.Fatalf("stored %q", got)
	}

	// The leader leaves: another takes over, seeing the shared position
	// as its term's start, and the change is counted.
	rest := slices.DeleteFunc(slices.Clone(nodes), func(n *node) bool { return n == leader })
	for _, n := range rest {
		if got := metricValue(t, metrics[n.name].LeaderChanges.WithLabelValues(testTenant, testTimeline)); got != 0 {
			t.Errorf("%s: leader_changes_total %v before any change", n.name, got)
		}
	}
	leader.stop(t)
	if got := seriesCount(metrics[leader.name].IsLeader); got != 0 {
		t.Errorf("%s: %d is_leader series left after Run returned", leader.name, got)
	}
	next := waitLeader(t, ctx, c, 10*time.Second, rest...)
	if got := next.current().term.Start(); got != p2 {
		t.Fatalf("new term starts at %v, want %v", got, p2)
	}
	eventually(t, 5*time.Second, "leader change counted", forEach(rest, func(n *node) error {
		if got := metricValue(t, metrics[n.name].LeaderChanges.WithLabelValues(testTenant, testTimeline)); got != 1 {
			return fmt.Errorf("%s: leader_changes_total %v", n.name, got)
		}
		return nil
	}))
	for _, n := range rest {
		if len(n.m.Peers()) != 1 {
			eventually(t, 5*time.Second, n.name+" sees one peer", func() error {
				if p := n.m.Peers(); len(p) != 1 {
					return fmt.Errorf("peers %v", p)
				}
				return nil
			})
		}
	}
}

// TestIneligibleMember: a node that is not eligible never campaigns; once
// eligible it waits in the election, withdraws when no longer eligible, and
// leads after the leader leaves.
func TestIneligibleMember(t *testing.T) {
	_, c, ctx, cfg := setup(t)
	a := startNode(t, cfg, "a", newFakeLocal(true))
	b := startNode(t, cfg, "b", newFakeLocal(false))
	waitLeader(t, ctx, c, 10*time.Second, a, b)
	eventually(t, 5*time.Second, "b seen as a peer", func() error {
		if p := a.m.Peers(); len(p) != 1 || p[0].Name != "b" || p[0].Eligible {
			return fmt.Errorf("a's peers %+v", p)
		}
		return nil
	})
	onlyA := func() error {
		if err := candidatesAre(ctx, c, "a"); err != nil {
			return err
		}
		if st := b.m.Status(); st.Campaigning || st.IsLeader || st.Eligible || st.Leader != "a" {
			return fmt.Errorf("b: %+v", st)
		}
		return nil
	}
	during(t, time.Second, "only a campaigns", onlyA)

	b.local.setEligible(true)
	eventually(t, 5*time.Second, "b campaigns", func() error { return campaignsAmong(ctx, c, b, "a", "b") })
	b.local.setEligible(false)
	eventually(t, 5*time.Second, "b withdraws", onlyA)
	b.local.setEligible(true)
	eventually(t, 5*time.Second, "b campaigns again", func() error { return candidatesAre(ctx, c, "a", "b") })
	a.stop(t)
	waitLeader(t, ctx, c, 10*time.Second, b)
}

// TestFencing: the leader's lease is revoked behind its back (as if it had
// been paused past its TTL). Another node takes over; the former leader's
// term can no longer write, its work is stopped, and it rejoins as a
// candidate with a new session.
func TestFencing(t *testing.T) {
	_, c, ctx, cfg := setup(t)
	a := startNode(t, cfg, "a", newFakeLocal(true))
	waitLeader(t, ctx, c, 10*time.Second, a)
	b := startNode(t, cfg, "b", newFakeLocal(true))
	eventually(t, 5*time.Second, "b campaigns", func() error { return campaigning(b) })
	runA := a.current()
	advance(t, ctx, runA.term, pos(1, 0x1000000))

	lease := revokeNodeLease(t, ctx, c, "a")
	revoked := time.Now()

	// b wins and advances.
	eventually(t, 10*time.Second, "b leads", func() error {
		if b.current() == nil {
			return errors.New("b runs no term")
		}
		return nil
	})
	p := pos(1, 0x5000000)
	advance(t, ctx, b.current().term, p)
	// a's stale term is fenced, whether or not a has noticed yet.
	err := runA.term.Advance(ctx, pos(1, 0x9000000))
	if !errors.Is(err, ErrLostLeadership) {
		t.Fatalf("stale Advance: %v, want ErrLostLeadership", err)
	}
	if got, _ := storedBackup(ctx, c); got != p.String() {
		t.Fatalf("stored %q after the stale Advance, want %s", got, p)
	}
	// a's work is stopped within about a TTL.
	waitEnded(t, runA, revoked, cfg.TTL+3*time.Second, "a's", "its lease was revoked")
	// a comes back with a new session and waits behind b.
	eventually(t, 10*time.Second, "a rejoins", func() error {
		if err := renewedLease(ctx, c, "a", lease); err != nil {
			return err
		}
		if err := candidatesAre(ctx, c, "b", "a"); err != nil {
			return err
		}
		if st := a.m.Status(); st.IsLeader || !st.Campaigning || st.Leader != "b" {
			return fmt.Errorf("a: %+v", st)
		}
		return nil
	})
	waitLeader(t, ctx, c, 5*time.Second, a, b)
}

// TestCandidateLeaseRevoked: a candidate waiting in the election loses its
// lease ("requested lease not found" for anything it does with it); it
// builds a new session, campaigns again and leads once the leader leaves.
func TestCandidateLeaseRevoked(t *testing.T) {
	_, c, ctx, cfg := setup(t)
	a := startNode(t, cfg, "a", newFakeLocal(true))
	waitLeader(t, ctx, c, 10*time.Second, a)
	b := startNode(t, cfg, "b", newFakeLocal(true))
	eventually(t, 5*time.Second, "b campaigns", func() error { return candidatesAre(ctx, c, "a", "b") })
	lease := revokeNodeLease(t, ctx, c, "b")
	// Make b publish at once, with the revoked lease if it has not noticed.
	b.local.update(func(i *NodeInfo) { i.FlushLSN += 0x100 })

	eventually(t, 10*time.Second, "b recovers", func() error {
		if err := renewedLease(ctx, c, "b", lease); err != nil {
			return err
		}
		return campaignsAmong(ctx, c, b, "a", "b")
	})
	if a.termCount() != 1 || a.current() == nil {
		t.Fatalf("a's leadership was disturbed: %d terms", a.termCount())
	}
	a.stop(t)
	waitLeader(t, ctx, c, 10*time.Second, b)
}

// TestEtcdRestart: etcd restarts (data kept) under campaigning and leading
// members; afterwards one leads again and can advance.
func TestEtcdRestart(t *testing.T) {
	s, c, ctx, cfg := setup(t)
	nodes := startNodes(t, cfg, "a", "b", "c")
	leader := waitLeader(t, ctx, c, 10*time.Second, nodes...)
	advance(t, ctx, leader.current().term, pos(1, 0x2000000))

	s.Restart()
	restarted := time.Now()
	leader = waitLeader(t, ctx, c, cfg.TTL+5*time.Second, nodes...)
	t.Logf("%s leads %s after the restart", leader.name, time.Since(restarted).Round(time.Millisecond))
	p := pos(1, 0x4000000)
	eventually(t, 5*time.Second, "advance after restart", func() error {
		run := leader.current()
		if run == nil {
			return errors.New("leader runs no term")
		}
		return run.term.Advance(ctx, p)
	})
	eventually(t, 5*time.Second, "everyone adopts", forEach(nodes, func(n *node) error {
		if got, _ := n.local.lastAdopted(); got != p {
			return fmt.Errorf("%s adopted %v", n.name, got)
		}
		return nil
	}))
}

// TestEtcdDown: with etcd gone, the leader's work stops within about a
// TTL; when etcd is back, someone leads again.
func TestEtcdDown(t *testing.T) {
	s, c, ctx, cfg := setup(t)
	cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	nodes := startNodes(t, cfg, "a", "b")
	leader := waitLeader(t, ctx, c, 10*time.Second, nodes...)
	run := leader.current()

	s.Stop()
	waitEnded(t, run, time.Now(), cfg.TTL+3*time.Second, "the leader's", "etcd went down")
	eventually(t, 5*time.Second, "status shows etcd unreachable", forEach(nodes, func(n *node) error {
		if st := n.m.Status(); st.IsLeader || st.Leader != "" || len(st.Etcd) < 12 || st.Etcd[:12] != "unreachable:" {
			return fmt.Errorf("%s: leader %v/%q etcd %q", n.name, st.IsLeader, st.Leader, st.Etcd)
		}
		return nil
	}))
	if got := metricValue(t, cfg.Metrics.EtcdErrors); got == 0 {
		t.Error("no etcd errors counted")
	}

	s.Restart()
	restarted := time.Now()
	leader = waitLeader(t, ctx, c, cfg.TTL+10*time.Second, nodes...)
	t.Logf("%s leads %s after etcd came back", leader.name, time.Since(restarted).Round(time.Millisecond))
	advance(t, ctx, leader.current().term, pos(1, 0x2000000))
	eventually(t, 5*time.Second, "etcd connected", forEach(nodes, func(n *node) error {
		if st := n.m.Status(); st.Etcd != "connected" {
			return fmt.Errorf("%s: etcd %q", n.name, st.Etcd)
		}
		return nil
	}))
}

// TestEtcdPaused: etcd hangs (SIGSTOP) with connections open, so requests
// and keep-alives go unanswered rather than failing. The leader's work
// stops within about a TTL; after etcd resumes (and expires the leases that
// were not renewed) one node leads again, with a working fence.
func TestEtcdPaused(t *testing.T) {
	s, c, ctx, cfg := setup(t)
	nodes := startNodes(t, cfg, "a", "b")
	leader := waitLeader(t, ctx, c, 10*time.Second, nodes...)
	run := leader.current()

	s.Pause()
	paused := time.Now()
	waitEnded(t, run, paused, cfg.TTL+time.Second, "the leader's", "etcd hung")
	// Keep it hung past the TTL, so that etcd expires the leases when it
	// resumes.
	noLeader := forEach(nodes, func(n *node) error {
		if n.m.Status().IsLeader {
			return fmt.Errorf("%s leads", n.name)
		}
		return nil
	})
	eventually(t, time.Second, "leader status cleared", noLeader)
	during(t, cfg.TTL-time.Since(paused)+500*time.Millisecond, "no one leads while etcd hangs", noLeader)
	s.Resume()
	resumed := time.Now()
	leader = waitLeader(t, ctx, c, cfg.TTL+10*time.Second, nodes...)
	t.Logf("%s leads %s after etcd resumed", leader.name, time.Since(resumed).Round(time.Millisecond))
	if err := run.term.Advance(ctx, pos(1, 0x2000000)); !errors.Is(err, ErrLostLeadership) {
		t.Fatalf("Advance of the term from before the hang: %v", err)
	}
	advance(t, ctx, leader.current().term, pos(1, 0x2000000))
}

// stalledLocal is an eligible node whose archive is far behind and does not
// move.
func stalledLocal() *fakeLocal {
	l := newFakeLocal(true)
	l.info.FlushLSN = 0x40000060 // 1 GiB in
	l.info.BackupLSN = 0x1000000
	return l
}

// TestHandOver: a leader whose archive is stuck hands over to an eligible
// peer and does not take the leadership back during its cooldown; without
// an eligible peer it keeps leading.
func TestHandOver(t *testing.T) {
	_, c, ctx, cfg := setup(t)
	cfg.MaxLag = 64 << 20
	cfg.StallTimeout = 2 * time.Second

	a := startNode(t, cfg, "a", stalledLocal())
	waitLeader(t, ctx, c, 10*time.Second, a)
	runA := a.current()
	b := startNode(t, cfg, "b", newFakeLocal(false))

	// No eligible peer: a keeps its term past the stall timeout.
	eventually(t, 5*time.Second, "a sees b", func() error {
		if len(a.m.Peers()) != 1 {
			return errors.New("not yet")
		}
		return nil
	})
	during(t, cfg.StallTimeout+2*stallCheckInterval, "a keeps leading", func() error {
		if runA.isEnded() || a.termCount() != 1 {
			return fmt.Errorf("a's term ended (%d terms) with no eligible peer", a.termCount())
		}
		return nil
	})

	// b becomes eligible: a hands over to it at once, the stall being
	// long enough already.
	b.local.setEligible(true)
	eligible := time.Now()
	eventually(t, cfg.StallTimeout+cfg.TTL+3*time.Second, "b takes over", func() error {
		_, err := agreedLeader(ctx, c, a, b)
		if err == nil && b.m.Status().IsLeader {
			return nil
		}
		return fmt.Errorf("b does not lead yet (%v)", err)
	})
	handedOver := time.Now()
	t.Logf("handed over %s after b became eligible", handedOver.Sub(eligible).Round(time.Millisecond))
	if !runA.isEnded() {
		t.Fatal("a's work still runs")
	}
	// Cooldown: a does not campaign, let alone lead.
	during(t, cfg.StallTimeout-time.Since(handedOver)-200*time.Millisecond, "a's cooldown", func() error {
		if st := a.m.Status(); st.IsLeader || st.Campaigning {
			return fmt.Errorf("a: %+v", st)
		}
		return nil
	})
	// Then a waits behind b, which has no lag and keeps leading.
	eventually(t, cfg.StallTimeout+5*time.Second, "a campaigns again", func() error { return candidatesAre(ctx, c, "b", "a") })
	if _, err := agreedLeader(ctx, c, a, b); err != nil || !b.m.Status().IsLeader {
		t.Fatalf("after the cooldown: %v", err)
	}
}

// TestShutdown: cancelling Run returns promptly, deletes the node's keys,
// revokes its lease and leaves no goroutine behind, also when etcd does not
// answer.
func TestShutdown(t *testing.T) {
	s, c, ctx, cfg := setup(t)

	// Warm the client up (lease keep-alive and watch machinery start once
	// per client), so that the goroutine count can return to its level.
	sess, err := c.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	if _, err := c.KeepAlive(kctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	kcancel()
	wctx, wcancel := context.WithCancel(ctx)
	c.Watch(wctx, "/warm-up")
	wcancel()
	if _, err := c.Revoke(ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()

	nodes := startNodes(t, cfg, "a", "b")
	waitLeader(t, ctx, c, 10*time.Second, nodes...)
	leader, other := nodes[0], nodes[1]
	if other.m.Status().IsLeader {
		leader, other = other, leader
	}
	lease, err := nodeLease(ctx, c, leader.name)
	if err != nil || lease == 0 {
		t.Fatalf("lease: %v %v", lease, err)
	}
	leader.stopPromptly(t)
	if l, err := nodeLease(ctx, c, leader.name); err != nil || l != 0 {
		t.Errorf("node key still there (lease %x, %v)", l, err)
	}
	ttl, err := c.TimeToLive(ctx, lease)
	if err != nil || ttl.TTL != -1 {
		t.Errorf("lease after shutdown: %+v, %v", ttl, err)
	}
	waitLeader(t, ctx, c, 5*time.Second, other)
	other.stopPromptly(t)
	if err := candidatesAre(ctx, c); err != nil {
		t.Errorf("candidates left: %v", err)
	}
	eventually(t, 5*time.Second, "goroutines end", func() error {
		if err := noElectionGoroutines(); err != nil {
			return err
		}
		if n := runtime.NumGoroutine(); n > baseline {
			return fmt.Errorf("%d goroutines, %d before", n, baseline)
		}
		return nil
	})

	// etcd hangs: shutdown still returns promptly and leaks nothing.
	d := startNode(t, cfg, "d", newFakeLocal(true))
	waitLeader(t, ctx, c, 10*time.Second, d)
	s.Pause()
	d.stopPromptly(t)
	eventually(t, 5*time.Second, "goroutines end (etcd paused)", noElectionGoroutines)
	s.Resume()
}
