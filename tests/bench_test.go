package tests

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// procCPU returns a process's user+system CPU time.
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line, in clock ticks (USER_HZ = 100).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, true
}

// cpuSampler follows a process's CPU time until stopped; the last sample
// before the process exits is kept (at most one interval short).
type cpuSampler struct {
	mu   sync.Mutex
	last time.Duration
	stop chan struct{}
	done chan struct{}
}

func sampleCPU(pidFn func() int) *cpuSampler {
	s := &cpuSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		pid := 0
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if pid == 0 {
				pid = pidFn()
			}
			if pid != 0 {
				if c, ok := procCPU(pid); ok {
					s.mu.Lock()
					s.last = c
					s.mu.Unlock()
				}
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *cpuSampler) finish() time.Duration {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

type benchResult struct {
	server, client string
	wall, cpu      time.Duration
	bytes          int64
}

// goClientStream streams [start, end) and discards it; returns wall time
// and the bytes received. cpuAt is called before the connection closes.
func goClientStream(b *testing.B, connString string, start, end wal.LSN, cpuAt func()) (time.Duration, int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	t0 := time.Now()
	conn, err := pgconn.Connect(ctx, connString)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	conn.Frontend().Send(&pgproto3.Query{String: fmt.Sprintf("START_REPLICATION %s TIMELINE 1", start)})
	if err := conn.Frontend().Flush(); err != nil {
		b.Fatal(err)
	}
	pos := start
	var n int64
	for pos < end {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			b.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if m.Data[0] == 'w' {
				k := len(m.Data) - 25
				pos = wal.LSN(binary.BigEndian.Uint64(m.Data[1:])) + wal.LSN(k)
				n += int64(k)
			}
		case *pgproto3.ErrorResponse:
			b.Fatalf("%s: %s", m.Code, m.Message)
		}
	}
	wall := time.Since(t0)
	cpuAt()
	return wall, n
}

func walsenderPID(primary *pgtest.Cluster, app string) func() int {
	return func() int {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		v, err := primary.TryQueryValue(ctx, fmt.Sprintf("SELECT pid FROM pg_stat_replication WHERE application_name = '%s'", app))
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(v)
		return pid
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkStreamComparison streams about 1 GiB (BENCH_GIB) of WAL that is
// already written, from the safekeeper and from the primary's own
// walsender, alternating which goes first, with pg_receivewal and with a
// minimal Go client that discards the bytes. It prints wall time and the
// server process's CPU seconds per GiB, their medians and the ratios
// safekeeper/postgres (below 1 means the safekeeper is cheaper).
func BenchmarkStreamComparison(b *testing.B) {
	gib := 1.0
	if v := os.Getenv("BENCH_GIB"); v != "" {
		gib, _ = strconv.ParseFloat(v, 64)
	}
	rounds := 3
	segMB := 16
	primary := pgtest.StartPrimary(b, pgtest.Options{WalSegSizeMB: segMB, Conf: map[string]string{
		"wal_keep_size": fmt.Sprintf("%dMB", int(gib*1024)+1024), "max_wal_size": "4GB",
		"synchronous_commit": "off",
	}})
	sk := StartSK(b, primary.ConnString())
	sk.WaitFlush(b, flushLSNOfPrimary(b, primary), 60*time.Second)
	st := sk.Status(b)
	tl := st.Timelines[0]
	segSize := uint64(segMB) << 20
	start := wal.SegmentStart(flushLSNOfPrimary(b, primary), segSize)
	_ = tl

	b.Logf("generating %.1f GiB of WAL", gib)
	primary.Exec(b, "CREATE TABLE bench(x text)")
	primary.Exec(b, "ALTER TABLE bench ALTER COLUMN x SET STORAGE PLAIN")
	target := start + wal.LSN(gib*float64(1<<30))
	for currentLSN(b, primary) < target {
		primary.Exec(b, "INSERT INTO bench SELECT repeat('x', 2000) FROM generate_series(1, 50000)")
	}
	primary.Exec(b, "SELECT pg_switch_wal()")
	end := wal.SegmentStart(flushLSNOfPrimary(b, primary), segSize)
	primary.Exec(b, "INSERT INTO bench VALUES ('beyond the end')")
	sk.WaitFlush(b, flushLSNOfPrimary(b, primary), 10*time.Minute)
	size := float64(end - start)
	b.Logf("streaming range %s..%s (%.2f GiB)", start, end, size/(1<<30))

	scratch := b.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "skbench-"); err == nil {
			scratch = d
			defer os.RemoveAll(d)
		}
	}
	type server struct {
		name string
		port int
		cpu  func(app string) func() int
	}
	servers := []server{
		{"safekeeper", sk.PGPort, func(string) func() int { return sk.PID }},
		{"postgres", primary.Port, func(app string) func() int { return walsenderPID(primary, app) }},
	}
	var results []benchResult
	run := func(srv server, client string, i int) {
		app := fmt.Sprintf("bench_%s_%d", client, i)
		pidFn := srv.cpu(app)
		var r benchResult
		r.server, r.client = srv.name, client
		switch client {
		case "pg_receivewal":
			dir := filepath.Join(scratch, app)
			os.MkdirAll(dir, 0o700)
			// Resume from the first segment of the range: an empty .partial.
			os.WriteFile(filepath.Join(dir, wal.SegmentFileName(1, wal.SegmentNo(start, segSize), segSize)+".partial"), nil, 0o600)
			var base time.Duration
			if srv.name == "safekeeper" {
				base, _ = procCPU(sk.PID())
			}
			sampler := sampleCPU(pidFn)
			cmd := exec.Command(primary.Bins.Path("pg_receivewal"), "-h", "127.0.0.1", "-p", fmt.Sprint(srv.port), "-U", "postgres",
				"-D", dir, "--endpos", end.String(), "--no-loop", "--no-sync", "--no-password")
			cmd.Env = append(os.Environ(), "PGAPPNAME="+app)
			t0 := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("pg_receivewal from %s: %v\n%s", srv.name, err, out)
			}
			r.wall = time.Since(t0)
			r.cpu = sampler.finish() - base
			r.bytes = int64(size)
			os.RemoveAll(dir)
		case "go":
			var base time.Duration
			if srv.name == "safekeeper" {
				base, _ = procCPU(sk.PID())
			}
			sampler := sampleCPU(pidFn)
			cs := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable replication=true application_name=%s", srv.port, app)
			r.wall, r.bytes = goClientStream(b, cs, start, end, func() { time.Sleep(20 * time.Millisecond) })
			r.cpu = sampler.finish() - base
		}
		results = append(results, r)
		b.Logf("%-10s %-13s wall %7.3fs  server CPU %6.3fs  (%.2f GiB)", r.server, r.client, r.wall.Seconds(), r.cpu.Seconds(), float64(r.bytes)/(1<<30))
	}
	b.ResetTimer()
	for round := 0; round < rounds; round++ {
		for _, client := range []string{"go", "pg_receivewal"} {
			order := servers
			if round%2 == 1 {
				order = []server{servers[1], servers[0]}
			}
			for _, srv := range order {
				run(srv, client, round)
			}
		}
	}
	b.StopTimer()

	perGiB := func(d time.Duration) float64 { return d.Seconds() / (size / (1 << 30)) }
	fmt.Printf("\nStreaming %.2f GiB of already-written WAL, %d rounds alternating (medians, per GiB):\n", size/(1<<30), rounds)
	fmt.Printf("%-14s %-11s %12s %14s\n", "client", "server", "wall s/GiB", "server CPU s/GiB")
	for _, client := range []string{"go", "pg_receivewal"} {
		med := map[string][2]time.Duration{}
		for _, srv := range servers {
			var walls, cpus []time.Duration
			for _, r := range results {
				if r.server == srv.name && r.client == client {
					walls, cpus = append(walls, r.wall), append(cpus, r.cpu)
				}
			}
			med[srv.name] = [2]time.Duration{median(walls), median(cpus)}
			fmt.Printf("%-14s %-11s %12.3f %14.3f\n", client, srv.name, perGiB(median(walls)), perGiB(median(cpus)))
		}
		sk, pg := med["safekeeper"], med["postgres"]
		wr := sk[0].Seconds() / pg[0].Seconds()
		cr := sk[1].Seconds() / pg[1].Seconds()
		fmt.Printf("%-14s %-11s %12.2f %14.2f   (safekeeper / postgres)\n", client, "ratio", wr, cr)
		b.ReportMetric(wr, client+"-wall-ratio")
		b.ReportMetric(cr, client+"-cpu-ratio")
	}
}
