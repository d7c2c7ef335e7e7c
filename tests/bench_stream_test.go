package tests

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/internal/benchreport"
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

// procCPUNs returns a process's CPU time at nanosecond resolution: the sum
// of its threads' run time in /proc/<pid>/task/*/schedstat (procCPU counts
// 10 ms ticks, too coarse for a stream of 100 MiB). Threads that already
// exited are missing from the sum; the Go runtime and a walsender keep
// theirs. Falls back to procCPU when schedstat is unavailable.
func procCPUNs(pid int) (time.Duration, bool) {
	threads, ok := threadCPUNs(pid)
	if !ok {
		return procCPU(pid)
	}
	var sum int64
	for _, ns := range threads {
		sum += ns
	}
	return time.Duration(sum), true
}

// threadCPUNs is the CPU time of each of a process's threads, by thread
// id, from schedstat; false when schedstat is unavailable. Threads that
// exit while it reads are left out.
func threadCPUNs(pid int) (map[string]int64, bool) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, false
	}
	out := make(map[string]int64, len(tasks))
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return nil, false
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, false
		}
		out[t.Name()] = ns
	}
	return out, true
}

// threadCPUDelta formats the CPU each thread used between two
// threadCPUNs samples, per GiB of gib, largest first.
func threadCPUDelta(before, after map[string]int64, gib float64) string {
	type th struct {
		id string
		ns int64
	}
	var ts []th
	for id, ns := range after {
		if d := ns - before[id]; d > 0 {
			ts = append(ts, th{id, d})
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].ns > ts[j].ns })
	var sb strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&sb, " %s:%.3f", t.id, float64(t.ns)/1e9/gib)
	}
	return sb.String()
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

// smapsRollupKB reads a field ("Pss", "Rss") of /proc/<pid>/smaps_rollup in
// KiB; 0 when unreadable.
func smapsRollupKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// standbyStatus is a standby status update ('r') reporting pos as
// written, flushed and applied.
func standbyStatus(pos wal.LSN) *pgproto3.CopyData {
	d := make([]byte, 34)
	d[0] = 'r'
	binary.BigEndian.PutUint64(d[1:], uint64(pos))
	binary.BigEndian.PutUint64(d[9:], uint64(pos))
	binary.BigEndian.PutUint64(d[17:], uint64(pos))
	return &pgproto3.CopyData{Data: d}
}

// startReplication sends START_REPLICATION at start on timeline 1 and waits
// for the server to enter copy-both mode.
func startReplication(ctx context.Context, conn *pgconn.PgConn, start wal.LSN) error {
	conn.Frontend().Send(&pgproto3.Query{String: fmt.Sprintf("START_REPLICATION %s TIMELINE 1", start)})
	if err := conn.Frontend().Flush(); err != nil {
		return err
	}
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			return nil
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("START_REPLICATION %s: %s: %s", start, m.Code, m.Message)
		}
	}
}

// streamDiscard streams [start, end) from connString and discards it,
// answering keepalives that ask for a reply. atEnd, when not nil, runs
// after the last byte and before the connection closes, with the backend
// process id the server announced. wall runs from before the connection
// to the last byte.
func streamDiscard(ctx context.Context, connString string, start, end wal.LSN, atEnd func(pid uint32)) (wall time.Duration, n int64, err error) {
	t0 := time.Now()
	conn, err := pgconn.Connect(ctx, connString)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.Background())
	if err := startReplication(ctx, conn, start); err != nil {
		return 0, 0, err
	}
	// Read with the frontend directly: pgconn's ReceiveMessage watches
	// the context with a goroutine per message, a client cost that has
	// nothing to do with the server measured. The context's deadline
	// becomes the socket's.
	if dl, ok := ctx.Deadline(); ok {
		conn.Conn().SetReadDeadline(dl)
	}
	fe := conn.Frontend()
	pos := start
	for pos < end {
		msg, err := fe.Receive()
		if err != nil {
			return 0, n, fmt.Errorf("at %s: %w", pos, err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			switch {
			case len(m.Data) >= 25 && m.Data[0] == 'w':
				k := len(m.Data) - 25
				pos = wal.LSN(binary.BigEndian.Uint64(m.Data[1:])) + wal.LSN(k)
				n += int64(k)
			case len(m.Data) >= 18 && m.Data[0] == 'k' && m.Data[17] == 1:
				fe.Send(standbyStatus(pos))
				if err := fe.Flush(); err != nil {
					return 0, n, err
				}
			}
		case *pgproto3.ErrorResponse:
			return 0, n, fmt.Errorf("at %s: %s: %s", pos, m.Code, m.Message)
		case *pgproto3.CopyDone:
			return 0, n, fmt.Errorf("server ended the stream at %s, before %s", pos, end)
		}
	}
	wall = time.Since(t0)
	if atEnd != nil {
		atEnd(conn.PID())
	}
	return wall, n, nil
}

// goClientStream streams [start, end) and discards it; returns wall time
// and the bytes received. cpuAt is called before the connection closes.
func goClientStream(b *testing.B, connString string, start, end wal.LSN, cpuAt func()) (time.Duration, int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	wall, n, err := streamDiscard(ctx, connString, start, end, func(uint32) { cpuAt() })
	if err != nil {
		b.Fatal(err)
	}
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

// benchEnvFloat and benchEnvInt read a benchmark knob, def when unset.
func benchEnvFloat(b *testing.B, name string, def float64) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return f
}

func benchEnvInt(b *testing.B, name string, def int) int {
	return int(benchEnvFloat(b, name, float64(def)))
}

// saveResult prints r's summary line and saves it for the report.
func saveResult(b *testing.B, r benchreport.Result) {
	b.Helper()
	fmt.Println(r.Summary())
	if err := benchreport.Save(r); err != nil {
		b.Error(err)
	}
}

// loopbackTCP is the ceiling a stream of size bytes has on this machine:
// a Go writer sending writeSize writes to a Go reader over 127.0.0.1 TCP,
// which discards them. It returns the reader's wall time from dialing to
// the last byte, and the CPU time of the writer's thread: what the
// kernel's loopback path costs a sender that does nothing else, the floor
// under any server's CPU per byte streamed.
func loopbackTCP(size int64, writeSize int) (wall, writerCPU time.Duration, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	type result struct {
		cpu time.Duration
		err error
	}
	werr := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			werr <- result{err: err}
			return
		}
		defer c.Close()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cpu0 := threadCPU()
		buf := make([]byte, writeSize)
		for left := size; left > 0; {
			k, err := c.Write(buf[:min(left, int64(len(buf)))])
			if err != nil {
				werr <- result{err: err}
				return
			}
			left -= int64(k)
		}
		werr <- result{cpu: threadCPU() - cpu0}
	}()
	t0 := time.Now()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	var got int64
	for got < size {
		k, err := c.Read(buf)
		got += int64(k)
		if err != nil {
			if errors.Is(err, io.EOF) && got >= size {
				break
			}
			return 0, 0, fmt.Errorf("loopback read after %d bytes: %w", got, err)
		}
	}
	wall = time.Since(t0)
	r := <-werr
	return wall, r.cpu, r.err
}

// threadCPU is the calling thread's user and system CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// consumerTiers returns the tier each consumer of sk was last served from,
// by application name, without failing the benchmark (it runs beside a
// stream).
func consumerTiers(sk *SK) map[string]string {
	resp, err := http.Get(sk.url("/v1/status"))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var st Status
	if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.Timelines) != 1 {
		return nil
	}
	out := map[string]string{}
	for _, c := range st.Timelines[0].Consumers {
		out[c.ApplicationName] = c.Tier
	}
	return out
}

// streamTarget is a server the streaming benchmark reads from.
type streamTarget struct {
	name   string // "safekeeper, memory tier", "safekeeper, files", "PostgreSQL walsender"
	key    string // short name for application_name
	port   int
	sk     *SK // nil for the primary
	memory bool
}

func (t streamTarget) connString(app string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable replication=true application_name=%s", t.port, app)
}

// receivewalRange runs pg_receivewal against the server on port into dir
// (created, and removed afterwards), from start to end, without fsync, its
// application_name dir's base name. It returns the wall time and the
// output (--verbose).
func receivewalRange(ctx context.Context, b *testing.B, primary *pgtest.Cluster, port int, dir string, start, end wal.LSN, segSize uint64) (time.Duration, []byte) {
	b.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// Resume from the first segment of the range: an empty .partial.
	if err := os.WriteFile(filepath.Join(dir, wal.SegmentFileName(1, wal.SegmentNo(start, segSize), segSize)+".partial"), nil, 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, primary.Bins.Path("pg_receivewal"), "-h", "127.0.0.1", "-p", fmt.Sprint(port), "-U", "postgres",
		"-D", dir, "--endpos", end.String(), "--no-loop", "--no-sync", "--no-password", "--verbose")
	cmd.Env = append(os.Environ(), "PGAPPNAME="+filepath.Base(dir))
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("pg_receivewal from port %d: %v\n%s", port, err, out)
	}
	wall := time.Since(t0)
	if os.Getenv("BENCH_DEBUG") != "" {
		b.Logf("pg_receivewal %s: %.2f s, its CPU user %.2f s, system %.2f s", filepath.Base(dir), wall.Seconds(),
			cmd.ProcessState.UserTime().Seconds(), cmd.ProcessState.SystemTime().Seconds())
	}
	return wall, out
}

// warmTmpfs writes n bytes into a file in dir and removes it, so that a
// following writer of as much gets memory the kernel just had in use.
func warmTmpfs(b *testing.B, dir string, n int64) {
	b.Helper()
	f, err := os.CreateTemp(dir, "warm-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4<<20)
	for n > 0 {
		k, err := f.Write(buf[:min(int64(len(buf)), n)])
		if err != nil {
			b.Fatalf("warming tmpfs: %v", err)
		}
		n -= int64(k)
	}
}

// rangeFiles returns the segment files under dir (searched to any depth)
// holding timeline 1's WAL from start to end, ".partial" or not.
func rangeFiles(b *testing.B, dir string, start, end wal.LSN, segSize uint64) []string {
	b.Helper()
	want := map[string]bool{}
	for seg := wal.SegmentNo(start, segSize); seg <= wal.SegmentNo(end-1, segSize); seg++ {
		want[wal.SegmentFileName(1, seg, segSize)] = true
	}
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && want[strings.TrimSuffix(d.Name(), ".partial")] {
			out = append(out, p)
		}
		return nil
	})
	if err != nil || len(out) != len(want) {
		b.Fatalf("%s: %d of the range's %d segment files found (%v)", dir, len(out), len(want), err)
	}
	return out
}

// warmFiles brings the files whole into the page cache and returns the
// share of their pages that already were (mincore). The file variants of
// the streaming scenarios read WAL from the page cache, as the walsender
// they are compared with does; this VM pages out file pages nobody touched
// for a minute (DAMON, docs/performance.md), which would otherwise turn
// either side's stream into a disk read at random.
func warmFiles(b *testing.B, paths []string) float64 {
	b.Helper()
	var pages, resident int
	buf := make([]byte, 1<<20)
	ps := os.Getpagesize()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		fi, err := f.Stat()
		if err != nil || fi.Size() == 0 {
			f.Close()
			continue
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			b.Fatal(err)
		}
		vec := make([]byte, (len(m)+ps-1)/ps)
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
		unix.Munmap(m)
		if errno != 0 {
			b.Fatal(errno)
		}
		in := 0
		for _, v := range vec {
			in += int(v & 1)
		}
		pages += len(vec)
		resident += in
		for off := int64(0); in < len(vec) && off < fi.Size(); off += int64(len(buf)) {
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
		f.Close()
	}
	if pages == 0 {
		return 1
	}
	return float64(resident) / float64(pages)
}

// createBenchTable creates the table the benchmarks fill to make WAL: plain
// storage, so that the WAL is as large as the rows (no TOAST compression),
// and no autovacuum, whose pass right after a load would slow whichever
// server is measured first.
func createBenchTable(b *testing.B, primary *pgtest.Cluster) {
	b.Helper()
	primary.Exec(b, "CREATE TABLE bench(x text)")
	primary.Exec(b, "ALTER TABLE bench ALTER COLUMN x SET STORAGE PLAIN")
	primary.Exec(b, "ALTER TABLE bench SET (autovacuum_enabled = off)")
}

// writeWALRange makes about gib GiB of WAL on primary from the segment
// after its flush position and switches WAL: [start, end) is whole
// segments. A row written after it keeps end below the flush position.
func writeWALRange(b *testing.B, primary *pgtest.Cluster, gib float64, segSize uint64) (start, end wal.LSN) {
	b.Helper()
	start = wal.SegmentStart(flushLSNOfPrimary(b, primary), segSize) + wal.LSN(segSize)
	b.Logf("generating %.2f GiB of WAL", gib)
	createBenchTable(b, primary)
	target := start + wal.LSN(gib*float64(1<<30))
	for currentLSN(b, primary) < target {
		primary.Exec(b, "INSERT INTO bench SELECT repeat('x', 2000) FROM generate_series(1, 20000)")
	}
	primary.Exec(b, "SELECT pg_switch_wal()")
	end = wal.SegmentStart(flushLSNOfPrimary(b, primary), segSize)
	primary.Exec(b, "INSERT INTO bench VALUES ('beyond the end')")
	return start, end
}

// BenchmarkStream measures the streaming side of issue 10's benchmark
// suite on about 1 GiB (BENCH_GIB) of WAL written once, with BENCH_ROUNDS
// (default 5) rounds that alternate which server goes first:
//
//   - P1: server CPU seconds per GiB streamed to a Go client that discards
//     the bytes, the safekeeper (memory tier; files) against the primary's
//     walsender process;
//   - P2: the same streams in MB/s against a loopback TCP ceiling measured
//     in the same round (Go writer to Go reader, 128 KiB writes, same bytes);
//     BENCH_P1_RUNS (default 3) streams per server in each round, the
//     order reversed from one to the next;
//   - P3: 8 and 64 concurrent discard streams, aggregate MB/s, against as
//     many walsenders; together they read twice the range, each stream its
//     own equal share, starting at positions spread over the range;
//   - P4: pg_receivewal catching up the range into tmpfs, wall time;
//     BENCH_P4_RUNS (default 3) runs per server in each round, the order
//     reversed from one run to the next, because its time swings more
//     than the others' (see below).
//
// "Memory tier" is a safekeeper whose --wal-memory-size holds the whole
// range (it ingested it while the WAL was generated); "files" is one with
// --wal-memory-size 0, reading segment files (in the page cache).
func BenchmarkStream(b *testing.B) {
	gib := benchEnvFloat(b, "BENCH_GIB", 1)
	rounds := benchEnvInt(b, "BENCH_ROUNDS", 5)
	p1Runs := benchEnvInt(b, "BENCH_P1_RUNS", 3)
	p4Runs := benchEnvInt(b, "BENCH_P4_RUNS", 3)
	const segMB = 16
	const segSize = uint64(segMB) << 20
	primary := pgtest.StartPrimary(b, pgtest.Options{WalSegSizeMB: segMB, Conf: map[string]string{
		"wal_keep_size": fmt.Sprintf("%dMB", int(gib*1024)+1024), "max_wal_size": "4GB",
		"synchronous_commit": "off",
		// 64 streams of P3 plus the two safekeepers and spares.
		"max_wal_senders": "80",
	}})
	// The window holds the range with room to spare: a window keeps at
	// least 7/8 of its size readable.
	memFlag := fmt.Sprintf("%dMB", int(gib*1024*1.5)+256)
	// Both keep the whole range locally (the harness's default
	// --wal-keep-size of 1GB would let retention remove its start).
	keep := fmt.Sprintf("%dMB", int(gib*1024)+1024)
	// BENCH_SK_ARGS adds flags to both safekeepers, for experiments
	// (--max-send-size 128kB).
	extra := strings.Fields(os.Getenv("BENCH_SK_ARGS"))
	skMem := StartSKNamed(b, "sk_memory", primary.ConnString(), nil,
		append([]string{"--wal-memory-size", memFlag, "--wal-keep-size", keep, "--log-level", "info"}, extra...)...)
	skFiles := StartSKNamed(b, "sk_files", primary.ConnString(), nil,
		append([]string{"--wal-memory-size", "0", "--wal-keep-size", keep, "--log-level", "info"}, extra...)...)
	flush := flushLSNOfPrimary(b, primary)
	skMem.WaitFlush(b, flush, 60*time.Second)
	skFiles.WaitFlush(b, flush, 60*time.Second)
	start, end := writeWALRange(b, primary, gib, segSize)
	flush = flushLSNOfPrimary(b, primary)
	skMem.WaitFlush(b, flush, 10*time.Minute)
	skFiles.WaitFlush(b, flush, 10*time.Minute)
	size := int64(end - start)
	sizeGiB := float64(size) / (1 << 30)
	b.Logf("streaming range %s..%s (%.2f GiB)", start, end, sizeGiB)

	// A timeline that receives no WAL for a minute drops its memory window;
	// a transaction id every 10 s keeps it while the rounds run.
	tickCtx, stopTick := context.WithCancel(context.Background())
	tickDone := make(chan struct{})
	go func() {
		defer close(tickDone)
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-tickCtx.Done():
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(tickCtx, 5*time.Second)
				primary.TryQueryValue(ctx, "SELECT txid_current()")
				cancel()
			}
		}
	}()
	defer func() { stopTick(); <-tickDone }()

	targets := []streamTarget{
		{name: "safekeeper, memory tier", key: "skmem", port: skMem.PGPort, sk: skMem, memory: true},
		{name: "safekeeper, files", key: "skfiles", port: skFiles.PGPort, sk: skFiles},
		{name: "PostgreSQL walsender", key: "pg", port: primary.Port},
	}
	pg := targets[2]
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Minute)
	defer cancel()

	// Before each stream from files, the range's files are brought back
	// into the page cache where the VM paged them out; what share was
	// still there is logged when it was not all.
	fileSets := map[string][]string{
		"skfiles": rangeFiles(b, skFiles.DataDir, start, end, segSize),
		"pg":      rangeFiles(b, filepath.Join(primary.DataDir, "pg_wal"), start, end, segSize),
	}
	warm := func(t streamTarget, what string) {
		if paths := fileSets[t.key]; paths != nil {
			if in := warmFiles(b, paths); in < 1 {
				b.Logf("%s: %.1f%% of %s's range was in the page cache; read back before the stream", what, 100*in, t.name)
			}
		}
	}

	// One stream, server CPU (all threads, schedstat): the safekeeper's
	// whole process from before the connection to the last byte; the
	// walsender's whole life to the last byte (it is forked for the
	// connection).
	debug := os.Getenv("BENCH_DEBUG") != ""
	single := func(t streamTarget, app string) (cpu, wall time.Duration) {
		warm(t, app)
		var base time.Duration
		var threads0, threads1 map[string]int64
		if t.sk != nil {
			if debug {
				threads0, _ = threadCPUNs(t.sk.PID())
			}
			base, _ = procCPUNs(t.sk.PID())
		}
		var end1 time.Duration
		wall, n, err := streamDiscard(ctx, t.connString(app), start, end, func(pid uint32) {
			if t.sk != nil {
				end1, _ = procCPUNs(t.sk.PID())
				if debug {
					threads1, _ = threadCPUNs(t.sk.PID())
				}
			} else {
				end1, _ = procCPUNs(int(pid))
			}
		})
		if err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
		if n < size {
			b.Fatalf("%s: %d bytes, want %d", t.name, n, size)
		}
		if debug && t.sk != nil {
			b.Logf("%s: CPU s/GiB per thread (main thread id %d):%s", app, t.sk.PID(), threadCPUDelta(threads0, threads1, sizeGiB))
		}
		return end1 - base, wall
	}

	// Warm-up, not counted: page cache, connections, and a check that the
	// memory-tier safekeeper serves the range from memory.
	tiersSeen := map[string]bool{}
	{
		stop := make(chan struct{})
		polled := make(chan struct{})
		go func() {
			defer close(polled)
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				if tier := consumerTiers(skMem)["warmup_skmem"]; tier != "" {
					tiersSeen[tier] = true
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		single(targets[0], "warmup_skmem")
		close(stop)
		<-polled
		single(targets[1], "warmup_skfiles")
		single(pg, "warmup_pg")
		if _, _, err := loopbackTCP(size, 128<<10); err != nil {
			b.Fatal(err)
		}
	}
	var seen []string
	for tier := range tiersSeen {
		seen = append(seen, tier)
	}
	sort.Strings(seen)
	b.Logf("memory-tier safekeeper served the warm-up stream from: %v", seen)
	if len(seen) != 1 || seen[0] != "memory" {
		b.Logf("WARNING: the memory-tier variant is not served from memory alone (%v)", seen)
	}

	// Samples per target key.
	cpuPerGiB := map[string][]float64{}
	mbps := map[string][]float64{}
	multi := map[int]map[string][]float64{8: {}, 64: {}}
	recvWall := map[string][]float64{}
	mb := func(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

	scratch := b.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "skbench-"); err == nil {
			scratch = d
			defer os.RemoveAll(d)
		}
	}

	// k concurrent streams, each of 2*size/k bytes (page-aligned), their
	// starts spread evenly over the range; aggregate bytes over the time
	// from the first connection to the last byte.
	concurrent := func(t streamTarget, k, round int) float64 {
		warm(t, fmt.Sprintf("p3_%s_%d_%d", t.key, k, round))
		per := (2 * size / int64(k)) &^ (wal.BlockSize - 1)
		spread := size - per
		var wg sync.WaitGroup
		errs := make(chan error, k)
		var total int64
		var mu sync.Mutex
		t0 := time.Now()
		for i := range k {
			s := start + wal.LSN((spread*int64(i)/int64(max(k-1, 1)))&^(wal.BlockSize-1))
			wg.Go(func() {
				_, n, err := streamDiscard(ctx, t.connString(fmt.Sprintf("p3_%s_%d_%d_%d", t.key, k, round, i)), s, s+wal.LSN(per), nil)
				if err != nil {
					errs <- fmt.Errorf("stream %d: %w", i, err)
					return
				}
				mu.Lock()
				total += n
				mu.Unlock()
			})
		}
		wg.Wait()
		wall := time.Since(t0)
		close(errs)
		for err := range errs {
			b.Fatalf("%s, %d streams: %v", t.name, k, err)
		}
		return mb(total, wall)
	}

	receivewal := func(t streamTarget, round int) time.Duration {
		warm(t, fmt.Sprintf("p4_%s_%d", t.key, round))
		wall, _ := receivewalRange(ctx, b, primary, t.port, filepath.Join(scratch, fmt.Sprintf("p4_%s_%d", t.key, round)), start, end, segSize)
		return wall
	}

	b.ResetTimer()
	for round := range rounds {
		order := append([]streamTarget(nil), targets...)
		if round%2 == 1 {
			order = []streamTarget{targets[2], targets[1], targets[0]}
		}
		// P1, P2; the loopback ceiling first in even rounds, last in odd.
		// P1's floor: the writer's CPU for the same bytes in 1 MiB
		// writes, the safekeeper's default message size.
		loop := func() {
			d, _, err := loopbackTCP(size, 128<<10)
			if err != nil {
				b.Fatal(err)
			}
			mbps["loopback"] = append(mbps["loopback"], mb(size, d))
			_, cpu, err := loopbackTCP(size, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			cpuPerGiB["loopback"] = append(cpuPerGiB["loopback"], cpu.Seconds()/sizeGiB)
		}
		if round%2 == 0 {
			loop()
		}
		// Each server streams p1Runs times a round, the order reversed
		// in every other run: the walsender's CPU per GiB spreads from
		// about 0.35 to 0.6 s/GiB between runs of the same round, so
		// five samples left P1's verdict to chance.
		for run := range p1Runs {
			for i := range order {
				t := order[i]
				if run%2 == 1 {
					t = order[len(order)-1-i]
				}
				cpu, wall := single(t, fmt.Sprintf("p1_%s_%d", t.key, round*p1Runs+run))
				cpuPerGiB[t.key] = append(cpuPerGiB[t.key], cpu.Seconds()/sizeGiB)
				mbps[t.key] = append(mbps[t.key], mb(size, wall))
			}
		}
		if round%2 == 1 {
			loop()
		}
		// P3.
		for _, k := range []int{8, 64} {
			for _, t := range order {
				multi[k][t.key] = append(multi[k][t.key], concurrent(t, k, round))
			}
		}
		// P4. Each run is preceded by writing and removing as much in
		// tmpfs: pg_receivewal's time is almost all its own system time
		// (BENCH_DEBUG=1 prints it), and that swung from 0.75 to 2.55 s
		// for the same GiB whichever server it read from, in its copies
		// into tmpfs pages (perf: copy_folio_from_iter_atomic) while the
		// server idled. Memory freed a few seconds earlier had been handed
		// back to the hypervisor, and touching it again is slow on this
		// VM; a run right after another was consistently fast.
		// On this VM a run lands in one of two modes, about 0.8 s or
		// 1.1-2.1 s for any server, with no pattern in which (2026-12-02,
		// 3rd session: a median of five per server fell on either side),
		// so each round runs each server p4Runs times.
		// One run first, not counted: in the committed run of
		// 2026-12-02's third session the round's first run drew the slow
		// mode in three rounds of five (2.31, 2.02 and 2.13 s, against
		// 8 slow runs in 25 for the same servers later in their rounds),
		// and which server comes first changes by round while the files
		// variant never does.
		warmTmpfs(b, scratch, int64(end-start)+64<<20)
		receivewal(pg, -1-round)
		for run := range p4Runs {
			for i := range order {
				t := order[i]
				if run%2 == 1 {
					t = order[len(order)-1-i]
				}
				warmTmpfs(b, scratch, int64(end-start)+64<<20)
				recvWall[t.key] = append(recvWall[t.key], receivewal(t, round*p4Runs+run).Seconds())
			}
		}
		b.Logf("round %d: one stream CPU s/GiB mem %.3f files %.3f pg %.3f loopback writer %.3f; MB/s mem %.0f files %.0f pg %.0f loopback %.0f; "+
			"8 streams MB/s mem %.0f files %.0f pg %.0f; 64 streams mem %.0f files %.0f pg %.0f; pg_receivewal s mem %.2f files %.2f pg %.2f",
			round, last(cpuPerGiB["skmem"]), last(cpuPerGiB["skfiles"]), last(cpuPerGiB["pg"]), last(cpuPerGiB["loopback"]),
			last(mbps["skmem"]), last(mbps["skfiles"]), last(mbps["pg"]), last(mbps["loopback"]),
			last(multi[8]["skmem"]), last(multi[8]["skfiles"]), last(multi[8]["pg"]),
			last(multi[64]["skmem"]), last(multi[64]["skfiles"]), last(multi[64]["pg"]),
			last(recvWall["skmem"]), last(recvWall["skfiles"]), last(recvWall["pg"]))
	}
	b.StopTimer()

	rangeNote := fmt.Sprintf("range %.2f GiB (%s..%s, 16 MiB segments), %d rounds alternating the servers' order, %d streams per server and round (P1, P2); memory tier: --wal-memory-size %s, warm-up stream served from %v; files: --wal-memory-size 0 (segments in the page cache: checked, and read back where they were not, before each stream from files, the walsender's too)",
		sizeGiB, start, end, rounds, p1Runs, memFlag, seen)
	variants := []struct{ key, text string }{{"skmem", "from the memory tier"}, {"skfiles", "from files"}}
	for _, v := range variants {
		r := benchreport.Result{
			ID: "P1", Scenario: "server CPU per GiB streamed, one Go discard client, safekeeper " + v.text,
			Unit: "s/GiB", Safekeeper: cpuPerGiB[v.key], Reference: cpuPerGiB["pg"], RefName: "PostgreSQL walsender",
			Goal: "≤ 0.5×", GoalRatio: 0.5,
			Note: rangeNote + fmt.Sprintf("; floor: a bare Go writer sending the same bytes over loopback TCP in 1 MiB writes used %s s/GiB of its thread's CPU, against the goal's %.3f",
				benchreport.Spread(cpuPerGiB["loopback"]), 0.5*medianF(cpuPerGiB["pg"])),
		}
		saveResult(b, r)
		if ratio, ok := r.Ratio(); ok {
			b.ReportMetric(ratio, "P1-"+v.key+"-cpu-ratio")
		}
	}
	for _, v := range variants {
		saveResult(b, benchreport.Result{
			ID: "P2", Scenario: "one Go discard stream, MB/s, safekeeper " + v.text,
			Unit: "MB/s", Safekeeper: mbps[v.key], Reference: mbps["loopback"], RefName: "loopback TCP, Go, 128 KiB writes",
			Goal: "≥ 0.9×", GoalRatio: 0.9, HigherIsBetter: true,
			Note: fmt.Sprintf("the walsender did %s MB/s on the same streams", benchreport.Spread(mbps["pg"])),
		})
	}
	for _, k := range []int{8, 64} {
		per := float64((2*size/int64(k))&^(wal.BlockSize-1)) / (1 << 20)
		for _, v := range variants {
			saveResult(b, benchreport.Result{
				ID:       "P3",
				Scenario: fmt.Sprintf("%d concurrent Go discard streams, aggregate MB/s, safekeeper %s", k, v.text),
				Unit:     "MB/s", Safekeeper: multi[k][v.key], Reference: multi[k]["pg"], RefName: fmt.Sprintf("%d PostgreSQL walsenders", k),
				Goal: "≥ 1.2×", GoalRatio: 1.2, HigherIsBetter: true,
				Note: fmt.Sprintf("%d streams of %.0f MiB each (twice the %.2f GiB range together), starts spread evenly over the range", k, per, sizeGiB),
			})
		}
	}
	for _, v := range variants {
		saveResult(b, benchreport.Result{
			ID: "P4", Scenario: "pg_receivewal catch-up into tmpfs, wall time, safekeeper " + v.text,
			Unit: "s", Safekeeper: recvWall[v.key], Reference: recvWall["pg"], RefName: "PostgreSQL walsender",
			Goal: "≤ 1.0×", GoalRatio: 1.0,
			Note: fmt.Sprintf("%.2f GiB from the range's first segment to --endpos into /dev/shm, --no-sync; each run preceded by writing and removing as much in tmpfs (writing into memory freed a while before is slow on this VM, whichever server); each round starts with one run from the walsender that is not counted", sizeGiB),
		})
	}
}

func last(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[len(xs)-1]
}

// idleConsumer is a replication connection tailing at the end of WAL that
// only answers keepalives, until its context ends.
type idleConsumer struct {
	conn *pgconn.PgConn
	done chan struct{}
}

// startIdleConsumer connects to connString, starts replication at pos and
// leaves a goroutine answering keepalives.
func startIdleConsumer(ctx context.Context, connString string, pos wal.LSN) (*idleConsumer, error) {
	conn, err := pgconn.Connect(ctx, connString)
	if err != nil {
		return nil, err
	}
	if err := startReplication(ctx, conn, pos); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	c := &idleConsumer{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			msg, err := conn.ReceiveMessage(ctx)
			if err != nil {
				return
			}
			if m, ok := msg.(*pgproto3.CopyData); ok {
				switch {
				case len(m.Data) >= 25 && m.Data[0] == 'w':
					pos = wal.LSN(binary.BigEndian.Uint64(m.Data[1:])) + wal.LSN(len(m.Data)-25)
				case len(m.Data) >= 18 && m.Data[0] == 'k' && m.Data[17] == 1:
					conn.Frontend().Send(standbyStatus(pos))
					if conn.Frontend().Flush() != nil {
						return
					}
				}
			}
		}
	}()
	return c, nil
}

// closeIdleConsumers ends the consumers' goroutines (cancel must be the
// cancel of the context they were started with) and closes them.
func closeIdleConsumers(cancel context.CancelFunc, cs []*idleConsumer) {
	cancel()
	for _, c := range cs {
		<-c.done
		c.conn.Close(context.Background())
	}
}

// raiseNoFile raises this process's open-file limit to at least n (up to
// the hard limit).
func raiseNoFile(b *testing.B, n uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur = min(n, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur < n {
		b.Logf("open-file limit %d is below the %d this benchmark wants", lim.Cur, n)
	}
}

// BenchmarkIdleConsumers is P7 of issue 10's suite: the memory a
// safekeeper spends per idle tailing consumer, BENCH_CONSUMERS (1000)
// replication connections that started at the end of WAL and wait, against
// the memory of a PostgreSQL walsender process (BENCH_WALSENDERS, 30, of
// them measured). Both RSS and PSS are reported: a walsender is a forked
// backend that shares most of its pages with the postmaster, so its PSS is
// the fair figure. Each of BENCH_P7_ROUNDS (3) rounds starts a fresh
// safekeeper, samples its memory as consumers connect (the plot's series)
// and then its CPU over BENCH_IDLE_SECONDS (10) with all of them idle.
func BenchmarkIdleConsumers(b *testing.B) {
	n := benchEnvInt(b, "BENCH_CONSUMERS", 1000)
	nws := benchEnvInt(b, "BENCH_WALSENDERS", 30)
	rounds := benchEnvInt(b, "BENCH_P7_ROUNDS", 3)
	idle := time.Duration(benchEnvFloat(b, "BENCH_IDLE_SECONDS", 10) * float64(time.Second))
	// The consumers' sockets here; the safekeeper inherits the limit.
	raiseNoFile(b, uint64(n)+1024)
	primary := pgtest.StartPrimary(b, pgtest.Options{Conf: map[string]string{
		"max_wal_senders": strconv.Itoa(nws + 10),
	}})
	primary.Exec(b, "CREATE TABLE t(x int)")
	primary.Exec(b, "INSERT INTO t SELECT generate_series(1, 10000)")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	step := max(n/20, 1)
	var rssPer, pssPer, idleCPU []float64
	var series map[string][]float64
	for round := range rounds {
		sk := StartSKNamed(b, fmt.Sprintf("sk_p7_%d", round), primary.ConnString(), nil, "--log-level", "info")
		sk.WaitFlush(b, flushLSNOfPrimary(b, primary), 60*time.Second)
		pos := sk.FlushLSN(b)
		pid := sk.PID()
		rss0, pss0 := procStatusKB(pid, "VmRSS"), smapsRollupKB(pid, "Pss")
		s := map[string][]float64{"consumers": {0}, "safekeeper RSS KiB": {0}, "safekeeper PSS KiB": {0}}
		cctx, ccancel := context.WithCancel(ctx)
		cs := make([]*idleConsumer, 0, n)
		for i := range n {
			c, err := startIdleConsumer(cctx, fmt.Sprintf("%s application_name=idle_%d", sk.ConnString(), i), pos)
			if err != nil {
				closeIdleConsumers(ccancel, cs)
				b.Fatalf("consumer %d: %v", i, err)
			}
			cs = append(cs, c)
			if (i+1)%step == 0 || i+1 == n {
				s["consumers"] = append(s["consumers"], float64(i+1))
				s["safekeeper RSS KiB"] = append(s["safekeeper RSS KiB"], float64(procStatusKB(pid, "VmRSS")-rss0))
				s["safekeeper PSS KiB"] = append(s["safekeeper PSS KiB"], float64(smapsRollupKB(pid, "Pss")-pss0))
			}
		}
		pgtest.WaitFor(b, 60*time.Second, fmt.Sprintf("%d consumers in the safekeeper's status", n), func() bool {
			st := sk.Status(b)
			return len(st.Timelines[0].Consumers) >= n
		})
		rss1, pss1 := procStatusKB(pid, "VmRSS"), smapsRollupKB(pid, "Pss")
		c0, _ := procCPUNs(pid)
		time.Sleep(idle) // the measurement window, not a wait for a condition
		c1, _ := procCPUNs(pid)
		rssPer = append(rssPer, float64(rss1-rss0)/float64(n))
		pssPer = append(pssPer, float64(pss1-pss0)/float64(n))
		idleCPU = append(idleCPU, 100*(c1-c0).Seconds()/idle.Seconds())
		if series == nil {
			series = s
		}
		b.Logf("round %d: safekeeper RSS %d → %d KiB, PSS %d → %d KiB with %d idle consumers (%.1f / %.1f KiB each); CPU %v in %v idle",
			round, rss0, rss1, pss0, pss1, n, last(rssPer), last(pssPer), c1-c0, idle)
		closeIdleConsumers(ccancel, cs)
		sk.Stop()
	}

	// The reference: idle walsenders on the primary, measured one by one.
	wctx, wcancel := context.WithCancel(ctx)
	pos := flushLSNOfPrimary(b, primary)
	ws := make([]*idleConsumer, 0, nws)
	for i := range nws {
		c, err := startIdleConsumer(wctx, primary.ReplConnString()+fmt.Sprintf(" application_name=idle_%d", i), pos)
		if err != nil {
			closeIdleConsumers(wcancel, ws)
			b.Fatalf("walsender %d: %v", i, err)
		}
		ws = append(ws, c)
	}
	pgtest.WaitFor(b, 60*time.Second, fmt.Sprintf("%d idle walsenders streaming", nws), func() bool {
		return primary.QueryValue(b, "SELECT count(*) FROM pg_stat_replication WHERE application_name LIKE 'idle_%' AND state = 'streaming'") == strconv.Itoa(nws)
	})
	var wsRSS, wsPSS []float64
	for _, c := range ws {
		pid := int(c.conn.PID())
		wsRSS = append(wsRSS, float64(procStatusKB(pid, "VmRSS")))
		wsPSS = append(wsPSS, float64(smapsRollupKB(pid, "Pss")))
	}
	closeIdleConsumers(wcancel, ws)

	for _, m := range []struct {
		what, source string
		sk, ref      []float64
		seriesOf     string
	}{
		{"RSS", "VmRSS of /proc/PID/status", rssPer, wsRSS, "safekeeper RSS KiB"},
		{"PSS", "Pss of /proc/PID/smaps_rollup", pssPer, wsPSS, "safekeeper PSS KiB"},
	} {
		saveResult(b, benchreport.Result{
			ID:       "P7",
			Scenario: fmt.Sprintf("%s per idle tailing consumer, %d consumers", m.what, n),
			Unit:     "KiB", Safekeeper: m.sk, Reference: m.ref,
			RefName: fmt.Sprintf("PostgreSQL walsender process %s", m.what),
			Goal:    "≤ 64 KiB each", GoalValue: 64,
			Series: map[string][]float64{"consumers": series["consumers"], m.seriesOf: series[m.seriesOf]},
			Note: fmt.Sprintf("%s. Safekeeper: its growth from before the first consumer to %d connected, divided by %d, a fresh safekeeper per round. Walsender: each of %d idle walsender processes' own.",
				m.source, n, n, nws),
		})
	}
	saveResult(b, benchreport.Result{
		ID:       "P7",
		Scenario: fmt.Sprintf("safekeeper CPU with %d idle tailing consumers, no WAL written", n),
		Unit:     "% of a core", Safekeeper: idleCPU,
		Goal: "≈ 0 (≤ 1%)", GoalValue: 1,
		Note: fmt.Sprintf("CPU time of the safekeeper process (all threads) over %v with the consumers connected and nothing written", idle),
	})
}
