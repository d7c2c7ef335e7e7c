package tests

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
)

// committers are clients committing on a primary in a loop, each
// statement its own transaction, recording the ids whose commit was
// acknowledged and the slowest acknowledgement.
type committers struct {
	mu      sync.Mutex
	acked   []int
	slowest time.Duration
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// startCommitters starts n clients running fmt.Sprintf(sqlFmt, id) with
// ids i, i+n, i+2n... A failed statement ends its client: it is reported
// as a test error when failOnError, else (the primary is being killed)
// it is simply not acknowledged. Stop is also run at cleanup.
func startCommitters(t testing.TB, primary *pgtest.Cluster, n int, sqlFmt string, timeout time.Duration, failOnError bool) *committers {
	c := &committers{stop: make(chan struct{})}
	for w := 0; w < n; w++ {
		c.wg.Add(1)
		go func(w int) {
			defer c.wg.Done()
			for id := w; ; id += n {
				select {
				case <-c.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				t0 := time.Now()
				err := execOn(ctx, primary, fmt.Sprintf(sqlFmt, id))
				d := time.Since(t0)
				cancel()
				if err != nil {
					if failOnError {
						select {
						case <-c.stop:
						default:
							t.Errorf("commit %d: %v", id, err)
						}
					}
					return
				}
				c.mu.Lock()
				c.acked = append(c.acked, id)
				c.slowest = max(c.slowest, d)
				c.mu.Unlock()
			}
		}(w)
	}
	t.Cleanup(c.Stop)
	return c
}

// Stop ends the clients and waits for them.
func (c *committers) Stop() { c.once.Do(func() { close(c.stop); c.wg.Wait() }) }

// Acked returns the acknowledged ids so far and the slowest commit.
func (c *committers) Acked() ([]int, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.acked...), c.slowest
}
