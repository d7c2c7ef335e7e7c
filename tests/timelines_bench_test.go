package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/manager"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// procStatusKB reads a "VmRSS:"-style field of /proc/<pid>/status in KiB.
func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

func openFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// cloneTimeline copies the timeline directory src (control file and
// segment files) to a new timeline id under dataDir, defined without an
// upstream, as an idle timeline with WAL.
func cloneTimeline(b *testing.B, src, dataDir string, id timeline.ID) {
	b.Helper()
	dst := filepath.Join(dataDir, id.TenantID, id.TimelineID)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		b.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == walstore.ControlFileName {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	ctl, err := walstore.ReadControl(filepath.Join(src, walstore.ControlFileName))
	if err != nil {
		b.Fatal(err)
	}
	ctl.TenantID, ctl.TimelineID = id.TenantID, id.TimelineID
	if err := walstore.WriteControl(filepath.Join(dst, walstore.ControlFileName), ctl); err != nil {
		b.Fatal(err)
	}
	def, _ := json.Marshal(manager.Definition{TenantID: id.TenantID, TimelineID: id.TimelineID})
	if err := os.WriteFile(filepath.Join(dst, manager.DefinitionFile), def, 0o600); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkManyTimelines hosts BENCH_TIMELINES (default 1000) idle
// timelines in one process: each a copy of a real timeline (control file,
// WAL received from a primary) defined without an upstream. It measures,
// over 5 starts, the time from exec until every timeline is active; then,
// against the same binary hosting no timeline, the resident memory per
// idle timeline, the CPU the process uses while nothing happens, and its
// open file descriptors.
func BenchmarkManyTimelines(b *testing.B) {
	pgtest.Require(b)
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("BENCH_TIMELINES")); err == nil && v > 0 {
		n = v
	}
	// 1 MB segments and a little WAL: each copy holds one partial
	// segment of a few hundred kB, so that the copies stay small.
	primary := pgtest.StartPrimary(b, pgtest.Options{WalSegSizeMB: 1})
	seed := StartSK(b, primary.ConnString())
	primary.Exec(b, "CREATE TABLE filler(id serial primary key, payload text)")
	primary.Exec(b, "INSERT INTO filler(payload) SELECT repeat(md5(g::text), 4) FROM generate_series(1, 500) g")
	seed.WaitFlush(b, flushLSNOfPrimary(b, primary), 60*time.Second)
	st := seed.Status(b)
	seed.Stop()
	src := filepath.Join(seed.DataDir, st.Timelines[0].TenantID, st.Timelines[0].TimelineID)

	empty := newSK(b, "empty", "", nil)
	sk := newSK(b, "many", "", nil)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		cloneTimeline(b, src, sk.DataDir, timeline.ID{TenantID: timeline.NewHexID(), TimelineID: timeline.NewHexID()})
	}
	var du int64
	filepath.Walk(sk.DataDir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			du += fi.Size()
		}
		return nil
	})
	b.Logf("%d timelines prepared in %s (%.1f MiB of files)", n, time.Since(t0).Round(time.Millisecond), float64(du)/(1<<20))

	allActive := func() bool {
		var list []manager.Info
		if code := sk.apiCall(b, "GET", "/v1/timeline", nil, &list); code != 200 || len(list) != n {
			return false
		}
		for _, i := range list {
			if i.State != manager.StateActive {
				return false
			}
		}
		return true
	}
	var starts []time.Duration
	for run := 0; run < 5; run++ {
		t := time.Now()
		sk.Start() // returns once /healthz answers
		pgtest.WaitFor(b, 5*time.Minute, "every timeline to be active", allActive)
		starts = append(starts, time.Since(t))
		if run < 4 {
			sk.Stop()
		}
	}
	empty.Start()

	// Idle: nothing is written, nobody is connected. Let start-up garbage
	// go, then measure.
	settle := func(s *SK) {
		for i := 0; i < 2; i++ {
			resp, err := http.Get(s.url("/metrics"))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	time.Sleep(5 * time.Second) // a measurement window, not synchronisation
	settle(sk)
	settle(empty)
	const window = 20 * time.Second
	c0, _ := procCPU(sk.PID())
	e0, _ := procCPU(empty.PID())
	time.Sleep(window) // the idle window being measured
	c1, _ := procCPU(sk.PID())
	e1, _ := procCPU(empty.PID())
	rss := procStatusKB(sk.PID(), "VmRSS")
	rss0 := procStatusKB(empty.PID(), "VmRSS")
	fds, fds0 := openFDs(sk.PID()), openFDs(empty.PID())
	perTL := float64(rss-rss0) * 1024 / float64(n)

	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	b.Logf("start-up with %d timelines (until all active), 5 runs: median %s, min %s, max %s",
		n, median(starts).Round(time.Millisecond), starts[0].Round(time.Millisecond), starts[len(starts)-1].Round(time.Millisecond))
	b.Logf("RSS: %d KiB with %d idle timelines, %d KiB with none: %.0f bytes per idle timeline", rss, n, rss0, perTL)
	b.Logf("idle CPU over %s: %s with %d timelines (%.3f%% of one core), %s with none",
		window, (c1 - c0), n, 100*(c1-c0).Seconds()/window.Seconds(), (e1 - e0))
	b.Logf("open file descriptors: %d with %d timelines, %d with none", fds, n, fds0)
	b.ReportMetric(median(starts).Seconds(), "startup-s")
	b.ReportMetric(perTL, "rss-bytes/timeline")
	b.ReportMetric((c1-c0).Seconds()/window.Seconds(), "idle-cpu-s/s")
	b.ReportMetric(float64(fds), "fds")
}
