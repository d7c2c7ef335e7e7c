package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
)

// skConninfo is a primary_conninfo pointing a standby at the safekeeper.
func skConninfo(sk *SK) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=standby1", sk.PGPort)
}

// Acceptance 3: a hot standby whose primary_conninfo points at the
// safekeeper streams through it.
func TestHotStandbyThroughSafekeeper(t *testing.T) {
	primary, sk := startPair(t, 16, nil)
	primary.Exec(t, "CREATE TABLE items(id int primary key, note text)")
	standby := pgtest.StartStandby(t, primary, skConninfo(sk), pgtest.Options{WalSegSizeMB: 16})
	primary.Exec(t, "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
	standby.WaitForQuery(t, "SELECT count(*) FROM items", "1000", 60*time.Second)
	primary.Exec(t, "INSERT INTO items VALUES (1001, 'after')")
	standby.WaitForQuery(t, "SELECT note FROM items WHERE id = 1001", "after", 60*time.Second)
	// The standby is a registered consumer with feedback.
	pgtest.WaitFor(t, 30*time.Second, "standby feedback in /v1/status", func() bool {
		for _, c := range sk.Status(t).Timelines[0].Consumers {
			if c.ApplicationName == "standby1" && c.Feedback != nil && c.Feedback.FlushLSN != "0/0" {
				return true
			}
		}
		return false
	})
}

// Acceptance 4: with synchronous_standby_names naming the safekeeper,
// commits complete while it runs, block while it is stopped, and complete
// after it restarts.
func TestSynchronousCommit(t *testing.T) {
	primary, sk := startPair(t, 16, map[string]string{"synchronous_standby_names": "safekeeper"})
	primary.WaitForQuery(t, "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'safekeeper'", "sync", 30*time.Second)
	primary.Exec(t, "CREATE TABLE s(id int)")
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := primary.TryQueryValue(ctx, fmt.Sprintf("INSERT INTO s VALUES (%d) RETURNING id", i))
		cancel()
		if err != nil {
			t.Fatalf("synchronous commit %d while the safekeeper runs: %v", i, err)
		}
	}

	sk.Stop()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		_, err := primary.TryQueryValue(ctx, "INSERT INTO s VALUES (100) RETURNING id")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("commit completed while the synchronous safekeeper was down (err=%v)", err)
	case <-time.After(3 * time.Second):
	}
	sk.Start()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("blocked commit failed after restart: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("blocked commit did not complete after the safekeeper restarted")
	}
	if got := primary.QueryValue(t, "SELECT count(*) FROM s"); got != "21" {
		t.Fatalf("count = %s, want 21", got)
	}
}

// Acceptance 5: kill -9 of the safekeeper while the primary commits
// synchronously through it, five times; every commit the primary reported
// is present afterwards and the WAL bytes match the primary's.
func TestKill9Durability(t *testing.T) {
	primary, sk := startPair(t, 1, map[string]string{"synchronous_standby_names": "safekeeper"})
	primary.WaitForQuery(t, "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'safekeeper'", "sync", 30*time.Second)
	primary.Exec(t, "CREATE TABLE k(id int primary key, pad text)")

	var (
		mu        sync.Mutex
		committed []int
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; ; i += 2 {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				_, err := primary.TryQueryValue(ctx, fmt.Sprintf("INSERT INTO k VALUES (%d, repeat('x', 500)) RETURNING id", i))
				cancel()
				if err != nil {
					t.Errorf("insert %d: %v", i, err)
					return
				}
				mu.Lock()
				committed = append(committed, i)
				mu.Unlock()
			}
		}(w)
	}
	for round := 0; round < 5; round++ {
		time.Sleep(time.Duration(400+150*round) * time.Millisecond)
		sk.Kill()
		time.Sleep(200 * time.Millisecond)
		sk.Start()
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	mu.Lock()
	ids := append([]int(nil), committed...)
	mu.Unlock()
	if len(ids) < 20 {
		t.Fatalf("only %d commits went through", len(ids))
	}
	t.Logf("%d synchronous commits across 5 kill -9 cycles", len(ids))

	// Every reported commit reaches a standby that streams from the
	// restarted safekeeper.
	standby := pgtest.StartStandby(t, primary, skConninfo(sk), pgtest.Options{WalSegSizeMB: 1})
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = fmt.Sprint(id)
	}
	q := fmt.Sprintf("SELECT count(*) FROM k WHERE id IN (%s)", strings.Join(strs, ","))
	standby.WaitForQuery(t, q, fmt.Sprint(len(ids)), 60*time.Second)

	// And the safekeeper's WAL is byte-identical to the primary's.
	generateSegments(t, primary, 3)
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 30*time.Second)
	compareSKFiles(t, primary, sk, 1<<20)
}
