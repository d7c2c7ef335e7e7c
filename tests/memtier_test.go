package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// slowConsumer is a replication client that reads only when told to.
type slowConsumer struct {
	t    *testing.T
	conn *pgconn.PgConn
	pos  wal.LSN
	buf  []byte
}

func startSlowConsumer(t *testing.T, sk *SK, app string, start wal.LSN) *slowConsumer {
	t.Helper()
	cfg, err := pgconn.ParseConfig(sk.ConnString() + " application_name=" + app)
	if err != nil {
		t.Fatal(err)
	}
	// A small receive buffer keeps what the kernel holds for the client
	// (and so how far the server gets ahead of it) small.
	d := &net.Dialer{}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(64 << 10)
		}
		return c, err
	}
	conn, err := pgconn.ConnectConfig(ctxTimeout(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	conn.Frontend().Send(&pgproto3.Query{String: fmt.Sprintf("START_REPLICATION %s TIMELINE 1", start)})
	if err := conn.Frontend().Flush(); err != nil {
		t.Fatal(err)
	}
	return &slowConsumer{t: t, conn: conn, pos: start}
}

// readTo reads XLogData until the consumer holds WAL up to at least to.
func (c *slowConsumer) readTo(to wal.LSN) {
	c.t.Helper()
	ctx := ctxTimeout(c.t, 60*time.Second)
	for c.pos < to {
		msg, err := c.conn.ReceiveMessage(ctx)
		if err != nil {
			c.t.Fatalf("receive: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
		case *pgproto3.CopyData:
			if m.Data[0] != 'w' {
				continue
			}
			if s := wal.LSN(binary.BigEndian.Uint64(m.Data[1:])); s != c.pos {
				c.t.Fatalf("XLogData starts at %s, want %s (contiguous)", s, c.pos)
			}
			c.buf = append(c.buf, m.Data[25:]...)
			c.pos += wal.LSN(len(m.Data) - 25)
		case *pgproto3.ErrorResponse:
			c.t.Fatalf("server error: %s %s", m.Code, m.Message)
		default:
			c.t.Fatalf("unexpected message %T", msg)
		}
	}
}

// consumerStatus returns the status of the consumer named app.
func consumerStatus(t *testing.T, sk *SK, app string) (sent wal.LSN, tier string, ok bool) {
	t.Helper()
	for _, c := range sk.Status(t).Timelines[0].Consumers {
		if c.ApplicationName == app {
			lsn, err := wal.ParseLSN(c.SentLSN)
			if err != nil {
				t.Fatal(err)
			}
			return lsn, c.Tier, true
		}
	}
	return 0, "", false
}

// Issue 10, acceptance 2: with a 2 MB window, a consumer that stops
// reading falls out of it while the writer goes on; it continues
// byte-identically from the files and returns to memory once caught up.
// Meanwhile another consumer streams the same range byte-identically.
// Everything is asserted on positions and bytes, not on durations.
func TestMemoryTierSlowConsumer(t *testing.T) {
	const segSize = 1 << 20
	const window = 2 << 20
	primary := pgtest.StartPrimary(t, pgtest.Options{WalSegSizeMB: 1})
	sk := StartSK(t, primary.ConnString(), "--wal-memory-size", "2MB")
	start := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, start, 60*time.Second)

	slow := startSlowConsumer(t, sk, "slow", start)
	// A little WAL, read at once: the slow consumer is in the window.
	primary.Exec(t, "CREATE TABLE t(x text); INSERT INTO t SELECT repeat('a', 100) FROM generate_series(1, 100)")
	first := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, first, 60*time.Second)
	slow.readTo(first)
	pgtest.WaitFor(t, 30*time.Second, "the slow consumer served from memory", func() bool {
		_, tier, _ := consumerStatus(t, sk, "slow")
		return tier == "memory"
	})

	// The slow consumer stops reading. The writer goes on until it is far
	// past the window and past what the socket buffers hold for the
	// stalled consumer.
	var paused, end wal.LSN
	for i := 0; ; i++ {
		generateSegments(t, primary, 4)
		end = flushLSNOfPrimary(t, primary)
		sk.WaitFlush(t, end, 60*time.Second)
		sent, _, _ := consumerStatus(t, sk, "slow")
		if sent+8*window < end {
			paused = sent
			break
		}
		if i == 20 {
			t.Fatalf("the stalled consumer's sender got to %s, the end of WAL is %s", sent, end)
		}
	}
	// The writer was not held back: the durable end is well past the
	// stalled consumer (asserted above), and another consumer streams the
	// whole range, byte-identical to the primary's, while the slow one is
	// still stalled.
	want := primaryBytes(t, primary, 1, segSize, start, end)
	got, _ := streamRange(t, sk.ConnString(), start, end, 1)
	if !bytes.Equal(got, want) {
		t.Fatal("the other consumer's WAL differs from the primary's")
	}
	if sent, _, _ := consumerStatus(t, sk, "slow"); sent > paused+window {
		t.Fatalf("the stalled consumer moved from %s to %s while it read nothing", paused, sent)
	}

	// The slow consumer resumes: it is out of the window, its sender reads
	// the local files...
	tiers := map[string]bool{}
	for to := slow.pos + window/2; to < end-4*window; to += window / 2 {
		slow.readTo(to)
		if _, tier, _ := consumerStatus(t, sk, "slow"); tier != "" {
			tiers[tier] = true
		}
	}
	if !tiers["local"] {
		t.Fatalf("a consumer out of the window was served by %v, not the local files", tiers)
	}
	// The finished segments it streamed stay mapped for the next
	// consumer of the range, and the metric says how much.
	if v, ok := sk.metric(t, "safekeeper_wal_mapped_bytes{"); !ok || v < segSize {
		t.Errorf("safekeeper_wal_mapped_bytes = %v (exported %v) after a consumer streamed finished segments from the files, want at least one segment's %d", v, ok, segSize)
	}
	// ...catches up without a gap, byte-identical...
	slow.readTo(end)
	if !bytes.Equal(slow.buf[:end-start], want) {
		t.Fatal("the slow consumer's WAL differs from the primary's")
	}
	// ...and is served from memory again once it has caught up.
	primary.Exec(t, "INSERT INTO t SELECT repeat('b', 100) FROM generate_series(1, 100)")
	tail := flushLSNOfPrimary(t, primary)
	sk.WaitFlush(t, tail, 60*time.Second)
	slow.readTo(tail)
	pgtest.WaitFor(t, 30*time.Second, "the caught-up consumer served from memory", func() bool {
		_, tier, _ := consumerStatus(t, sk, "slow")
		return tier == "memory"
	})
	if !bytes.Equal(slow.buf[:tail-start], primaryBytes(t, primary, 1, segSize, start, tail)) {
		t.Fatal("the slow consumer's live tail differs from the primary's")
	}
	for _, tier := range []string{"memory", "local"} {
		if v := readBytes(t, sk, tier); v <= 0 {
			t.Errorf("safekeeper_wal_read_bytes_total{tier=%q} = %v", tier, v)
		}
	}
}

// readBytes returns safekeeper_wal_read_bytes_total for tier.
func readBytes(t *testing.T, sk *SK, tier string) float64 {
	t.Helper()
	st := sk.Status(t).Timelines[0]
	v, _ := sk.metric(t, fmt.Sprintf(`safekeeper_wal_read_bytes_total{tenant_id="%s",tier="%s",timeline_id="%s"}`, st.TenantID, tier, st.TimelineID))
	return v
}
