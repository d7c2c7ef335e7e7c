package tests

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// lagSampler records the largest archive lag a safekeeper reports while
// it runs.
type lagSampler struct {
	mu     sync.Mutex
	max    uint64
	stop   chan struct{}
	done   chan struct{}
	stored uint64
}

func sampleLag(b *testing.B, sk *SK) *lagSampler {
	s := &lagSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			st := sk.archStatus(b)
			s.mu.Lock()
			if st.Archive != nil && st.Archive.LagBytes > s.max {
				s.max = st.Archive.LagBytes
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *lagSampler) finish() uint64 {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max
}

// BenchmarkArchive measures the archive half (issue 6 acceptance 9), in
// one run on one machine:
//
//   - offload: about 512 MiB of WAL (BENCH_ARCHIVE_MIB) is generated on a
//     primary as fast as it can go, with three safekeepers streaming it:
//     one offloading with zstd, one without compression, both to file://
//     archives, and one without an archive. It prints the ingest rate, the
//     largest archive lag seen during the load (the offloader keeps pace
//     when it stays a few segments), how long the lag takes to drain after
//     the load, and the bytes stored per WAL byte.
//   - catch-up reads: the same range streamed to a discarding Go client
//     from the safekeeper whose local copies were removed (the archive
//     tier, zstd) and from the one that kept them (local files),
//     alternating, BENCH_ROUNDS (default 5) rounds; medians and the ratio.
func BenchmarkArchive(b *testing.B) {
	mib := 512
	if v := os.Getenv("BENCH_ARCHIVE_MIB"); v != "" {
		mib, _ = strconv.Atoi(v)
	}
	rounds := 5
	if v := os.Getenv("BENCH_ROUNDS"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	const segMB = 16
	const segSize = segMB << 20
	primary := pgtest.StartPrimary(b, pgtest.Options{WalSegSizeMB: segMB, Conf: map[string]string{
		"wal_keep_size": fmt.Sprintf("%dMB", mib+1024), "max_wal_size": "4GB", "synchronous_commit": "off",
	}})
	zstdArchive, plainArchive := fileArchive(b), fileArchive(b)
	skZstd := StartSK(b, primary.ConnString(), "--archive", zstdArchive.url, "--wal-keep-size", "0")
	skPlain := StartSK(b, primary.ConnString(), "--archive", plainArchive.url, "--archive-compression", "none", "--wal-keep-size", "0")
	skLocal := StartSK(b, primary.ConnString()) // keeps its WAL (harness default --wal-keep-size 1GB)
	for _, sk := range []*SK{skZstd, skPlain, skLocal} {
		sk.WaitFlush(b, flushLSNOfPrimary(b, primary), 60*time.Second)
	}
	start := wal.SegmentStart(flushLSNOfPrimary(b, primary), segSize) + segSize
	createBenchTable(b, primary)
	primary.Exec(b, "SELECT pg_switch_wal()")

	b.ResetTimer()
	lagZ, lagP := sampleLag(b, skZstd), sampleLag(b, skPlain)
	t0 := time.Now()
	target := start + wal.LSN(mib)<<20
	for currentLSN(b, primary) < target {
		// Random hex: about 2:1 compressible, like much real WAL, unlike
		// repeated strings.
		primary.Exec(b, "INSERT INTO bench SELECT md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) FROM generate_series(1, 20000) g")
	}
	primary.Exec(b, "SELECT pg_switch_wal()")
	end := wal.SegmentStart(flushLSNOfPrimary(b, primary), segSize)
	for _, sk := range []*SK{skZstd, skPlain, skLocal} {
		sk.WaitFlush(b, end, 10*time.Minute)
	}
	load := time.Since(t0)
	drain := func(sk *SK) time.Duration {
		pgtest.WaitFor(b, 10*time.Minute, "the archive to catch up", func() bool {
			st := sk.archStatus(b)
			return st.lsn(b, st.BackupLSN) >= end
		})
		return time.Since(t0) - load
	}
	var dz, dp time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); dz = drain(skZstd) }()
	go func() { defer wg.Done(); dp = drain(skPlain) }()
	wg.Wait()
	maxZ, maxP := lagZ.finish(), lagP.finish()
	b.StopTimer()
	size := float64(end - start)
	mb := func(v float64) float64 { return v / (1 << 20) }
	stored := func(ae archiveEnv, sk *SK) float64 {
		st := sk.archStatus(b)
		ar, err := archive.New(ae.store, st.TenantID, st.TimelineID, archive.Zstd)
		if err != nil {
			b.Fatal(err)
		}
		segs, _, _, err := ar.List(context.Background(), segSize)
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for _, e := range segs {
			if lsn := wal.LSN(e.SegNo * segSize); lsn >= start && lsn < end {
				n += e.Size
			}
		}
		return float64(n)
	}
	fmt.Printf("\nOffload of %.0f MiB of WAL generated at %.1f MB/s (16 MB segments, file:// archives, concurrency 4):\n",
		mb(size), mb(size)/load.Seconds())
	fmt.Printf("%-12s %16s %22s %16s\n", "compression", "max lag (MiB)", "drain after load (s)", "stored/WAL")
	fmt.Printf("%-12s %16.1f %22.2f %16.3f\n", "zstd", mb(float64(maxZ)), dz.Seconds(), stored(zstdArchive, skZstd)/size)
	fmt.Printf("%-12s %16.1f %22.2f %16.3f\n", "none", mb(float64(maxP)), dp.Seconds(), stored(plainArchive, skPlain)/size)
	b.ReportMetric(mb(size)/load.Seconds(), "ingest-MB/s")
	b.ReportMetric(mb(float64(maxZ)), "zstd-max-lag-MiB")
	b.ReportMetric(mb(float64(maxP)), "none-max-lag-MiB")

	// Catch-up reads of [start, end): archive tier vs local files.
	pgtest.WaitFor(b, time.Minute, "the zstd safekeeper to remove its local copies", func() bool {
		st := skZstd.archStatus(b)
		return st.lsn(b, st.LocalStart) >= end
	})
	var fromArchive, fromLocal []time.Duration
	read := func(sk *SK) time.Duration {
		d, n := goClientStream(b, sk.ConnString(), start, end, func() {})
		if n < int64(size) {
			b.Fatalf("read %d bytes, want %d", n, int64(size))
		}
		return d
	}
	for i := 0; i < rounds; i++ {
		if i%2 == 0 {
			fromArchive = append(fromArchive, read(skZstd))
			fromLocal = append(fromLocal, read(skLocal))
		} else {
			fromLocal = append(fromLocal, read(skLocal))
			fromArchive = append(fromArchive, read(skZstd))
		}
	}
	ma, ml := median(fromArchive), median(fromLocal)
	fmt.Printf("\nCatch-up read of %.0f MiB to a discarding Go client, %d rounds alternating (medians):\n", mb(size), rounds)
	fmt.Printf("%-22s %10s %10s\n", "source", "wall (s)", "MB/s")
	fmt.Printf("%-22s %10.3f %10.1f\n", "archive (zstd, file)", ma.Seconds(), mb(size)/ma.Seconds())
	fmt.Printf("%-22s %10.3f %10.1f\n", "local files", ml.Seconds(), mb(size)/ml.Seconds())
	fmt.Printf("%-22s %10.2f\n", "ratio archive/local", ma.Seconds()/ml.Seconds())
	b.ReportMetric(mb(size)/ma.Seconds(), "archive-read-MB/s")
	b.ReportMetric(mb(size)/ml.Seconds(), "local-read-MB/s")
}
