package election

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/pgsafekeeper/safekeeper/internal/etcdtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

const (
	testTenant   = "0123456789abcdef0123456789abcdef"
	testTimeline = "fedcba9876543210fedcba9876543210"
	segSize      = 16 << 20
	// pollEvery is how often eventually re-checks its condition.
	pollEvery = 20 * time.Millisecond
)

// fakeLocal is a Local whose state the test sets.
type fakeLocal struct {
	mu      sync.Mutex
	info    NodeInfo
	changed chan struct{}
	adopted []BackupPos
	reads   int // calls of Info
}

func newFakeLocal(eligible bool) *fakeLocal {
	return &fakeLocal{
		info: NodeInfo{
			TLI: 1, FlushLSN: 0x3000060, LocalStartLSN: 0x1000000, BackupLSN: 0x3000000,
			WalSegSize: segSize, State: "streaming", Eligible: eligible,
		},
		changed: make(chan struct{}),
	}
}

func (f *fakeLocal) Info() NodeInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.info
}

func (f *fakeLocal) infoReads() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

func (f *fakeLocal) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeLocal) AdoptBackup(pos BackupPos) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adopted = append(f.adopted, pos)
}

// update changes the state and wakes whoever waits on Changed.
func (f *fakeLocal) update(fn func(*NodeInfo)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.info)
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeLocal) setEligible(e bool) { f.update(func(i *NodeInfo) { i.Eligible = e }) }

func (f *fakeLocal) lastAdopted() (BackupPos, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.adopted) == 0 {
		return BackupPos{}, false
	}
	return f.adopted[len(f.adopted)-1], true
}

// termRun is one call of a node's LeadFunc.
type termRun struct {
	term  *Term
	ctx   context.Context
	ended chan struct{} // closed when the LeadFunc returned
}

func (r *termRun) isEnded() bool {
	select {
	case <-r.ended:
		return true
	default:
		return false
	}
}

// node is a Member running in the background, with a LeadFunc that records
// its terms and works until its context ends.
type node struct {
	name   string
	m      *Member
	local  *fakeLocal
	cancel context.CancelFunc
	done   chan error // Run's result

	mu   sync.Mutex
	runs []*termRun
}

func (n *node) lead(ctx context.Context, term *Term) error {
	r := &termRun{term: term, ctx: ctx, ended: make(chan struct{})}
	n.mu.Lock()
	n.runs = append(n.runs, r)
	n.mu.Unlock()
	<-ctx.Done()
	close(r.ended)
	return nil
}

// current returns the running term, or nil.
func (n *node) current() *termRun {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.runs) == 0 || n.runs[len(n.runs)-1].isEnded() {
		return nil
	}
	return n.runs[len(n.runs)-1]
}

func (n *node) termCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.runs)
}

// startNode runs a member named name with cfg until stop or the end of the
// test.
func startNode(t *testing.T, cfg Config, name string, local *fakeLocal) *node {
	t.Helper()
	cfg.Name = name
	n := &node{name: name, local: local, done: make(chan error, 1)}
	n.m = NewMember(cfg, testTenant, testTimeline, name+".example:5454", local, n.lead, zaptest.NewLogger(t).Named(name))
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- n.m.Run(ctx) }()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop cancels Run and waits for it, returning how long that took. A
// second call does nothing.
func (n *node) stop(t *testing.T) time.Duration {
	t.Helper()
	if n.cancel == nil {
		return 0
	}
	start := time.Now()
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("%s: Run returned %v", n.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Run did not return within 30s of cancellation", n.name)
	}
	return time.Since(start)
}

func testConfig(c *clientv3.Client) Config {
	return Config{Client: c, TTL: 2 * time.Second}
}

// eventually polls cond until it returns nil or timeout passes, then fails
// the test with cond's last error.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(pollEvery)
	}
}

// during checks cond at every poll for d and fails the test at its first
// error.
func during(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := cond(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(pollEvery)
	}
}

func testKeys() keys { return newKeys(DefaultPrefix, testTenant, testTimeline) }

// etcdLeader returns the value of the first-created election key: the
// leader's name, or "" when there is no candidate.
func etcdLeader(ctx context.Context, c *clientv3.Client) (string, error) {
	resp, err := c.Get(ctx, testKeys().election+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// candidates returns the names of the election's candidates.
func candidates(ctx context.Context, c *clientv3.Client) ([]string, error) {
	resp, err := c.Get(ctx, testKeys().election+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, kv := range resp.Kvs {
		names = append(names, string(kv.Value))
	}
	return names, nil
}

// nodeLease returns the lease of name's node key, 0 when it is absent.
func nodeLease(ctx context.Context, c *clientv3.Client, name string) (clientv3.LeaseID, error) {
	resp, err := c.Get(ctx, testKeys().nodes+name)
	if err != nil || len(resp.Kvs) == 0 {
		return 0, err
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease), nil
}

// storedBackup returns the raw backup_lsn value, "" when absent.
func storedBackup(ctx context.Context, c *clientv3.Client) (string, error) {
	resp, err := c.Get(ctx, testKeys().backup)
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	return string(resp.Kvs[0].Value), nil
}

// agreedLeader checks that exactly one of the running nodes leads (Status
// and a running LeadFunc), that every running node sees it as the leader,
// and that etcd agrees; it returns the leader.
func agreedLeader(ctx context.Context, c *clientv3.Client, nodes ...*node) (*node, error) {
	var leader *node
	for _, n := range nodes {
		if n.m.Status().IsLeader {
			if leader != nil {
				return nil, fmt.Errorf("both %s and %s lead", leader.name, n.name)
			}
			leader = n
		}
	}
	if leader == nil {
		return nil, fmt.Errorf("no leader")
	}
	if leader.current() == nil {
		return nil, fmt.Errorf("%s leads but runs no LeadFunc", leader.name)
	}
	for _, n := range nodes {
		if got := n.m.Status().Leader; got != leader.name {
			return nil, fmt.Errorf("%s sees leader %q, want %s", n.name, got, leader.name)
		}
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	got, err := etcdLeader(qctx, c)
	if err != nil {
		return nil, err
	}
	if got != leader.name {
		return nil, fmt.Errorf("etcd's leader is %q, members agree on %s", got, leader.name)
	}
	return leader, nil
}

// waitLeader waits until agreedLeader holds and returns the leader.
func waitLeader(t *testing.T, ctx context.Context, c *clientv3.Client, timeout time.Duration, nodes ...*node) *node {
	t.Helper()
	var leader *node
	eventually(t, timeout, "one agreed leader", func() error {
		var err error
		leader, err = agreedLeader(ctx, c, nodes...)
		return err
	})
	return leader
}

// electionGoroutines returns the stacks of goroutines running code of this
// package other than its tests.
func electionGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, line := range strings.Split(g, "\n") {
			line = strings.TrimSpace(line)
			if strings.Contains(line, "/pkg/election/") && !strings.Contains(line, "_test.go") {
				found = append(found, g)
				break
			}
		}
	}
	return found
}

// pos is shorthand for test positions.
func pos(tli uint32, lsn uint64) BackupPos { return BackupPos{TLI: tli, LSN: wal.LSN(lsn)} }

// setup starts etcd and a client for it, and returns them with a context
// that ends after a minute or with the test, and a test Config on the
// client.
func setup(t *testing.T) (*etcdtest.Server, *clientv3.Client, context.Context, Config) {
	t.Helper()
	s := etcdtest.Start(t)
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return s, c, ctx, testConfig(c)
}

// startNodes starts an eligible node with cfg for each of names.
func startNodes(t *testing.T, cfg Config, names ...string) []*node {
	t.Helper()
	var nodes []*node
	for _, name := range names {
		nodes = append(nodes, startNode(t, cfg, name, newFakeLocal(true)))
	}
	return nodes
}

// stopPromptly stops n and fails the test if Run took more than 2s to
// return.
func (n *node) stopPromptly(t *testing.T) {
	t.Helper()
	if d := n.stop(t); d > 2*time.Second {
		t.Errorf("%s: Run returned %s after cancellation", n.name, d)
	}
}

// forEach returns a condition that holds when check passes for every one
// of nodes.
func forEach(nodes []*node, check func(n *node) error) func() error {
	return func() error {
		for _, n := range nodes {
			if err := check(n); err != nil {
				return err
			}
		}
		return nil
	}
}

// candidatesAre checks that the election's candidates are want, oldest
// first.
func candidatesAre(ctx context.Context, c *clientv3.Client, want ...string) error {
	names, err := candidates(ctx, c)
	if err != nil {
		return err
	}
	if !slices.Equal(names, want) {
		return fmt.Errorf("candidates %v, want %v", names, want)
	}
	return nil
}

// campaigning checks that n's Status says it campaigns.
func campaigning(n *node) error {
	if st := n.m.Status(); !st.Campaigning {
		return fmt.Errorf("%s does not campaign: %+v", n.name, st)
	}
	return nil
}

// campaignsAmong checks that the candidates are want, oldest first, and
// that n's Status says it campaigns.
func campaignsAmong(ctx context.Context, c *clientv3.Client, n *node, want ...string) error {
	if err := candidatesAre(ctx, c, want...); err != nil {
		return err
	}
	return campaigning(n)
}

// revokeNodeLease revokes the lease of name's node key behind the node's
// back and returns it.
func revokeNodeLease(t *testing.T, ctx context.Context, c *clientv3.Client, name string) clientv3.LeaseID {
	t.Helper()
	lease, err := nodeLease(ctx, c, name)
	if err != nil || lease == 0 {
		t.Fatalf("%s's lease: %v %v", name, lease, err)
	}
	if _, err := c.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	return lease
}

// renewedLease checks that name's node key is there with a lease other
// than old.
func renewedLease(ctx context.Context, c *clientv3.Client, name string, old clientv3.LeaseID) error {
	l, err := nodeLease(ctx, c, name)
	if err != nil {
		return err
	}
	if l == 0 || l == old {
		return fmt.Errorf("%s's node key lease %x (old %x)", name, l, old)
	}
	return nil
}

// advance advances term to p and fails the test if that fails.
func advance(t *testing.T, ctx context.Context, term *Term, p BackupPos) {
	t.Helper()
	if err := term.Advance(ctx, p); err != nil {
		t.Fatalf("Advance(%v): %v", p, err)
	}
}

// waitEnded waits at most timeout for run's LeadFunc to return, and logs
// how long after since (when event happened) it did; whose names run's
// node in messages.
func waitEnded(t *testing.T, run *termRun, since time.Time, timeout time.Duration, whose, event string) {
	t.Helper()
	select {
	case <-run.ended:
		t.Logf("%s work stopped %s after %s", whose, time.Since(since).Round(time.Millisecond), event)
	case <-time.After(timeout):
		t.Fatalf("%s leader context did not end within %s after %s", whose, timeout, event)
	}
}

// noElectionGoroutines checks that no goroutine runs code of this package
// other than its tests.
func noElectionGoroutines() error {
	if g := electionGoroutines(); len(g) != 0 {
		return fmt.Errorf("%d goroutines of the package left:\n%s", len(g), g[0])
	}
	return nil
}

func lsnOf(v uint64) wal.LSN { return wal.LSN(v) }

// metricValue returns the value of a gauge or counter.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	switch {
	case out.Gauge != nil:
		return out.Gauge.GetValue()
	case out.Counter != nil:
		return out.Counter.GetValue()
	}
	t.Fatalf("metric %v is neither a gauge nor a counter", m.Desc())
	return 0
}

// seriesCount returns how many series c has.
func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	n := 0
	for range ch {
		n++
	}
	return n
}
