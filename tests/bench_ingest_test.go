package tests

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/internal/benchreport"
	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// Knobs of the commit and ingest benchmarks (issue 10, P5, P6, P8, P9):
//
//	BENCH_ROUNDS           runs per side (default 5 for P6, 3 for P5 and P8)
//	BENCH_PGBENCH_SECONDS  length of one pgbench run (default 15)
//	BENCH_PGBENCH_CLIENTS  pgbench -c (default 8; -j is min(clients, 2))
//	BENCH_PGBENCH_SCALE    pgbench -i -s (default 10)
//	BENCH_P9_SECONDS       length of the archive-lag run (default 4 pgbench runs)
//	BENCH_GIB              WAL the P8 catch-up ingests (default 1)

func envFloat(name string, def float64) float64 {
	if v := os.Getenv(name); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err == nil && f > 0 {
			return f
		}
	}
	return def
}

func envInt(name string, def int) int { return int(envFloat(name, float64(def))) }

// benchRounds is BENCH_ROUNDS when set, else def.
func benchRounds(def int) int { return envInt("BENCH_ROUNDS", def) }

func medianF(xs []float64) float64 { return quantileF(xs, 0.5) }

// quantileF interpolates linearly between the closest ranks; NaN for none.
func quantileF(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	lo, hi := int(math.Floor(pos)), int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

func mib(v float64) float64 { return v / (1 << 20) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func saveOrFail(b *testing.B, r benchreport.Result) {
	b.Helper()
	if err := benchreport.Save(r); err != nil {
		b.Fatalf("save %s: %v", r.ID, err)
	}
}

// fdatasyncLatency times an 8 KiB write followed by fdatasync, n times, in
// a file of dir: once rewriting the same block of a file that already has
// its size (as PostgreSQL's walreceiver writes into preallocated
// segments), once appending so that each fdatasync also commits a new file
// size. It returns both medians.
func fdatasyncLatency(b testing.TB, dir string, n int) (inPlace, extending time.Duration) {
	b.Helper()
	block := make([]byte, 8192)
	for i := range block {
		block[i] = byte(i)
	}
	run := func(name string, grow bool) time.Duration {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := f.WriteAt(block, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		ds := make([]time.Duration, n)
		for i := range ds {
			off := int64(0)
			if grow {
				off = int64(i+1) * int64(len(block))
			}
			t0 := time.Now()
			if _, err := f.WriteAt(block, off); err != nil {
				b.Fatal(err)
			}
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
			ds[i] = time.Since(t0)
		}
		return median(ds)
	}
	return run("fdatasync-inplace", false), run("fdatasync-extend", true)
}

// fdatasyncThroughput writes size bytes sequentially in 1 MiB writes, each
// followed by fdatasync, into a new file of dir (growing it) and then over
// the same, now allocated, file again; it returns both rates in MB/s.
func fdatasyncThroughput(b testing.TB, dir string, size int) (extending, inPlace float64) {
	b.Helper()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	f, err := os.Create(filepath.Join(dir, "fdatasync-throughput"))
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	pass := func() float64 {
		t0 := time.Now()
		for off := 0; off < size; off += len(buf) {
			if _, err := f.WriteAt(buf, int64(off)); err != nil {
				b.Fatal(err)
			}
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
		}
		return mib(float64(size)) / time.Since(t0).Seconds()
	}
	return pass(), pass()
}

// pgbenchLoad is the load of P5, P6 and P9.
type pgbenchLoad struct {
	clients, threads, scale, seconds int
}

func pgbenchLoadFromEnv() pgbenchLoad {
	c := envInt("BENCH_PGBENCH_CLIENTS", 8)
	return pgbenchLoad{clients: c, threads: min(c, 2), scale: envInt("BENCH_PGBENCH_SCALE", 10),
		seconds: envInt("BENCH_PGBENCH_SECONDS", 15)}
}

func (l pgbenchLoad) String() string {
	return fmt.Sprintf("pgbench -N -c %d -j %d, scale %d", l.clients, l.threads, l.scale)
}

// clientEnv is the environment for client programs, without PG* variables
// that could point them elsewhere.
func clientEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

func pgbenchInit(b *testing.B, primary *pgtest.Cluster, scale int) {
	b.Helper()
	cmd := exec.Command(primary.Bins.Path("pgbench"), "-i", "-q", "-s", strconv.Itoa(scale),
		"-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", "postgres", "postgres")
	cmd.Env = clientEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
}

type pgbenchResult struct {
	tps       float64
	latencyMS float64 // average transaction latency
	err       error
}

var (
	tpsRE     = regexp.MustCompile(`tps = ([0-9.]+) \((?:without|excluding)`)
	latencyRE = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

// pgbenchRun runs the simple-update script (-N) without its vacuum (-n) for
// seconds, so that the whole run is load.
func pgbenchRun(primary *pgtest.Cluster, l pgbenchLoad, seconds int) pgbenchResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, primary.Bins.Path("pgbench"), "-n", "-N",
		"-c", strconv.Itoa(l.clients), "-j", strconv.Itoa(l.threads), "-T", strconv.Itoa(seconds),
		"-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", "postgres", "postgres")
	cmd.Env = clientEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return pgbenchResult{err: fmt.Errorf("pgbench: %v\n%s", err, out)}
	}
	m := tpsRE.FindSubmatch(out)
	if m == nil {
		return pgbenchResult{err: fmt.Errorf("no tps in pgbench output:\n%s", out)}
	}
	r := pgbenchResult{}
	r.tps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := latencyRE.FindSubmatch(out); m != nil {
		r.latencyMS, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	return r
}

// pgbenchSampling runs pgbench for seconds and calls sample on the calling
// goroutine every interval until it ends (sample may fail the benchmark).
func pgbenchSampling(b *testing.B, primary *pgtest.Cluster, l pgbenchLoad, seconds int, every time.Duration, sample func()) pgbenchResult {
	b.Helper()
	done := make(chan pgbenchResult, 1)
	go func() { done <- pgbenchRun(primary, l, seconds) }()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		sample()
		select {
		case r := <-done:
			if r.err != nil {
				b.Fatal(r.err)
			}
			return r
		case <-tick.C:
		}
	}
}

// syncName is the application_name both synchronous standbys of the commit
// benchmark use, one at a time, so that synchronous_standby_names never
// has to change between their runs.
const syncName = "bench_sync"

// standbys runs either the safekeeper or the PostgreSQL standby, never
// both: the one not measured would otherwise take CPU and disk from the
// other.
type standbys struct {
	primary   *pgtest.Cluster
	sk        *SK
	skUp      bool
	standby   *pgtest.Cluster
	standbyUp bool
}

// only leaves who ("safekeeper" or "postgres") the one standby streaming
// from the primary, caught up, with the sync_state want.
func (s *standbys) only(b *testing.B, who, want string) {
	b.Helper()
	switch who {
	case "safekeeper":
		if s.standbyUp {
			s.standby.Stop(b, "fast")
			s.standbyUp = false
		}
		if !s.skUp {
			s.sk.Start()
			s.skUp = true
		}
	case "postgres":
		if s.skUp {
			s.sk.Stop()
			s.skUp = false
		}
		if !s.standbyUp {
			s.standby.Start(b)
			s.standbyUp = true
		}
	}
	// A walsender reports "streaming" once its standby has caught up.
	s.primary.WaitForQuery(b, fmt.Sprintf(
		"SELECT count(*) || ' ' || string_agg(state || '/' || sync_state, ',') FROM pg_stat_replication WHERE application_name = '%s'", syncName),
		"1 streaming/"+want, 2*time.Minute)
}

// fsyncStats reads the safekeeper's group fsync histogram: total seconds
// and count.
func fsyncStats(b *testing.B, sk *SK) (sum, count float64) {
	b.Helper()
	sum, _ = sk.metric(b, "safekeeper_wal_fsync_seconds_sum")
	count, _ = sk.metric(b, "safekeeper_wal_fsync_seconds_count")
	return sum, count
}

// fsyncBuckets reads the safekeeper's group fsync histogram: cumulative
// counts by upper bound in seconds, ascending.
func fsyncBuckets(b *testing.B, sk *SK) (les, counts []float64) {
	b.Helper()
	resp, err := http.Get(sk.url("/metrics"))
	if err != nil {
		b.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	const prefix = `safekeeper_wal_fsync_seconds_bucket{le="`
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		le, count, _ := strings.Cut(rest, `"} `)
		l, err1 := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
		c, err2 := strconv.ParseFloat(count, 64)
		if err1 == nil && err2 == nil {
			les, counts = append(les, l), append(counts, c)
		}
	}
	return les, counts
}

// fsyncQuantile is the upper bound (ms) of the histogram bucket holding
// quantile q of the fsyncs counted between two fsyncBuckets readings.
func fsyncQuantile(les, before, after []float64, q float64) float64 {
	if len(les) == 0 || len(before) != len(after) {
		return math.NaN()
	}
	total := after[len(after)-1] - before[len(before)-1]
	if total == 0 {
		return math.NaN()
	}
	for i := range les {
		if after[i]-before[i] >= q*total {
			return les[i] * 1000
		}
	}
	return math.Inf(1)
}

// BenchmarkCommit measures the commit path under pgbench load (issue 10):
//
//   - P6: pgbench TPS with the safekeeper as the only synchronous standby
//     vs a PostgreSQL standby as the only synchronous standby, alternating,
//     BENCH_ROUNDS (5) runs each; only the standby measured runs.
//   - P5: live tail latency: a probe commits every 20 ms under the same
//     load (the safekeeper now asynchronous) and two Go replication
//     clients, one through the safekeeper and one on the primary's own
//     walsender, record when the probe's WAL reaches them; p50/p99.
//   - P9: a safekeeper that offloads to a file:// archive, as the
//     synchronous standby under the same load; its archive lag is sampled
//     over the run and must not grow.
func BenchmarkCommit(b *testing.B) {
	load := pgbenchLoadFromEnv()
	p6Rounds := benchRounds(5)
	p5Rounds := benchRounds(3)
	p9Seconds := envInt("BENCH_P9_SECONDS", max(8, 4*load.seconds))
	const segMB = 16
	conf := map[string]string{
		"wal_keep_size": "1GB", "max_wal_size": "2GB", "checkpoint_timeout": "30min",
		"synchronous_commit": "on", "shared_buffers": "128MB",
	}
	primary := pgtest.StartPrimary(b, pgtest.Options{WalSegSizeMB: segMB, Conf: conf})
	primary.Bins.Need(b, "pgbench")
	b.Logf("pgbench -i -s %d", load.scale)
	pgbenchInit(b, primary, load.scale)

	standby := pgtest.BaseBackup(b, primary, "standby")
	standby.StartAsStandby(b, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s", primary.Port, syncName),
		pgtest.Options{Conf: map[string]string{"shared_buffers": "128MB"}})
	s := &standbys{primary: primary, standby: standby, standbyUp: true}
	s.only(b, "postgres", "async")
	s.sk = StartSKNamed(b, syncName, primary.ConnString(), nil, "--log-level", "info")
	s.skUp = true
	s.only(b, "safekeeper", "async")
	primary.SetConf(b, "synchronous_standby_names", syncName)

	// One fdatasync on the disk both standbys write to (the default
	// temporary directories), measured while it is quiet.
	diskDir := filepath.Dir(s.sk.DataDir)
	syncInPlace, syncExtend := fdatasyncLatency(b, diskDir, 200)
	fmt.Printf("\nfdatasync of one 8 KiB write on the standbys' disk (median of 200): in place %.3f ms, extending the file %.3f ms\n",
		ms(syncInPlace), ms(syncExtend))

	b.ResetTimer()

	// P6.
	var skTPS, refTPS, skLat, refLat, skFsyncMS, skFsyncP99, skFsyncsPerCommit, skFlushLag, refFlushLag []float64
	// CPU per commit of each standby: the safekeeper's process; the
	// PostgreSQL standby's postmaster and children (walreceiver, replay,
	// checkpointer, ...). On two cores it is CPU the primary's backends
	// do not get.
	var skCPU, refCPU []float64
	standbyCPU := func(who string) time.Duration {
		var d time.Duration
		var ok bool
		if who == "safekeeper" {
			d, ok = procCPUNs(s.sk.PID())
		} else {
			d, ok = clusterCPUNs(standby.DataDir)
		}
		if !ok {
			b.Fatalf("CPU time of the %s standby unavailable", who)
		}
		return d
	}
	lagConn, err := pgconn.Connect(ctxTimeout(b, 30*time.Second), primary.ConnString())
	if err != nil {
		b.Fatal(err)
	}
	defer lagConn.Close(context.Background())
	// flushLag samples the primary's view of the synchronous standby:
	// the time from its local flush to the standby's flush
	// acknowledgement, the part of a commit the standby adds.
	flushLag := func(into *[]float64) func() {
		return func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := lagConn.Exec(ctx, fmt.Sprintf(
				"SELECT extract(epoch FROM flush_lag) * 1000 FROM pg_stat_replication WHERE application_name = '%s'", syncName)).ReadAll()
			if err != nil {
				b.Fatalf("sample flush_lag: %v", err)
			}
			if len(res) == 1 && len(res[0].Rows) == 1 && res[0].Rows[0][0] != nil {
				if v, err := strconv.ParseFloat(string(res[0].Rows[0][0]), 64); err == nil {
					*into = append(*into, v)
				}
			}
		}
	}
	for round := 0; round < p6Rounds; round++ {
		order := []string{"safekeeper", "postgres"}
		if round%2 == 1 {
			order = []string{"postgres", "safekeeper"}
		}
		for _, who := range order {
			s.only(b, who, "sync")
			primary.Exec(b, "CHECKPOINT")
			var sum0, n0 float64
			var les, buckets0 []float64
			lags := &refFlushLag
			if who == "safekeeper" {
				sum0, n0 = fsyncStats(b, s.sk)
				les, buckets0 = fsyncBuckets(b, s.sk)
				lags = &skFlushLag
			}
			before := len(*lags)
			cpu0 := standbyCPU(who)
			r := pgbenchSampling(b, primary, load, load.seconds, 100*time.Millisecond, flushLag(lags))
			cpuUS := (standbyCPU(who) - cpu0).Seconds() * 1e6 / (r.tps * float64(load.seconds))
			if who == "safekeeper" {
				skCPU = append(skCPU, cpuUS)
			} else {
				refCPU = append(refCPU, cpuUS)
			}
			extra := fmt.Sprintf("  standby CPU %.1f µs per commit, flush_lag median %.3f ms", cpuUS, medianF((*lags)[before:]))
			if who == "safekeeper" {
				sum1, n1 := fsyncStats(b, s.sk)
				_, buckets1 := fsyncBuckets(b, s.sk)
				if n1 > n0 {
					meanMS := (sum1 - sum0) / (n1 - n0) * 1000
					p99 := fsyncQuantile(les, buckets0, buckets1, 0.99)
					perCommit := (n1 - n0) / (r.tps * float64(load.seconds))
					skFsyncMS = append(skFsyncMS, meanMS)
					skFsyncP99 = append(skFsyncP99, p99)
					skFsyncsPerCommit = append(skFsyncsPerCommit, perCommit)
					extra += fmt.Sprintf(", group fsync mean %.3f ms (p99 ≤ %.3g ms), %.2f fsyncs per commit", meanMS, p99, perCommit)
				}
				skTPS, skLat = append(skTPS, r.tps), append(skLat, r.latencyMS)
			} else {
				refTPS, refLat = append(refTPS, r.tps), append(refLat, r.latencyMS)
			}
			b.Logf("P6 round %d %-10s %8.1f TPS, latency avg %.3f ms%s", round, who, r.tps, r.latencyMS, extra)
		}
	}
	p6Ratio := medianF(skTPS) / medianF(refTPS)
	fmt.Printf("\nP6 %s, %d s runs, synchronous_commit=on, %d runs each alternating (medians):\n", load, load.seconds, p6Rounds)
	fmt.Printf("  safekeeper sync standby  %8.1f TPS [%.1f–%.1f], latency avg %.3f ms\n", medianF(skTPS), slices.Min(skTPS), slices.Max(skTPS), medianF(skLat))
	fmt.Printf("  PostgreSQL sync standby  %8.1f TPS [%.1f–%.1f], latency avg %.3f ms\n", medianF(refTPS), slices.Min(refTPS), slices.Max(refTPS), medianF(refLat))
	fmt.Printf("  primary's flush_lag (local flush to the standby's flush ack, sampled every 100 ms): median %.3f ms safekeeper, %.3f ms PostgreSQL\n",
		medianF(skFlushLag), medianF(refFlushLag))
	fmt.Printf("  ratio safekeeper/postgres %.2f× (goal ≥ 1.0×); safekeeper group fsync mean %.3f ms (p99 ≤ %.3g ms), %.2f fsyncs per commit\n",
		p6Ratio, medianF(skFsyncMS), medianF(skFsyncP99), medianF(skFsyncsPerCommit))
	fmt.Printf("  standby CPU per commit: safekeeper %.1f µs, PostgreSQL standby %.1f µs (postmaster and children)\n", medianF(skCPU), medianF(refCPU))
	b.ReportMetric(p6Ratio, "P6-tps-ratio")
	saveOrFail(b, benchreport.Result{
		ID: "P6", Scenario: fmt.Sprintf("pgbench TPS (%s) with the only synchronous standby", load),
		Unit: "TPS", Safekeeper: skTPS, Reference: refTPS, RefName: "PostgreSQL standby",
		Goal: "≥ 1.0×", GoalRatio: 1.0, HigherIsBetter: true,
		Series: map[string][]float64{
			"safekeeper_latency_avg_ms": skLat, "reference_latency_avg_ms": refLat,
			"safekeeper_group_fsync_ms": skFsyncMS,
			"safekeeper_flush_lag_ms":   skFlushLag, "reference_flush_lag_ms": refFlushLag,
			"safekeeper_cpu_us_per_commit": skCPU, "reference_cpu_us_per_commit": refCPU,
		},
		Note: fmt.Sprintf("%d s runs, synchronous_commit=on, one standby running at a time, both on the same disk; average transaction latency %.3f ms (safekeeper) vs %.3f ms (PostgreSQL); "+
			"primary's flush_lag median %.3f ms vs %.3f ms; standby CPU per commit %.1f µs vs %.1f µs (the standby's postmaster and children, replay included); "+
			"safekeeper group fsync mean %.3f ms (p99 ≤ %.3g ms), %.2f fsyncs per commit; one 8 KiB fdatasync on this disk: %.3f ms in place, %.3f ms extending the file",
			load.seconds, medianF(skLat), medianF(refLat), medianF(skFlushLag), medianF(refFlushLag), medianF(skCPU), medianF(refCPU), medianF(skFsyncMS), medianF(skFsyncP99), medianF(skFsyncsPerCommit), ms(syncInPlace), ms(syncExtend)),
	})

	if os.Getenv("BENCH_COMMIT_P6_ONLY") != "" {
		// For experiments on the commit path: P6 alone, nothing saved
		// for P5 and P9.
		return
	}

	// P5: the safekeeper asynchronous, two tailing consumers.
	primary.SetConf(b, "synchronous_standby_names", "")
	s.only(b, "safekeeper", "async")
	primary.Exec(b, "CREATE TABLE bench_probe(id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
	startLSN := flushLSNOfPrimary(b, primary)
	s.sk.WaitFlush(b, startLSN, time.Minute)
	viaSK := startWALTail(b, s.sk.ConnString()+" application_name=p5_tail", startLSN)
	direct := startWALTail(b, primary.ReplConnString()+" application_name=p5_tail_direct", startLSN)
	defer viaSK.stop()
	defer direct.stop()
	probeConn, err := pgconn.Connect(ctxTimeout(b, 30*time.Second), primary.ConnString())
	if err != nil {
		b.Fatal(err)
	}
	defer probeConn.Close(context.Background())
	// added is, per probe, how much later its WAL reached the consumer
	// behind the safekeeper than the one on the primary: paired, so free
	// of the primary's own commit noise.
	var allSK, allRef, added, skP99, refP99, commitMS []float64
	les, fsync0 := fsyncBuckets(b, s.sk)
	for round := 0; round < p5Rounds; round++ {
		primary.Exec(b, "CHECKPOINT")
		done := make(chan pgbenchResult, 1)
		t0 := time.Now()
		go func() { done <- pgbenchRun(primary, load, load.seconds) }()
		// Probe while the load runs, leaving out its first and last half
		// second (connecting, finishing).
		probes := runProbes(b, probeConn, t0.Add(500*time.Millisecond), t0.Add(time.Duration(load.seconds)*time.Second-500*time.Millisecond))
		r := <-done
		if r.err != nil {
			b.Fatal(r.err)
		}
		if len(probes) == 0 {
			b.Fatal("no probe committed during the load")
		}
		last := probes[len(probes)-1].lsn
		pgtest.WaitFor(b, time.Minute, "both tailing consumers to receive the last probe", func() bool {
			for _, w := range []*walTail{viaSK, direct} {
				if err := w.failed(); err != nil {
					b.Fatalf("tailing consumer: %v", err)
				}
			}
			return viaSK.end() >= last && direct.end() >= last
		})
		var ls, lr []float64
		for _, p := range probes {
			ls = append(ls, ms(viaSK.arrival(p.lsn).Sub(p.sent)))
			lr = append(lr, ms(direct.arrival(p.lsn).Sub(p.sent)))
			added = append(added, ms(viaSK.arrival(p.lsn).Sub(direct.arrival(p.lsn))))
			commitMS = append(commitMS, ms(p.acked.Sub(p.sent)))
		}
		allSK, allRef = append(allSK, ls...), append(allRef, lr...)
		skP99, refP99 = append(skP99, quantileF(ls, 0.99)), append(refP99, quantileF(lr, 0.99))
		b.Logf("P5 round %d: %d probes, %.0f TPS; via safekeeper p50 %.3f p99 %.3f ms; direct p50 %.3f p99 %.3f ms",
			round, len(probes), r.tps, quantileF(ls, 0.5), quantileF(ls, 0.99), quantileF(lr, 0.5), quantileF(lr, 0.99))
	}
	viaSK.stop()
	direct.stop()
	_, fsync1 := fsyncBuckets(b, s.sk)
	fsyncP50, fsyncP99 := fsyncQuantile(les, fsync0, fsync1, 0.5), fsyncQuantile(les, fsync0, fsync1, 0.99)
	syncMS := ms(syncInPlace)
	p99Added := medianF(skP99) - medianF(refP99)
	verdict := "met"
	if p99Added > 1+syncMS {
		verdict = "not met"
	}
	fmt.Printf("\nP5 live tail under %s, probe commit every 20 ms, %d runs of %d s, latency from sending the commit to the XLogData (ms):\n",
		load, p5Rounds, load.seconds)
	fmt.Printf("  %-22s p50 %7.3f  p99 %7.3f  (median of per-run p99 %.3f)\n", "via the safekeeper", quantileF(allSK, 0.5), quantileF(allSK, 0.99), medianF(skP99))
	fmt.Printf("  %-22s p50 %7.3f  p99 %7.3f  (median of per-run p99 %.3f)\n", "from the primary", quantileF(allRef, 0.5), quantileF(allRef, 0.99), medianF(refP99))
	fmt.Printf("  p99 added %.3f ms; goal ≤ 1 ms + one fdatasync (%.3f ms) = %.3f ms: %s; commit round trip median %.3f ms\n",
		p99Added, syncMS, 1+syncMS, verdict, medianF(commitMS))
	fmt.Printf("  per probe, safekeeper arrival minus direct arrival: p50 %.3f ms, p99 %.3f ms; safekeeper group fsync meanwhile p50 ≤ %.3g ms, p99 ≤ %.3g ms (histogram buckets)\n",
		quantileF(added, 0.5), quantileF(added, 0.99), fsyncP50, fsyncP99)
	b.ReportMetric(p99Added, "P5-p99-added-ms")
	saveOrFail(b, benchreport.Result{
		ID: "P5", Scenario: "live tail p99 latency, commit to XLogData at a consumer, under the P6 pgbench load",
		Unit: "ms", Safekeeper: skP99, Reference: refP99, RefName: "consumer on the primary",
		Goal: fmt.Sprintf("p99 added ≤ 1 ms + one fdatasync (%.2f ms)", syncMS), GoalRatio: 0, HigherIsBetter: false,
		Series: map[string][]float64{"safekeeper": allSK, "reference": allRef, "added": added},
		Note: fmt.Sprintf("samples are per-run p99s (%d runs of %d s, %s, safekeeper asynchronous, a probe commit every 20 ms); "+
			"all probes: via the safekeeper p50 %.3f p99 %.3f ms, from the primary p50 %.3f p99 %.3f ms, counted from sending the probe's committing INSERT; "+
			"per probe, safekeeper minus direct arrival p50 %.3f p99 %.3f ms; safekeeper group fsync meanwhile p50 ≤ %.3g p99 ≤ %.3g ms; "+
			"p99 added %.3f ms vs goal 1 ms + one fdatasync (%.3f ms median, 8 KiB in place, on the safekeeper's disk) = %.3f ms: %s",
			p5Rounds, load.seconds, load, quantileF(allSK, 0.5), quantileF(allSK, 0.99), quantileF(allRef, 0.5), quantileF(allRef, 0.99),
			quantileF(added, 0.5), quantileF(added, 0.99), fsyncP50, fsyncP99, p99Added, syncMS, 1+syncMS, verdict),
	})

	// P9: a safekeeper that offloads, as the synchronous standby.
	s.sk.Stop()
	s.skUp = false
	ae := fileArchive(b)
	ask := StartSKNamed(b, syncName, primary.ConnString(), nil, "--log-level", "info", "--archive", ae.url, "--wal-keep-size", "0")
	primary.SetConf(b, "synchronous_standby_names", syncName)
	primary.WaitForQuery(b, fmt.Sprintf(
		"SELECT count(*) || ' ' || string_agg(state || '/' || sync_state, ',') FROM pg_stat_replication WHERE application_name = '%s'", syncName),
		"1 streaming/sync", 2*time.Minute)
	primary.Exec(b, "CHECKPOINT")
	var lagT, lagMB []float64
	t0 := time.Now()
	r9 := pgbenchSampling(b, primary, load, p9Seconds, 250*time.Millisecond, func() {
		if st := ask.archStatus(b); st.Archive != nil {
			lagT = append(lagT, time.Since(t0).Seconds())
			lagMB = append(lagMB, mib(float64(st.Archive.LagBytes)))
		}
	})
	if len(lagMB) < 8 {
		b.Fatalf("only %d archive lag samples", len(lagMB))
	}
	b.StopTimer()
	span := lagT[len(lagT)-1]
	quarters := make([][]float64, 4)
	for i, t := range lagT {
		q := min(3, int(4*t/span))
		quarters[q] = append(quarters[q], lagMB[i])
	}
	var qMed []float64
	for _, q := range quarters {
		qMed = append(qMed, medianF(q))
	}
	p9Verdict := "met"
	if qMed[3] > qMed[0]+segMB {
		p9Verdict = "not met"
	}
	fmt.Printf("\nP9 archive lag under %s for %d s (%.0f TPS), safekeeper as synchronous standby offloading to file:// (zstd):\n",
		load, p9Seconds, r9.tps)
	fmt.Printf("  median lag per quarter (MB): %.1f %.1f %.1f %.1f; max %.1f; goal: last ≤ first + one %d MB segment: %s\n",
		qMed[0], qMed[1], qMed[2], qMed[3], slices.Max(lagMB), segMB, p9Verdict)
	b.ReportMetric(qMed[3]-qMed[0], "P9-lag-growth-MB")
	saveOrFail(b, benchreport.Result{
		ID: "P9", Scenario: "archive lag per quarter of a run under the P6 pgbench load",
		Unit: "MB", Safekeeper: qMed, Goal: "lag does not grow", GoalRatio: 0, HigherIsBetter: false,
		Series: map[string][]float64{"t_s": lagT, "archive_lag_mb": lagMB},
		Note: fmt.Sprintf("%s for %d s; file:// archive, zstd, 16 MB segments, safekeeper as the only synchronous standby at %.0f TPS (P6 safekeeper median %.0f TPS); "+
			"archive_lag_bytes (start of the flush LSN's segment minus backup_lsn) every 250 ms, max %.1f MB; "+
			"last quarter median %.1f MB ≤ first %.1f MB + %d MB: %s",
			load, p9Seconds, r9.tps, medianF(skTPS), slices.Max(lagMB), qMed[3], qMed[0], segMB, p9Verdict),
	})
}

// probe is one committed probe row: when its INSERT was sent, when the
// commit was acknowledged, and a WAL position at or past its commit record
// that the primary had flushed.
type probe struct {
	sent, acked time.Time
	lsn         wal.LSN
}

// runProbes commits a probe row every 20 ms from `from` until `until` and
// reads the primary's flush position after each commit.
func runProbes(b *testing.B, conn *pgconn.PgConn, from, until time.Time) []probe {
	b.Helper()
	var out []probe
	time.Sleep(time.Until(from))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(until) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var p probe
		p.sent = time.Now()
		if _, err := conn.Exec(ctx, "INSERT INTO bench_probe DEFAULT VALUES").ReadAll(); err != nil {
			cancel()
			b.Fatalf("probe: %v", err)
		}
		p.acked = time.Now()
		res, err := conn.Exec(ctx, "SELECT pg_current_wal_flush_lsn()").ReadAll()
		cancel()
		if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
			b.Fatalf("probe flush position: %v", err)
		}
		if p.lsn, err = wal.ParseLSN(string(res[0].Rows[0][0])); err != nil {
			b.Fatal(err)
		}
		out = append(out, p)
		<-tick.C
	}
	return out
}

// walTail is a minimal physical replication client that records when each
// XLogData message arrived and the WAL end it brought.
type walTail struct {
	mu     sync.Mutex
	at     []time.Time
	ends   []wal.LSN
	err    error
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func startWALTail(b *testing.B, connString string, start wal.LSN) *walTail {
	b.Helper()
	conn, err := pgconn.Connect(ctxTimeout(b, 30*time.Second), connString)
	if err != nil {
		b.Fatal(err)
	}
	conn.Frontend().Send(&pgproto3.Query{String: fmt.Sprintf("START_REPLICATION %s TIMELINE 1", start)})
	if err := conn.Frontend().Flush(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &walTail{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer conn.Close(context.Background())
		end := start
		lastStatus := time.Now()
		for {
			msg, err := conn.ReceiveMessage(ctx)
			now := time.Now()
			if err != nil {
				if ctx.Err() == nil {
					w.setErr(err)
				}
				return
			}
			reply := false
			switch m := msg.(type) {
			case *pgproto3.CopyData:
				switch {
				case len(m.Data) >= 25 && m.Data[0] == 'w':
					if e := wal.LSN(binary.BigEndian.Uint64(m.Data[1:9])) + wal.LSN(len(m.Data)-25); e > end {
						end = e
						w.mu.Lock()
						w.at, w.ends = append(w.at, now), append(w.ends, e)
						w.mu.Unlock()
					}
				case len(m.Data) >= 18 && m.Data[0] == 'k':
					reply = m.Data[17] == 1
				}
			case *pgproto3.ErrorResponse:
				w.setErr(fmt.Errorf("%s: %s", m.Code, m.Message))
				return
			}
			if reply || now.Sub(lastStatus) > 5*time.Second {
				conn.Frontend().Send(standbyStatus(end))
				if err := conn.Frontend().Flush(); err != nil {
					w.setErr(err)
					return
				}
				lastStatus = now
			}
		}
	}()
	return w
}

func (w *walTail) setErr(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

func (w *walTail) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// end is the WAL end received so far.
func (w *walTail) end() wal.LSN {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.ends) == 0 {
		return 0
	}
	return w.ends[len(w.ends)-1]
}

// arrival is when the first message reaching past lsn arrived (the zero
// time when none has).
func (w *walTail) arrival(lsn wal.LSN) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := sort.Search(len(w.ends), func(i int) bool { return w.ends[i] >= lsn })
	if i == len(w.ends) {
		return time.Time{}
	}
	return w.at[i]
}

func (w *walTail) stop() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
	})
}

// backupStartLSN reads START WAL LOCATION from a base backup's
// backup_label: where a standby made from it starts to need WAL.
func backupStartLSN(b *testing.B, c *pgtest.Cluster) wal.LSN {
	b.Helper()
	f, err := os.Open(filepath.Join(c.DataDir, "backup_label"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "START WAL LOCATION: "); ok {
			lsn, err := wal.ParseLSN(strings.Fields(rest)[0])
			if err != nil {
				b.Fatal(err)
			}
			return lsn
		}
	}
	b.Fatalf("no START WAL LOCATION in %s/backup_label", c.DataDir)
	return 0
}

// diskWritten returns how many bytes the block device holding path has
// written since boot (/proc/diskstats), ok=false when that is not known.
func diskWritten(path string) (int64, bool) {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0, false
	}
	data, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return 0, false
	}
	major, minor := strconv.Itoa(int(unix.Major(st.Dev))), strconv.Itoa(int(unix.Minor(st.Dev)))
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[0] == major && f[1] == minor {
			sectors, err := strconv.ParseInt(f[9], 10, 64)
			return sectors * 512, err == nil
		}
	}
	return 0, false
}

// BenchmarkIngestCatchup (P8) measures ingest catch-up with fsync: about 1
// GiB (BENCH_GIB) of WAL is written on the primary while safekeepers and
// PostgreSQL standbys, all set up before it, are stopped; then each is
// started alone and timed until its durable end reaches the primary's
// (the safekeeper's flush LSN; the standby's pg_last_wal_receive_lsn(),
// which its walreceiver reports once flushed). Alternating,
// BENCH_ROUNDS (3) of each, every one on fresh copies. It also measures
// the disk's fdatasync throughput with 1 MiB writes.
func BenchmarkIngestCatchup(b *testing.B) {
	gib := envFloat("BENCH_GIB", 1)
	rounds := benchRounds(3)
	const segMB = 16
	primary := pgtest.StartPrimary(b, pgtest.Options{WalSegSizeMB: segMB, Conf: map[string]string{
		"wal_keep_size": fmt.Sprintf("%dMB", int(gib*1024)+1024), "max_wal_size": "4GB",
		"checkpoint_timeout": "30min", "synchronous_commit": "off",
	}})

	// Everything that will catch up is set up first, then stopped.
	backups := make([]*pgtest.Cluster, rounds)
	pgStart := make([]wal.LSN, rounds)
	for i := range backups {
		backups[i] = pgtest.BaseBackup(b, primary, fmt.Sprintf("catchup%d", i))
		pgStart[i] = backupStartLSN(b, backups[i])
	}
	sks := make([]*SK, rounds)
	skStart := make([]wal.LSN, rounds)
	for i := range sks {
		sks[i] = StartSKNamed(b, fmt.Sprintf("catchup_sk%d", i), primary.ConnString(), nil, "--log-level", "info")
		sks[i].WaitFlush(b, flushLSNOfPrimary(b, primary), time.Minute)
		skStart[i] = sks[i].FlushLSN(b)
		sks[i].Stop()
	}

	diskDir := filepath.Dir(sks[0].DataDir)
	tputExtend, tputInPlace := fdatasyncThroughput(b, diskDir, 256<<20)
	fmt.Printf("\nDisk: sequential 1 MiB writes + fdatasync: %.0f MB/s extending a file, %.0f MB/s over allocated blocks\n", tputExtend, tputInPlace)

	b.Logf("generating %.2f GiB of WAL", gib)
	createBenchTable(b, primary)
	target := currentLSN(b, primary) + wal.LSN(gib*float64(1<<30))
	for currentLSN(b, primary) < target {
		primary.Exec(b, "INSERT INTO bench SELECT repeat('x', 2000) FROM generate_series(1, 10000)")
	}
	primary.Exec(b, "SET synchronous_commit = on; INSERT INTO bench VALUES ('end')")
	end := flushLSNOfPrimary(b, primary)
	b.Logf("catch-up target %s", end)

	b.ResetTimer()
	var skRate, pgRate []float64
	// Bytes the disk wrote per byte of WAL caught up (the other nodes
	// are stopped meanwhile; the primary is idle).
	var skAmp, pgAmp []float64
	amp := func(to *[]float64, n float64) func() {
		w0, ok := diskWritten(diskDir)
		return func() {
			if w1, ok1 := diskWritten(diskDir); ok && ok1 {
				*to = append(*to, float64(w1-w0)/n)
			}
		}
	}
	runSK := func(i int) {
		defer amp(&skAmp, float64(end-skStart[i]))()
		t0 := time.Now()
		sks[i].Start()
		sks[i].WaitFlush(b, end, 30*time.Minute)
		d := time.Since(t0)
		sks[i].Stop()
		os.RemoveAll(sks[i].DataDir)
		n := float64(end - skStart[i])
		skRate = append(skRate, mib(n)/d.Seconds())
		b.Logf("P8 round %d safekeeper %7.1f MB/s (%.0f MB in %.2fs)", i, mib(n)/d.Seconds(), mib(n), d.Seconds())
	}
	runPG := func(i int) {
		defer amp(&pgAmp, float64(end-pgStart[i]))()
		c := backups[i]
		t0 := time.Now()
		c.StartAsStandby(b, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=catchup_pg%d", primary.Port, i), pgtest.Options{})
		pgtest.WaitFor(b, 30*time.Minute, fmt.Sprintf("standby %d to receive up to %s", i, end), func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			v, err := c.TryQueryValue(ctx, "SELECT pg_last_wal_receive_lsn()")
			if err != nil || v == "" {
				return false
			}
			lsn, err := wal.ParseLSN(v)
			return err == nil && lsn >= end
		})
		d := time.Since(t0)
		c.Stop(b, "immediate")
		os.RemoveAll(c.DataDir)
		n := float64(end - pgStart[i])
		pgRate = append(pgRate, mib(n)/d.Seconds())
		b.Logf("P8 round %d postgres   %7.1f MB/s (%.0f MB in %.2fs)", i, mib(n)/d.Seconds(), mib(n), d.Seconds())
	}
	for i := 0; i < rounds; i++ {
		if i%2 == 0 {
			runSK(i)
			runPG(i)
		} else {
			runPG(i)
			runSK(i)
		}
	}
	b.StopTimer()
	ratio := medianF(skRate) / medianF(pgRate)
	goalValue := 0.0
	valueNote := fmt.Sprintf("the disk's %.0f MB/s (1 MiB writes + fdatasync, extending) is below 500 MB/s, so the 500 MB/s goal does not apply", tputExtend)
	if tputExtend >= 500 {
		goalValue = 500
		valueNote = fmt.Sprintf("the disk allows 500 MB/s (%.0f MB/s with 1 MiB writes + fdatasync, extending), so that is a goal too", tputExtend)
	}
	fmt.Printf("\nP8 ingest catch-up of %.2f GiB with fsync, %d runs each alternating (medians):\n", mib(float64(end-skStart[0]))/1024, rounds)
	fmt.Printf("  safekeeper           %7.1f MB/s [%.1f–%.1f]\n", medianF(skRate), slices.Min(skRate), slices.Max(skRate))
	fmt.Printf("  PostgreSQL standby   %7.1f MB/s [%.1f–%.1f]\n", medianF(pgRate), slices.Min(pgRate), slices.Max(pgRate))
	fmt.Printf("  ratio safekeeper/postgres %.2f× (goal ≥ 1.0×); %s\n", ratio, valueNote)
	ampNote := ""
	if len(skAmp) > 0 && len(pgAmp) > 0 {
		ampNote = fmt.Sprintf("; the disk wrote %.2f bytes per byte of WAL for the safekeeper, %.2f for the standby (medians)", medianF(skAmp), medianF(pgAmp))
		fmt.Printf("  disk bytes written per byte of WAL: safekeeper %.2f, standby %.2f\n", medianF(skAmp), medianF(pgAmp))
	}
	b.ReportMetric(ratio, "P8-ratio")
	b.ReportMetric(medianF(skRate), "P8-safekeeper-MB/s")
	saveOrFail(b, benchreport.Result{
		ID: "P8", Scenario: "ingest catch-up with fsync, safekeeper started behind",
		Unit: "MB/s", Safekeeper: skRate, Reference: pgRate, RefName: "PostgreSQL standby (walreceiver)",
		Goal: "≥ 1.0×", GoalRatio: 1.0, HigherIsBetter: true, GoalValue: goalValue,
		Note: fmt.Sprintf("%.2f GiB behind; timed from starting the stopped node to its flushed end reaching the primary's; disk: sequential 1 MiB writes + fdatasync %.0f MB/s extending a file, %.0f MB/s over allocated blocks; %s%s",
			mib(float64(end-skStart[0]))/1024, tputExtend, tputInPlace, valueNote, ampNote),
	})
}

// clusterCPUNs is the CPU time of a PostgreSQL cluster: its postmaster
// (the PID in postmaster.pid) and the postmaster's children, procCPUNs of
// each. Children that exited are missing from the sum.
func clusterCPUNs(dataDir string) (time.Duration, bool) {
	raw, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, false
	}
	pids := []int{pm}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The parent's PID is the second field after the command name,
		// which ends at the last ')'.
		i := strings.LastIndexByte(string(st), ')')
		if f := strings.Fields(string(st[i+1:])); i >= 0 && len(f) > 1 && f[1] == strconv.Itoa(pm) {
			pids = append(pids, pid)
		}
	}
	var sum time.Duration
	for _, pid := range pids {
		d, ok := procCPUNs(pid)
		if !ok && pid == pm {
			return 0, false
		}
		sum += d
	}
	return sum, true
}
