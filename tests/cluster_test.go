package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgsafekeeper/safekeeper/internal/etcdtest"
	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// The cluster tests run three safekeepers (sk1, sk2, sk3) of one primary
// with synchronous_standby_names = 'ANY 2 (sk1, sk2, sk3)', a real etcd
// and an archive, with 1 MB segments and a short lease.
const (
	clusterTTL     = 2 * time.Second
	clusterSegSize = 1 << 20
)

// clusterStatus is the part of /v1/status the cluster tests read.
type clusterStatus struct {
	archStatus
	Offloader *struct {
		Leader   string `json:"leader"`
		IsLeader bool   `json:"is_leader"`
		Elected  bool   `json:"elected"`
	} `json:"offloader"`
	Peers []struct {
		Name     string `json:"name"`
		Addr     string `json:"addr"`
		FlushLSN string `json:"flush_lsn"`
		Eligible bool   `json:"eligible"`
	} `json:"peers"`
	Upstream struct {
		State     string `json:"state"`
		LastError string `json:"last_error"`
		Recovery  *struct {
			Reason string `json:"reason"`
			Source string `json:"source"`
			Error  string `json:"error"`
		} `json:"recovery"`
	} `json:"upstream"`
}

// clusterStatus fetches /v1/status; ok is false when the node does not
// answer (stopped or paused).
func (s *SK) clusterStatus(t testing.TB) (clusterStatus, bool) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	st, err := timelineStatus[clusterStatus](t, c, s)
	return st, err == nil
}

// testCluster is a primary, etcd, an archive and three safekeepers.
type testCluster struct {
	t       *testing.T
	primary *pgtest.Cluster
	etcd    *etcdtest.Server
	ae      archiveEnv
	sks     []*SK
	// links[i], when set, is the symbolic link through which safekeeper
	// i reaches the file archive (linkedArchive).
	links []string
}

// linkedArchive is a file archive each safekeeper reaches through its own
// symbolic link, so that one of them can be cut off (cutArchive).
func linkedArchive(t *testing.T) archiveEnv {
	ae := fileArchive(t)
	ae.linked = true
	return ae
}

// cutArchive replaces a safekeeper's link to the archive with a file: its
// reads and uploads fail from then on, the others' go on.
func (c *testCluster) cutArchive(sk *SK) {
	c.t.Helper()
	for i, s := range c.sks {
		if s != sk {
			continue
		}
		if err := os.Remove(c.links[i]); err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(c.links[i], []byte("cut off\n"), 0o644); err != nil {
			c.t.Fatal(err)
		}
		return
	}
	c.t.Fatalf("no safekeeper %s", sk.Name)
}

// emptyArchive points a safekeeper's link at an empty directory, as if
// the archive held nothing.
func (c *testCluster) emptyArchive(sk *SK) {
	c.t.Helper()
	for i, s := range c.sks {
		if s == sk {
			if err := os.Remove(c.links[i]); err != nil {
				c.t.Fatal(err)
			}
			if err := os.Symlink(c.t.TempDir(), c.links[i]); err != nil {
				c.t.Fatal(err)
			}
			return
		}
	}
	c.t.Fatalf("no safekeeper %s", sk.Name)
}

// flags are the flags safekeeper i (from 0) of a test cluster gets.
func (c *testCluster) flags(i int, extra ...string) []string {
	url := c.ae.url
	if c.ae.linked {
		for len(c.links) <= i {
			c.links = append(c.links, "")
		}
		dir := strings.TrimPrefix(c.ae.url, "file://")
		c.links[i] = filepath.Join(filepath.Dir(dir), fmt.Sprintf("link%d", i+1))
		if err := os.Symlink(dir, c.links[i]); err != nil {
			c.t.Fatal(err)
		}
		url = "file://" + c.links[i]
	}
	f := []string{
		"--etcd", c.etcd.Endpoint(),
		"--offload-lease-ttl", clusterTTL.String(),
		"--archive", url,
		// The default slot (--name); the harness default is none.
		"--upstream-slot", "",
		// Remove local WAL by the shared backup_lsn.
		"--wal-keep-size", "0",
	}
	f = append(f, c.ae.extra...)
	return append(f, extra...)
}

// startCluster starts the primary (conf added to its settings), etcd and
// three safekeepers, and waits until they have caught up and one of them
// offloads.
func startCluster(t *testing.T, ae archiveEnv, conf map[string]string, extra ...string) *testCluster {
	t.Helper()
	settings := map[string]string{
		"synchronous_standby_names": "ANY 2 (sk1, sk2, sk3)",
		"wal_keep_size":             "1GB", // the primary's files are the reference
	}
	for k, v := range conf {
		settings[k] = v
	}
	c := &testCluster{t: t, etcd: etcdtest.Start(t), ae: ae}
	c.primary = pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1, Conf: settings})
	for i := 0; i < 3; i++ {
		c.sks = append(c.sks, StartSKNamed(t, fmt.Sprintf("sk%d", i+1), c.primary.ConnString(), ae.env, c.flags(i, extra...)...))
	}
	// Nobody campaigns before a segment is complete: there is nothing to
	// archive.
	generateSegments(t, c.primary, 2)
	flush := flushLSNOfPrimary(t, c.primary)
	for _, sk := range c.sks {
		sk.WaitFlush(t, flush, 60*time.Second)
	}
	c.waitLeader(nil, 30*time.Second)
	return c
}

// waitLeader waits until the safekeepers that answer (all but the ones in
// skip) agree on one leader that says it leads, and returns it.
func (c *testCluster) waitLeader(skip map[*SK]bool, timeout time.Duration) *SK {
	c.t.Helper()
	var leader *SK
	pgtest.WaitFor(c.t, timeout, "the safekeepers to agree on one offloader", func() bool {
		leader = c.agreedLeader(skip)
		return leader != nil
	})
	return leader
}

// agreedLeader returns the one leader all answering safekeepers (but
// skip) name, or nil. It fails the test when two claim to lead at once.
// The statuses are read one after the other, so two claims may be from
// either side of a hand-over: the earlier claimants are asked again after
// the last one, and only one that still claims then led at the same time
// as it (a leader that resigned waits out a cooldown before it may lead
// again).
func (c *testCluster) agreedLeader(skip map[*SK]bool) *SK {
	c.t.Helper()
	var leader *SK
	names := map[string]bool{}
	var claimants []*SK
	for _, sk := range c.sks {
		if skip[sk] {
			continue
		}
		st, ok := sk.clusterStatus(c.t)
		if !ok || st.Offloader == nil {
			return nil
		}
		if !st.Offloader.Elected {
			c.t.Fatalf("%s: offloader not elected in a cluster", sk.Name)
		}
		names[st.Offloader.Leader] = true
		if st.Offloader.IsLeader {
			claimants = append(claimants, sk)
			leader = sk
		}
	}
	if len(claimants) > 1 {
		still := 0
		for _, sk := range claimants[:len(claimants)-1] {
			if st, ok := sk.clusterStatus(c.t); ok && st.Offloader != nil && st.Offloader.IsLeader {
				still++
			}
		}
		if still == 0 {
			return nil // a hand-over between the reads
		}
		c.t.Fatalf("%d safekeepers claim to be the offloader at once", still+1)
	}
	if len(names) != 1 || leader == nil || !names[leader.Name] {
		return nil
	}
	return leader
}

func (c *testCluster) sk(name string) *SK {
	for _, s := range c.sks {
		if s.Name == name {
			return s
		}
	}
	c.t.Fatalf("no safekeeper %s", name)
	return nil
}

// backupWatch records every value of the shared backup_lsn key.
type backupWatch struct {
	mu     sync.Mutex
	values []string
}

// watchBackup watches <prefix>/timelines/<tenant>/<timeline>/backup_lsn
// until the test ends.
func watchBackup(t *testing.T, cli *clientv3.Client, id timeline.ID) *backupWatch {
	key := fmt.Sprintf("/safekeeper/timelines/%s/%s/backup_lsn", id.TenantID, id.TimelineID)
	w := &backupWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatalf("etcd get %s: %v", key, err)
	}
	for _, kv := range resp.Kvs {
		w.values = append(w.values, string(kv.Value))
	}
	wch := cli.Watch(ctx, key, clientv3.WithRev(resp.Header.Revision+1))
	go func() {
		defer close(done)
		for wr := range wch {
			w.mu.Lock()
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					w.values = append(w.values, string(ev.Kv.Value))
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// check requires the values never to decrease (they are fixed-width, so
// string order is position order) and returns how many were seen.
func (w *backupWatch) check(t testing.TB) int {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := 1; i < len(w.values); i++ {
		if w.values[i] <= w.values[i-1] {
			t.Fatalf("backup_lsn moved from %s to %s", w.values[i-1], w.values[i])
		}
	}
	return len(w.values)
}

// clusterID is the timeline id every safekeeper of the primary derives.
func clusterID(t testing.TB, primary *pgtest.Cluster) timeline.ID {
	return timeline.IDFromSystemID(primary.SystemID(t))
}

// waitAllArchived waits until every safekeeper answering has archived
// (by the shared backup_lsn) and removed locally every complete segment
// below the primary's current flush position, and returns that boundary.
func (c *testCluster) waitAllArchived(skip map[*SK]bool) wal.LSN {
	c.t.Helper()
	target := wal.SegmentStart(flushLSNOfPrimary(c.t, c.primary), clusterSegSize)
	for _, sk := range c.sks {
		if skip[sk] {
			continue
		}
		pgtest.WaitFor(c.t, 90*time.Second, fmt.Sprintf("%s: backup_lsn and local start to reach %s", sk.Name, target), func() bool {
			st, ok := sk.clusterStatus(c.t)
			return ok && st.lsn(c.t, st.BackupLSN) >= target && st.lsn(c.t, st.LocalStart) >= target
		})
	}
	return target
}

// Issue 7 acceptance 1: three safekeepers of one primary report the same
// (derived) ids; exactly one offloads at any time and their statuses
// agree; every segment is archived once, byte-identical; all three remove
// local WAL by the shared backup_lsn; each uses its own physical slot on
// the primary, read (not re-created) on reconnect.
func TestClusterOneOffloader(t *testing.T) {
	ae, _ := s3Archive(t)
	c := startCluster(t, ae, nil)
	want := clusterID(t, c.primary)
	first, _ := c.sks[0].clusterStatus(t)
	start := first.lsn(t, first.LocalStart)
	for _, sk := range c.sks {
		st, _ := sk.clusterStatus(t)
		if st.TenantID != want.TenantID || st.TimelineID != want.TimelineID {
			t.Fatalf("%s: ids %s/%s, want %s (derived from the system identifier)", sk.Name, st.TenantID, st.TimelineID, want)
		}
		if len(st.Peers) != 2 {
			t.Fatalf("%s sees %d peers, want 2: %+v", sk.Name, len(st.Peers), st.Peers)
		}
		start = min(start, st.lsn(t, st.LocalStart))
	}
	slots := c.primary.QueryValue(t, "SELECT string_agg(slot_name || ':' || slot_type, ',' ORDER BY slot_name) FROM pg_replication_slots")
	if slots != "sk1:physical,sk2:physical,sk3:physical" {
		t.Fatalf("primary's slots: %s", slots)
	}
	cm := startCommitters(t, c.primary, 2, "SELECT txid_current() /* %d */", 30*time.Second, true)
	leaders := map[string]bool{}
	for i := 0; i < 8; i++ {
		generateSegments(t, c.primary, 1)
		if l := c.agreedLeader(nil); l != nil {
			leaders[l.Name] = true
		}
	}
	cm.Stop()
	target := c.waitAllArchived(nil)
	leader := c.waitLeader(nil, 10*time.Second)
	st, _ := leader.clusterStatus(t)
	names := checkArchive(t, ae, st.archStatus, c.primary, wal.SegmentStart(start, clusterSegSize), target)
	var isLeader float64
	for _, sk := range c.sks {
		v, ok := sk.metric(t, "safekeeper_offloader_is_leader{")
		if !ok {
			t.Fatalf("%s: no safekeeper_offloader_is_leader metric", sk.Name)
		}
		isLeader += v
		if s, _ := sk.clusterStatus(t); s.Archive == nil || s.Archive.Conflict != "" {
			t.Fatalf("%s: archive status %+v", sk.Name, s.Archive)
		}
	}
	if isLeader != 1 {
		t.Fatalf("safekeeper_offloader_is_leader sums to %v over the three, want 1", isLeader)
	}
	// "safekeeper cluster status" from etcd: the three, their positions,
	// the offloader, a quorum.
	code, out := runCluster(t, "status", "--etcd", c.etcd.Endpoint(), "--json")
	var cs struct {
		TenantID string `json:"tenant_id"`
		Nodes    []struct {
			Name      string `json:"name"`
			Reachable bool   `json:"reachable"`
			FlushLSN  string `json:"flush_lsn"`
			Offloader bool   `json:"offloader"`
		} `json:"nodes"`
		Quorum bool `json:"quorum"`
	}
	if err := json.Unmarshal([]byte(out), &cs); code != 0 || err != nil || !cs.Quorum || len(cs.Nodes) != 3 || cs.TenantID != want.TenantID {
		t.Fatalf("cluster status --etcd: exit %d, %v\n%s", code, err, out)
	}
	offloaders := 0
	for _, n := range cs.Nodes {
		if !n.Reachable || n.FlushLSN == "" {
			t.Fatalf("cluster status --etcd: %+v\n%s", n, out)
		}
		if n.Offloader {
			offloaders++
		}
	}
	if offloaders != 1 {
		t.Fatalf("cluster status --etcd names %d offloaders\n%s", offloaders, out)
	}
	// A restart finds its slot and does not try to create it again.
	sk2 := c.sk("sk2")
	sk2.Stop()
	sk2.Start()
	sk2.WaitFlush(t, flushLSNOfPrimary(t, c.primary), 30*time.Second)
	if log, _ := os.ReadFile(c.primary.LogFile); bytes.Contains(log, []byte("already exists")) {
		t.Fatalf("the primary logged a slot creation error:\n%s", log)
	}
	t.Logf("%d segments archived once, byte-identical; leaders seen: %v; all three removed local WAL below %s", len(names), leaders, target)
}

// Issue 7 acceptance 2: kill -9 of the offloader under load: another takes
// over within the lease TTL + 5 s; the archive stays gap-free and
// conflict-free.
func TestClusterOffloaderKilled(t *testing.T) {
	ae := fileArchive(t)
	c := startCluster(t, ae, nil)
	first, _ := c.sks[0].clusterStatus(t)
	start := first.lsn(t, first.LocalStart)
	for _, sk := range c.sks {
		st, _ := sk.clusterStatus(t)
		start = min(start, st.lsn(t, st.LocalStart))
	}
	stopLoad := startLoad(t, c.primary)
	generateSegments(t, c.primary, 2)
	old := c.waitLeader(nil, 10*time.Second)
	old.Kill()
	killed := time.Now()
	next := c.waitLeader(map[*SK]bool{old: true}, clusterTTL+5*time.Second)
	took := time.Since(killed)
	generateSegments(t, c.primary, 3)
	stopLoad()
	target := c.waitAllArchived(map[*SK]bool{old: true})
	st, _ := next.clusterStatus(t)
	names := checkArchive(t, ae, st.archStatus, c.primary, wal.SegmentStart(start, clusterSegSize), target)
	t.Logf("%s killed; %s took over after %s; %d segments archived once, gap-free", old.Name, next.Name, took.Round(time.Millisecond), len(names))
}

// Issue 7 acceptance 3: fencing. The offloader is paused (SIGSTOP) past
// its lease; another takes over and advances backup_lsn; the old one,
// resumed, fails its etcd writes, overwrites nothing, logs that it lost
// leadership, stops uploading and campaigns again. backup_lsn never moves
// backwards.
func TestClusterFencing(t *testing.T) {
	ae := fileArchive(t)
	c := startCluster(t, ae, nil)
	w := watchBackup(t, c.etcd.Client(t), clusterID(t, c.primary))
	old := c.waitLeader(nil, 10*time.Second)
	old.signal(syscall.SIGSTOP)
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			old.signal(syscall.SIGCONT)
		}
	})
	skip := map[*SK]bool{old: true}
	// Peers campaign once they hold a segment to archive.
	generateSegments(t, c.primary, 2)
	next := c.waitLeader(skip, clusterTTL+5*time.Second)
	before, _ := next.clusterStatus(t)
	generateSegments(t, c.primary, 3)
	pgtest.WaitFor(t, 60*time.Second, "the new offloader to advance backup_lsn", func() bool {
		st, _ := next.clusterStatus(t)
		return st.lsn(t, st.BackupLSN) > before.lsn(t, before.BackupLSN)
	})
	old.signal(syscall.SIGCONT)
	resumed = true
	pgtest.WaitFor(t, 30*time.Second, "the resumed node to see it is not the offloader", func() bool {
		st, ok := old.clusterStatus(t)
		return ok && st.Offloader != nil && !st.Offloader.IsLeader && st.Offloader.Leader == next.Name
	})
	generateSegments(t, c.primary, 2)
	target := c.waitAllArchived(nil)
	if l := c.waitLeader(nil, 10*time.Second); l != next {
		t.Logf("leadership moved on to %s", l.Name)
	}
	log, _ := os.ReadFile(old.logPath)
	if !bytes.Contains(log, []byte("lost leadership")) {
		t.Fatalf("%s's log does not say it lost leadership", old.Name)
	}
	for _, sk := range c.sks {
		if st, _ := sk.clusterStatus(t); st.Archive == nil || st.Archive.Conflict != "" {
			t.Fatalf("%s: archive status %+v", sk.Name, st.Archive)
		}
	}
	n := w.check(t)
	t.Logf("%s paused and fenced, %s took over; backup_lsn took %d values, never backwards, up to %s", old.Name, next.Name, n, target)
}

// Issue 7 acceptance 4: etcd down for 60 s under synchronous load: commits
// go on through the quorum and none is lost; offloading resumes within the
// lease TTL + 5 s of etcd's return.
func TestClusterEtcdOutage(t *testing.T) {
	ae := fileArchive(t)
	c := startCluster(t, ae, nil)
	c.primary.Exec(t, "CREATE TABLE acked(id int primary key)")
	cm := startCommitters(t, c.primary, 4, "INSERT INTO acked VALUES (%d)", 60*time.Second, true)
	generateSegments(t, c.primary, 1)
	c.etcd.Stop()
	stopped := time.Now()
	ackedBefore, _ := cm.Acked()
	for time.Since(stopped) < 60*time.Second {
		generateSegments(t, c.primary, 1)
	}
	ackedDuring, slowest := cm.Acked()
	if len(ackedDuring) <= len(ackedBefore) {
		t.Fatalf("no commit acknowledged while etcd was down (%d before, %d after)", len(ackedBefore), len(ackedDuring))
	}
	// The leader's lease has expired: nobody offloads now.
	pgtest.WaitFor(t, clusterTTL+10*time.Second, "every node to stop offloading", func() bool {
		for _, sk := range c.sks {
			if st, _ := sk.clusterStatus(t); st.Offloader == nil || st.Offloader.IsLeader {
				return false
			}
		}
		return true
	})
	pending, _ := c.sks[0].clusterStatus(t)
	c.etcd.Restart()
	back := time.Now()
	pgtest.WaitFor(t, clusterTTL+5*time.Second, "offloading to resume after etcd's return", func() bool {
		for _, sk := range c.sks {
			if st, _ := sk.clusterStatus(t); st.Offloader != nil && st.Offloader.IsLeader &&
				st.lsn(t, st.BackupLSN) > pending.lsn(t, pending.BackupLSN) {
				return true
			}
		}
		return false
	})
	resumedAfter := time.Since(back)
	cm.Stop()
	acked, _ := cm.Acked()
	c.waitAllArchived(nil)
	count := c.primary.QueryValue(t, "SELECT count(*) FROM acked")
	if count != fmt.Sprint(len(acked)) {
		t.Fatalf("primary has %s rows, %d commits were acknowledged", count, len(acked))
	}
	// Restarting etcd (data kept) while the nodes campaign and lead.
	c.etcd.Stop()
	c.etcd.Restart()
	generateSegments(t, c.primary, 2)
	c.waitAllArchived(nil)
	c.waitLeader(nil, 30*time.Second)
	t.Logf("%d commits acknowledged during 60 s without etcd (slowest %s); offloading resumed %s after etcd returned",
		len(ackedDuring)-len(ackedBefore), slowest.Round(time.Millisecond), resumedAfter.Round(time.Millisecond))
}

// primaryArchiving are settings that make the primary copy every
// finished segment into <BaseDir>/walcopy (archive_command runs in the
// data directory): the primary's own bytes, kept after it recycles its
// pg_wal, as the reference for byte comparisons.
var primaryArchiving = map[string]string{
	"archive_mode":    "on",
	"archive_command": "mkdir -p ../walcopy && test ! -f ../walcopy/%f && cp %p ../walcopy/%f",
}

// recyclingPrimary are the settings of a primary that keeps no WAL for
// anyone (the tests recycle it on purpose) and archives its own copies.
func recyclingPrimary() map[string]string {
	conf := map[string]string{"wal_keep_size": "0", "max_wal_size": "32MB", "min_wal_size": "2MB"}
	for k, v := range primaryArchiving {
		conf[k] = v
	}
	return conf
}

func walCopyDir(primary *pgtest.Cluster) string { return filepath.Join(primary.BaseDir, "walcopy") }

// compareWithPrimaryCopy compares the safekeeper's complete local segments
// in [from, to) with the primary's archived copies.
func compareWithPrimaryCopy(t testing.TB, sk *SK, id timeline.ID, primary *pgtest.Cluster, from, to wal.LSN) int {
	t.Helper()
	snap := walCopyDir(primary)
	last := wal.SegmentFileName(1, wal.SegmentNo(to, clusterSegSize)-1, clusterSegSize)
	pgtest.WaitFor(t, 30*time.Second, "the primary to archive "+last, func() bool {
		_, err := os.Stat(filepath.Join(snap, last))
		return err == nil
	})
	dir := filepath.Join(sk.DataDir, id.TenantID, id.TimelineID)
	n := 0
	for segno := wal.SegmentNo(from, clusterSegSize); segno < wal.SegmentNo(to, clusterSegSize); segno++ {
		name := wal.SegmentFileName(1, segno, clusterSegSize)
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", sk.Name, err)
		}
		want, err := os.ReadFile(filepath.Join(snap, name))
		if err != nil {
			ents, _ := os.ReadDir(snap)
			var have []string
			for _, e := range ents {
				have = append(have, e.Name())
			}
			t.Fatalf("reference copy of %s (range %s-%s): %v; copies: %v", name, from, to, err, have)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: %s differs from the primary's", sk.Name, name)
		}
		n++
	}
	return n
}

// recycleUntilGone switches WAL and checkpoints on the primary until the
// segment holding lsn is no longer in its pg_wal.
func recycleUntilGone(t testing.TB, primary *pgtest.Cluster, lsn wal.LSN) {
	t.Helper()
	name := wal.SegmentFileName(1, wal.SegmentNo(lsn, clusterSegSize), clusterSegSize)
	pgtest.WaitFor(t, 60*time.Second, "the primary to recycle "+name, func() bool {
		primary.Exec(t, "SELECT pg_switch_wal()")
		primary.Exec(t, "CHECKPOINT")
		_, err := os.Stat(filepath.Join(primary.WalDir(), name))
		return os.IsNotExist(err)
	})
}

// Issue 7 acceptance 5, the stuck-after-switch defect: a safekeeper without
// an upstream slot is stopped; the primary switches WAL and checkpoints
// until it has recycled the segment the safekeeper needs; restarted (and
// with an empty archive), the safekeeper recovers the range from a peer
// and streams from the primary again within 30 s, byte-identical.
func TestClusterRecoverAfterSwitch(t *testing.T) {
	ae := linkedArchive(t)
	conf := recyclingPrimary()
	// They keep local WAL, so that the recovered segments can be compared.
	c := startCluster(t, ae, conf, "--upstream-slot", "none", "--wal-keep-size", "64MB")
	id := clusterID(t, c.primary)
	generateSegments(t, c.primary, 2)
	sk3 := c.sk("sk3")
	sk3.WaitFlush(t, flushLSNOfPrimary(t, c.primary), 30*time.Second)
	sk3.Stop()
	behind, _ := c.sks[0].clusterStatus(t)
	// Commits go on with sk1 and sk2; then the switch and the recycling.
	c.primary.Exec(t, "CREATE TABLE t(x int)")
	c.primary.Exec(t, "INSERT INTO t SELECT generate_series(1, 1000)")
	stopped := flushLSNOfPrimary(t, c.primary)
	generateSegments(t, c.primary, 2)
	recycleUntilGone(t, c.primary, stopped)
	// sk3's archive holds nothing: the range must come from a peer.
	c.emptyArchive(sk3)
	restarted := time.Now()
	sk3.Start()
	target := flushLSNOfPrimary(t, c.primary)
	pgtest.WaitFor(t, 30*time.Second, "sk3 to recover and stream from the primary again", func() bool {
		st, ok := sk3.clusterStatus(t)
		return ok && st.Upstream.State == "streaming" && st.lsn(t, st.FlushLSN) >= target
	})
	took := time.Since(restarted)
	st, _ := sk3.clusterStatus(t)
	if st.Upstream.Recovery == nil || !strings.Contains(st.Upstream.Recovery.Source, "peer") {
		t.Fatalf("sk3 status shows no recovery from a peer: %+v", st.Upstream)
	}
	n := compareWithPrimaryCopy(t, sk3, id, c.primary, max(st.lsn(t, st.LocalStart), behind.lsn(t, behind.FlushLSN)), wal.SegmentStart(target, clusterSegSize))
	if n < 2 {
		t.Fatalf("only %d recovered segments compared", n)
	}
	t.Logf("sk3 recovered from %q (%s) and streamed again after %s; %d segments byte-identical",
		st.Upstream.Recovery.Source, st.Upstream.Recovery.Reason, took.Round(time.Millisecond), n)
}

// primaryOldestLSN is the start of the oldest segment in the primary's
// pg_wal.
func primaryOldestLSN(t testing.TB, primary *pgtest.Cluster) wal.LSN {
	t.Helper()
	name := primary.QueryValue(t, "SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'")
	_, segno, ok := wal.ParseSegmentFileName(name, clusterSegSize)
	if !ok {
		t.Fatalf("bad segment name %q", name)
	}
	return wal.LSN(segno * clusterSegSize)
}

// Issue 7 acceptance 6: a safekeeper wiped and restarted empty catches up
// from the archive and its peers (the primary no longer has that WAL),
// holds what they hold, and rejoins the quorum.
func TestClusterWipedNodeRejoins(t *testing.T) {
	ae := fileArchive(t)
	conf := recyclingPrimary()
	// Peers keep 6 segments behind their end; the primary keeps none.
	c := startCluster(t, ae, conf, "--upstream-slot", "none", "--wal-keep-size", "6MB")
	id := clusterID(t, c.primary)
	generateSegments(t, c.primary, 8)
	sk3 := c.sk("sk3")
	sk3.Kill()
	if err := os.RemoveAll(sk3.DataDir); err != nil {
		t.Fatal(err)
	}
	sk1st, _ := c.sk("sk1").clusterStatus(t)
	recycleUntilGone(t, c.primary, sk1st.lsn(t, sk1st.LocalStart))
	oldest := primaryOldestLSN(t, c.primary)
	// It keeps what it recovers, for the comparison below.
	sk3.Extra = append(sk3.Extra, "--wal-keep-size", "64MB")
	sk3.Start()
	target := flushLSNOfPrimary(t, c.primary)
	pgtest.WaitFor(t, 60*time.Second, "the wiped sk3 to catch up", func() bool {
		st, ok := sk3.clusterStatus(t)
		return ok && st.Upstream.State == "streaming" && st.lsn(t, st.FlushLSN) >= target
	})
	st, _ := sk3.clusterStatus(t)
	if st.TenantID != id.TenantID || st.TimelineID != id.TimelineID {
		t.Fatalf("wiped sk3 has ids %s/%s, want %s", st.TenantID, st.TimelineID, id)
	}
	if st.Upstream.Recovery == nil || st.Upstream.Recovery.Source == "" {
		t.Fatalf("sk3 did not recover from the archive or a peer: %+v", st.Upstream.Recovery)
	}
	local := st.lsn(t, st.LocalStart)
	if local >= oldest {
		t.Fatalf("wiped sk3 starts at %s, not before the oldest WAL the primary still has (%s)", local, oldest)
	}
	n := compareWithPrimaryCopy(t, sk3, id, c.primary, local, wal.SegmentStart(target, clusterSegSize))
	// Back in the quorum: with sk1 stopped, commits need sk3.
	c.sk("sk1").Stop()
	ctx := ctxTimeout(t, 30*time.Second)
	if err := execOn(ctx, c.primary, "CREATE TABLE after_rejoin(x int)"); err != nil {
		t.Fatalf("commit with sk2 and the rejoined sk3: %v", err)
	}
	t.Logf("wiped sk3 started at %s (the primary had recycled it), recovered from %q, %d segments byte-identical, and acknowledged commits",
		local, st.Upstream.Recovery.Source, n)
}

// Issue 7 acceptance 7: an offloader whose uploads fail (its path to the
// archive is cut, the others' is not) hands over to an eligible peer,
// whose uploads then proceed.
func TestClusterStalledOffloaderHandsOver(t *testing.T) {
	c := startCluster(t, linkedArchive(t), nil, "--offload-max-lag", "2MB")
	old := c.waitLeader(nil, 30*time.Second)
	c.cutArchive(old)
	stalled, _ := old.clusterStatus(t)
	generateSegments(t, c.primary, 6)
	cut := time.Now()
	var next *SK
	pgtest.WaitFor(t, 60*time.Second, "a peer to take over offloading", func() bool {
		next = c.agreedLeader(nil)
		return next != nil && next != old
	})
	handedOver := time.Since(cut)
	target := c.waitAllArchived(map[*SK]bool{old: true})
	if st, _ := next.clusterStatus(t); st.lsn(t, st.BackupLSN) <= stalled.lsn(t, stalled.BackupLSN) {
		t.Fatalf("backup_lsn did not advance after the hand-over")
	}
	log, _ := os.ReadFile(old.logPath)
	if !bytes.Contains(log, []byte("handing over")) {
		t.Fatalf("%s's log does not say it handed over", old.Name)
	}
	t.Logf("%s could not upload; %s took over after %s; backup_lsn reached %s", old.Name, next.Name, handedOver.Round(time.Millisecond), target)
}
