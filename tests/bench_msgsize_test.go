package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/benchreport"
	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// BenchmarkMessageSize asks whether XLogData messages larger than
// PostgreSQL's 128 KiB (--max-send-size) help the two clients that matter:
// pg_receivewal catching up into tmpfs, and a hot standby's walreceiver
// catching up from a base backup. Two safekeepers, one per message size,
// ingest the same BENCH_MSG_GIB (default 0.5) of WAL; BENCH_MSG_ROUNDS
// (default 3) rounds alternate which goes first. Both serve from their
// segment files (--wal-memory-size 0), so that only the message size
// differs: 128 KiB messages go out with sendfile, 1 MiB ones are copied
// (sendfileMax in pkg/walsender).
func BenchmarkMessageSize(b *testing.B) {
	gib := benchEnvFloat(b, "BENCH_MSG_GIB", 0.5)
	rounds := benchEnvInt(b, "BENCH_MSG_ROUNDS", 3)
	const segSize = uint64(16) << 20
	primary := pgtest.StartPrimary(b, pgtest.Options{WalSegSizeMB: 16, Conf: map[string]string{
		"wal_keep_size": fmt.Sprintf("%dMB", int(gib*1024)+1024), "max_wal_size": "4GB",
		"synchronous_commit": "off",
	}})
	type variant struct {
		key, flag string
		sk        *SK
	}
	variants := []*variant{{key: "128k", flag: "128kB"}, {key: "1m", flag: "1MB"}}
	for _, v := range variants {
		v.sk = StartSKNamed(b, "sk_msg_"+v.key, primary.ConnString(), nil, "--max-send-size", v.flag, "--wal-memory-size", "0")
	}
	flush := flushLSNOfPrimary(b, primary)
	for _, v := range variants {
		v.sk.WaitFlush(b, flush, 60*time.Second)
	}
	// Base backups for the walreceiver runs, taken before the WAL of the
	// range: each standby catches up all of it, from a safekeeper.
	backups := map[string][]*pgtest.Cluster{}
	for _, v := range variants {
		for i := range rounds {
			backups[v.key] = append(backups[v.key], pgtest.BaseBackup(b, primary, fmt.Sprintf("standby_%s_%d", v.key, i)))
		}
	}
	start, end := writeWALRange(b, primary, gib, segSize)
	flush = flushLSNOfPrimary(b, primary)
	for _, v := range variants {
		v.sk.WaitFlush(b, flush, 10*time.Minute)
	}
	size := float64(end - start)
	b.Logf("range %s..%s (%.2f GiB)", start, end, size/(1<<30))

	scratch := b.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "skmsg-"); err == nil {
			scratch = d
			defer os.RemoveAll(d)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()

	recvWall := map[string][]float64{}
	recvCPU := map[string][]float64{}
	standbyWall := map[string][]float64{}
	receivewal := func(v *variant, round int) {
		warmTmpfs(b, scratch, int64(end-start)+64<<20) // as in BenchmarkStream's P4
		cpu0, _ := procCPUNs(v.sk.PID())
		wall, out := receivewalRange(ctx, b, primary, v.sk.PGPort, filepath.Join(scratch, fmt.Sprintf("msg_%s_%d", v.key, round)), start, end, segSize)
		if os.Getenv("BENCH_DEBUG") != "" {
			b.Logf("pg_receivewal from %s: %s\n%s", v.key, wall, out)
		}
		cpu1, _ := procCPUNs(v.sk.PID())
		recvWall[v.key] = append(recvWall[v.key], wall.Seconds())
		recvCPU[v.key] = append(recvCPU[v.key], (cpu1-cpu0).Seconds()/(size/(1<<30)))
	}
	standby := func(v *variant, round int) {
		st := backups[v.key][round]
		conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable application_name=msg_standby_%s_%d", v.sk.PGPort, v.key, round)
		t0 := time.Now()
		st.StartAsStandby(b, conninfo, pgtest.Options{})
		pgtest.WaitFor(b, 10*time.Minute, "the standby to receive the range", func() bool {
			qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
			defer qcancel()
			v, err := st.TryQueryValue(qctx, "SELECT pg_last_wal_receive_lsn()")
			if err != nil {
				return false
			}
			lsn, err := wal.ParseLSN(v)
			return err == nil && lsn >= end
		})
		standbyWall[v.key] = append(standbyWall[v.key], time.Since(t0).Seconds())
		st.Stop(b, "immediate")
	}

	// Warm-up, not counted (page cache, first connections).
	for _, v := range variants {
		receivewal(v, -1)
	}
	for k := range recvWall {
		recvWall[k], recvCPU[k] = nil, nil
	}
	b.ResetTimer()
	for round := range rounds {
		order := variants
		if round%2 == 1 {
			order = []*variant{variants[1], variants[0]}
		}
		for _, v := range order {
			receivewal(v, round)
		}
		for _, v := range order {
			standby(v, round)
		}
		b.Logf("round %d: pg_receivewal %v s, standby %v s", round, recvWall, standbyWall)
	}
	b.StopTimer()

	note := fmt.Sprintf("%.2f GiB range, %d rounds alternating; both safekeepers serve from segment files (--wal-memory-size 0; sendfile for 128 KiB messages, a copy for 1 MiB ones); each pg_receivewal run preceded by writing and removing as much in tmpfs", size/(1<<30), rounds)
	saveResult(b, benchreport.Result{
		ID: "S1", Scenario: "pg_receivewal catch-up into tmpfs, wall time: 1 MiB messages against 128 KiB",
		Unit: "s", Safekeeper: recvWall["1m"], Reference: recvWall["128k"], RefName: "the safekeeper with 128 KiB messages",
		Goal: "< 1.0× if larger messages help", GoalRatio: 1.0, Note: note,
	})
	saveResult(b, benchreport.Result{
		ID: "S2", Scenario: "safekeeper CPU s/GiB serving pg_receivewal: 1 MiB messages against 128 KiB",
		Unit: "s/GiB", Safekeeper: recvCPU["1m"], Reference: recvCPU["128k"], RefName: "the safekeeper with 128 KiB messages",
		Goal: "< 1.0× if larger messages help", GoalRatio: 1.0, Note: note,
	})
	saveResult(b, benchreport.Result{
		ID: "S3", Scenario: "hot standby catch-up from a base backup (start to last byte received), wall time: 1 MiB messages against 128 KiB",
		Unit: "s", Safekeeper: standbyWall["1m"], Reference: standbyWall["128k"], RefName: "the safekeeper with 128 KiB messages",
		Goal: "< 1.0× if larger messages help", GoalRatio: 1.0, Note: note + "; the standby writes and fsyncs what it receives, and replays it meanwhile",
	})
}
